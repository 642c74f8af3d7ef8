"""Decode and prefill speed of the CUDA backend, next to the rwkv pip package and the bound.

For each size (random weights with the released shapes, engine.synthetic): our backend and
the ``rwkv`` pip package (RWKV_V7_ON=1, RWKV_CUDA_ON=1, strategy "cuda fp16") measured in the
same process, plus the memory-bandwidth bound for batch-1 decoding = measured device copy
bandwidth ÷ fp16 bytes of every weight except the embedding (which costs one row per token).

Decode is greedy (argmax read back every token, as generation does), batch 1, from the state
after the prompt; prefill is one prompt through ``Model.forward`` (256-token chunks, head on
the last token) against the pip package's whole-prompt forward. Medians of repeated runs after
warm-up. Prints a markdown table with the device and driver; ``--output`` also writes it to a
file and ``--jsonl`` appends each size's raw numbers as soon as they are measured.

    python benchmarks/bench_cuda.py --sizes 0.1b,1.5b,7.2b --output cuda.md
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from engine import build_model  # noqa: E402
from engine.synthetic import OFFICIAL_SHAPES, official_shape_state_dict, save_checkpoint  # noqa: E402

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}
TARGETS = (
    "Targets (issue 3, H100): decode ≥ 2× pip for 0.1B and 1.5B, ≥ 1.4× for 7.2B; 7.2B decode ≥ 80% "
    "of the bound; 0.1B decode ≥ 2,000 tok/s; 1.5B prefill ≥ 15,000 tok/s."
)


def device_description() -> dict[str, str]:
    props = torch.cuda.get_device_properties(0)
    driver = "unknown"
    try:
        driver = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=30,
        ).stdout.strip().splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        pass
    return {
        "device": props.name, "driver": driver, "cuda": str(torch.version.cuda), "torch": torch.__version__,
        "sms": str(props.multi_processor_count), "memory_gib": f"{props.total_memory / 2**30:.0f}",
    }


def copy_bandwidth(gib: float = 2.0, repeats: int = 20) -> float:
    """Device-to-device copy rate in bytes/s, counting bytes read plus bytes written."""
    n = int(gib * 2**30) // 4
    src = torch.randn(n, device="cuda")
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        dst.copy_(src)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1000)
    del src, dst
    torch.cuda.empty_cache()
    return 2 * n * 4 / statistics.median(times)


def fp16_weight_bytes(state_dict: dict[str, torch.Tensor]) -> int:
    return 2 * sum(t.numel() for name, t in state_dict.items() if name != "emb.weight")


def _prompt(length: int, seed: int) -> list[int]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(1, 65530, (length,), generator=gen).tolist()


def _median_time(run, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        start = time.perf_counter()
        run()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_ours(state_dict, dtype, prompt, decode_tokens, repeats):
    model = build_model(state_dict, device="cuda", dtype=dtype)
    model.forward(prompt[:256])  # build, warm-up, cuBLAS handles
    result = {}
    logits_box = {}

    def prefill():
        logits_box["logits"], logits_box["state"] = model.forward(prompt)

    result["prefill_s"] = _median_time(prefill, repeats)
    logits, state = logits_box["logits"], logits_box["state"]
    result["prompt_logits"] = logits.float().cpu()
    token = int(logits.argmax())
    for _ in range(8):  # the first decode also captures the CUDA graph
        logits, state = model.forward([token], state)
        token = int(logits.argmax())
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(decode_tokens):
            logits, state = model.forward([token], state)
            token = int(logits.argmax())
        rates.append(decode_tokens / (time.perf_counter() - start))
    result["decode_tok_s"] = statistics.median(rates)
    result["kernels"] = model.info.kernels
    del model, state, logits
    gc.collect()
    torch.cuda.empty_cache()
    return result


def bench_pip(path: Path, prompt, decode_tokens, repeats):
    os.environ["RWKV_V7_ON"] = "1"  # read once, when rwkv.model is first imported
    os.environ["RWKV_CUDA_ON"] = "1"
    from rwkv.model import RWKV

    model = RWKV(model=str(path)[:-4], strategy="cuda fp16")
    model.forward(prompt[:256], None)
    box = {}

    def prefill():
        box["logits"], box["state"] = model.forward(prompt, None)

    result = {"prefill_s": _median_time(prefill, repeats)}
    logits, state = box["logits"], box["state"]
    result["prompt_logits"] = logits.float().cpu()
    token = int(logits.argmax())
    for _ in range(8):
        logits, state = model.forward([token], state)
        token = int(logits.argmax())
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(decode_tokens):
            logits, state = model.forward([token], state)
            token = int(logits.argmax())
        rates.append(decode_tokens / (time.perf_counter() - start))
    result["decode_tok_s"] = statistics.median(rates)
    del model, state, logits
    gc.collect()
    torch.cuda.empty_cache()
    return result


def bench_size(size: str, args, bandwidth: float) -> dict:
    print(f"[{size}] generating random weights", flush=True)
    state_dict = official_shape_state_dict(size, seed=0)
    prompt = _prompt(args.prefill_tokens, seed=1)
    row: dict = {"size": size, "dtype": args.dtype, "prefill_tokens": len(prompt)}
    weight_bytes = fp16_weight_bytes(state_dict)
    row["bound_tok_s"] = bandwidth / weight_bytes
    row["weight_gb"] = weight_bytes / 1e9
    decode_tokens = args.decode_tokens if size != "7.2b" else max(32, args.decode_tokens // 2)

    print(f"[{size}] ours", flush=True)
    try:
        ours = bench_ours(state_dict, args.dtype, prompt, decode_tokens, args.repeats)
        row.update(ours_decode=ours["decode_tok_s"], ours_prefill=len(prompt) / ours["prefill_s"],
                   kernels=ours["kernels"])
    except Exception as exc:  # report and go on with the other engine / sizes
        traceback.print_exc()
        row["ours_error"] = str(exc).splitlines()[0][:200]
        ours = None
    if not args.no_pip:
        print(f"[{size}] rwkv pip package", flush=True)
        try:
            with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
                path = save_checkpoint(state_dict, Path(tmp) / f"random-{size}.pth")
                del state_dict
                gc.collect()
                pip = bench_pip(path, prompt, decode_tokens, args.repeats)
            row.update(pip_decode=pip["decode_tok_s"], pip_prefill=len(prompt) / pip["prefill_s"])
            if ours is not None:
                diff = (ours["prompt_logits"] - pip["prompt_logits"]).abs().max()
                row["max_diff_vs_pip"] = (diff / pip["prompt_logits"].std()).item()
        except Exception as exc:
            traceback.print_exc()
            row["pip_error"] = str(exc).splitlines()[0][:200]
    return row


def _fmt(value, spec=",.0f") -> str:
    return "—" if value is None else format(value, spec)


def markdown(rows: list[dict], info: dict[str, str], bandwidth: float) -> str:
    lines = [
        f"### CUDA backend, {rows[0]['dtype'] if rows else ''} — {info['device']}",
        "",
        f"Driver {info['driver']}, CUDA {info['cuda']}, torch {info['torch']}, {info['sms']} SMs, "
        f"{info['memory_gib']} GiB; measured copy bandwidth {bandwidth / 1e12:.2f} TB/s; "
        f"{datetime.date.today().isoformat()}. Random weights with the released shapes; batch 1.",
        "",
        "| shape | decode tok/s (ours) | decode tok/s (pip) | ours ÷ pip | bound tok/s | % of bound "
        "| prefill tok/s (ours) | prefill tok/s (pip) | ours ÷ pip | max Δ/std vs pip |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        od, pd, oprf, pprf = (r.get(k) for k in ("ours_decode", "pip_decode", "ours_prefill", "pip_prefill"))
        lines.append(
            f"| {r['size']} | {_fmt(od)} | {_fmt(pd)} | {_fmt(od / pd if od and pd else None, '.2f')}× "
            f"| {_fmt(r['bound_tok_s'])} | {_fmt(100 * od / r['bound_tok_s'] if od else None, '.0f')}% "
            f"| {_fmt(oprf)} | {_fmt(pprf)} | {_fmt(oprf / pprf if oprf and pprf else None, '.2f')}× "
            f"| {_fmt(r.get('max_diff_vs_pip'), '.1e')} |"
        )
    errors = [f"- {r['size']}: {k}: {r[k]}" for r in rows for k in ("ours_error", "pip_error") if k in r]
    if errors:
        lines += ["", "Errors:", *errors]
    lines += ["", TARGETS]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="0.1b,1.5b,7.2b", help="comma-separated: " + ",".join(OFFICIAL_SHAPES))
    parser.add_argument("--dtype", default="fp16", choices=sorted(DTYPES))
    parser.add_argument("--decode-tokens", type=int, default=128)
    parser.add_argument("--prefill-tokens", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-pip", action="store_true", help="skip the rwkv pip package")
    parser.add_argument("--workdir", default=None, help="where the pip package's checkpoint is written")
    parser.add_argument("--output", type=Path, help="also write the markdown table here")
    parser.add_argument("--jsonl", type=Path, help="append each size's raw numbers here")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("bench_cuda: no CUDA GPU visible to torch", file=sys.stderr)
        return 2
    sizes = [s.strip().lower() for s in args.sizes.split(",") if s.strip()]
    unknown = [s for s in sizes if s not in OFFICIAL_SHAPES]
    if unknown:
        parser.error(f"unknown sizes {unknown}")

    info = device_description()
    bandwidth = copy_bandwidth()
    print(f"{info['device']}, driver {info['driver']}: copy bandwidth {bandwidth / 1e12:.2f} TB/s", flush=True)
    rows = []
    for size in sizes:
        row = bench_size(size, args, bandwidth)
        rows.append(row)
        if args.jsonl:
            with args.jsonl.open("a") as f:
                f.write(json.dumps({**info, "bandwidth": bandwidth, **row}) + "\n")
        print(json.dumps(row), flush=True)
    table = markdown(rows, info, bandwidth)
    print(table)
    if args.output:
        args.output.write_text(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
