"""CPU speed of our engine next to the `rwkv` pip package, measured in the same run.

Random weights with the 0.1B shape (12 layers, n_embd 768, vocab 65536), stored in bf16 like
releases. Each round times every engine once, alternating, and the report takes the median
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
import time
from pathlib import Path
from typing import Callable

os.environ.setdefault("RWKV_V7_ON", "1")
os.environ.setdefault("RWKV_JIT_ON", "1")
os.environ["RWKV_CUDA_ON"] = "0"

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from engine import load_model  # noqa: E402
from engine.backends.cpu_native import kernel_status  # noqa: E402
from engine.synthetic import official_shape_state_dict, save_checkpoint  # noqa: E402


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


class Contender:
    """Something that can decode and prefill: our engine in one mode, or the pip package."""

    def __init__(self, name: str, forward: Callable[[list[int], object], tuple[torch.Tensor, object]]) -> None:
        self.name = name
        self.forward = forward
        self.decode: list[float] = []
        self.prefill: list[float] = []

    def time_decode(self, tokens: list[int]) -> None:
        _, state = self.forward(tokens[:4], None)
        for t in tokens[4:8]:  # warm-up: page in weights, build caches
            _, state = self.forward([t], state)
        start = time.perf_counter()
        for t in tokens[8:]:
            _, state = self.forward([t], state)
        self.decode.append((len(tokens) - 8) / (time.perf_counter() - start))

    def time_prefill(self, tokens: list[int]) -> None:
        start = time.perf_counter()
        self.forward(tokens, None)
        self.prefill.append(len(tokens) / (time.perf_counter() - start))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="0.1b")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--decode-tokens", type=int, default=32)
    parser.add_argument("--prefill-tokens", type=int, default=256)
    parser.add_argument("--pip-bf16", action="store_true", help="also time the pip package's 'cpu bf16' strategy (slow)")
    args = parser.parse_args()

    from rwkv.model import RWKV  # the peer; imported after the RWKV_* switches are set

    tmp = Path(tempfile.mkdtemp(prefix="rwkv-bench-"))
    path = save_checkpoint(official_shape_state_dict(args.size), tmp / f"random-{args.size}.pth")
    gen = torch.Generator().manual_seed(0)
    decode_tokens = torch.randint(0, 65536, (args.decode_tokens + 8,), generator=gen).tolist()
    prefill_tokens = torch.randint(0, 65536, (args.prefill_tokens,), generator=gen).tolist()

    ours_default = load_model(path, device="cpu")  # dtype=None: bf16 weights, fp32 state and arithmetic
    ours_fp32 = load_model(path, device="cpu", dtype="fp32")
    pip_fp32 = RWKV(model=str(path)[:-4], strategy="cpu fp32")
    contenders = [
        Contender("rwkv pip, cpu fp32", pip_fp32.forward),
        Contender(f"ours, default ({ours_default.info.dtype} weights)", ours_default.forward),
        Contender("ours, fp32", ours_fp32.forward),
    ]
    if args.pip_bf16:
        pip_bf16 = RWKV(model=str(path)[:-4], strategy="cpu bf16")
        contenders.insert(1, Contender("rwkv pip, cpu bf16", pip_bf16.forward))

    # Accuracy of the default mode against the fp32 reference, on the prefill prompt.
    reference, _ = pip_fp32.forward(prefill_tokens, None)
    ours_logits, _ = ours_default.forward(prefill_tokens, None)
    ours32_logits, _ = ours_fp32.forward(prefill_tokens, None)
    rel_default = ((ours_logits - reference.float()).abs().max() / reference.float().std()).item()
    abs_fp32 = (ours32_logits - reference.float()).abs().max().item()

    for round_index in range(args.rounds):
        for c in contenders:
            c.time_decode(decode_tokens)
            c.time_prefill(prefill_tokens)
        print(f"round {round_index + 1}/{args.rounds}: " + ", ".join(f"{c.name} {c.decode[-1]:.1f}" for c in contenders), file=sys.stderr)

    pip = contenders[0]
    fastest_pip_decode = max(statistics.median(c.decode) for c in contenders if c.name.startswith("rwkv pip"))
    print(f"\nCPU: {cpu_name()} · {os.cpu_count()} cores · torch {torch.__version__} · {torch.get_num_threads()} threads")
    print(f"Model: random weights, {args.size} shape ({ours_fp32.info.n_layer} layers, n_embd {ours_fp32.info.n_embd}, vocab {ours_fp32.info.vocab}), bf16 file")
    print(f"Our CPU kernels: {kernel_status()}")
    print(f"Median of {args.rounds} interleaved rounds; decode = batch 1, one token per call; prefill = {args.prefill_tokens} tokens in one call.\n")
    print("| engine | decode tok/s | × pip fp32 | prefill tok/s | × pip fp32 |")
    print("|---|---:|---:|---:|---:|")
    for c in contenders:
        d, p = statistics.median(c.decode), statistics.median(c.prefill)
        print(f"| {c.name} | {d:.1f} | {d / statistics.median(pip.decode):.2f} | {p:.1f} | {p / statistics.median(pip.prefill):.2f} |")
    default = contenders[-2]
    print(f"\nDefault mode decode vs the pip package's fastest CPU strategy: {statistics.median(default.decode) / fastest_pip_decode:.2f}×")
    print(f"Default-mode logits vs pip fp32: max|Δ|/std = {rel_default:.2e} (bf16 tolerance 0.05); fp32 mode max|Δ| = {abs_fp32:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
