"""CPU speed of our engine next to the `rwkv` pip package, measured in the same run.

Random weights with the 0.1B shape (12 layers, n_embd 768, vocab 65536), stored in bf16 like
releases. Each contender runs in a process of its own (benchmarks/contender.py): ours set up
as the rwkv-tui entry point sets itself up, the peer with the environment you started this
script with. Each round times every engine once, alternating, and the report takes the median
round, so a busy machine slows every contender alike instead of skewing one ratio.

    python benchmarks/bench_cpu.py [--size 0.1b] [--rounds 5] [--decode-tokens 32] [--prefill-tokens 256]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402  (only to write the random checkpoint and draw tokens)

from benchmarks.contender import ContenderProcess, peer_environment  # noqa: E402
from engine.synthetic import official_shape_state_dict, save_checkpoint  # noqa: E402

# The pip package's own switches, for its process only: RWKV-7 support, TorchScript, no CUDA.
PIP_SWITCHES = {"RWKV_V7_ON": "1", "RWKV_JIT_ON": os.environ.get("RWKV_JIT_ON", "1"), "RWKV_CUDA_ON": "0"}


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="0.1b")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--decode-tokens", type=int, default=32)
    parser.add_argument("--prefill-tokens", type=int, default=256)
    parser.add_argument("--pip-bf16", action="store_true", help="also time the pip package's 'cpu bf16' strategy (slow)")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="rwkv-bench-"))
    path = save_checkpoint(official_shape_state_dict(args.size), tmp / f"random-{args.size}.pth")
    gen = torch.Generator().manual_seed(0)
    decode_tokens = torch.randint(0, 65536, (args.decode_tokens + 8,), generator=gen).tolist()
    prefill_tokens = torch.randint(0, 65536, (args.prefill_tokens,), generator=gen).tolist()

    ours_env = dict(os.environ)
    pip_env = peer_environment(**PIP_SWITCHES)
    contenders = [ContenderProcess("rwkv pip, cpu fp32", "pip-fp32", path, pip_env)]
    if args.pip_bf16:
        contenders.append(ContenderProcess("rwkv pip, cpu bf16", "pip-bf16", path, pip_env))
    ours_default = ContenderProcess("ours, default", "ours-default", path, ours_env)
    ours_default.name = f"ours, default ({ours_default.info['dtype']} weights)"
    ours_fp32 = ContenderProcess("ours, fp32", "ours-fp32", path, ours_env)
    contenders += [ours_default, ours_fp32]
    try:
        # Accuracy of the default mode against the fp32 reference, on the prefill prompt.
        reference, ours_logits, ours32_logits = (
            np.load(c.save_logits(prefill_tokens, tmp / f"logits-{i}.npy"))
            for i, c in enumerate((contenders[0], ours_default, ours_fp32))
        )
        rel_default = float(np.abs(ours_logits - reference).max() / reference.std())
        abs_fp32 = float(np.abs(ours32_logits - reference).max())

        for round_index in range(args.rounds):
            for c in contenders:
                c.time_decode(decode_tokens)
                c.time_prefill(prefill_tokens)
            print(f"round {round_index + 1}/{args.rounds}: " + ", ".join(f"{c.name} {c.decode[-1]:.1f}" for c in contenders), file=sys.stderr)
    finally:
        for c in contenders:
            c.close()

    pip = contenders[0]
    fastest_pip_decode = max(statistics.median(c.decode) for c in contenders if c.name.startswith("rwkv pip"))
    info = ours_fp32.info
    print(f"\nCPU: {cpu_name()} · {os.cpu_count()} cores · torch {info['torch']} · {info['threads']} threads")
    print(f"Model: random weights, {args.size} shape ({info['n_layer']} layers, n_embd {info['n_embd']}, vocab {info['vocab']}), bf16 file")
    print(f"Our CPU kernels: {info['kernels']}")
    wait_policy = os.environ.get("OMP_WAIT_POLICY", "unset")
    print(f"Processes: one per contender; ours as the rwkv-tui entry point (passive OpenMP), the pip package with your environment (OMP_WAIT_POLICY {wait_policy}).")
    print(f"Median of {args.rounds} interleaved rounds; decode = batch 1, one token per call; prefill = {args.prefill_tokens} tokens in one call.\n")
    print("| engine | decode tok/s | × pip fp32 | prefill tok/s | × pip fp32 |")
    print("|---|---:|---:|---:|---:|")
    for c in contenders:
        d, p = statistics.median(c.decode), statistics.median(c.prefill)
        print(f"| {c.name} | {d:.1f} | {d / statistics.median(pip.decode):.2f} | {p:.1f} | {p / statistics.median(pip.prefill):.2f} |")
    print(f"\nDefault mode decode vs the pip package's fastest CPU strategy: {statistics.median(ours_default.decode) / fastest_pip_decode:.2f}×")
    print(f"Default-mode logits vs pip fp32: max|Δ|/std = {rel_default:.2e} (bf16 tolerance 0.05); fp32 mode max|Δ| = {abs_fp32:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
