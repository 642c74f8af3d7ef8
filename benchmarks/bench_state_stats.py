"""Cost of the state inspector's numbers relative to the decode step they accompany.

The inspector wants a per-token "how much did the state move" value and, a few times a
second, the layer × head norms. Both must be cheap next to a forward pass, or generation
slows down. This measures, in one run on one machine:

* decode: ``model.forward([token], state)`` per token (the peer),
* tracker: ``ChangeTracker.update(state)`` per token,
* stats: ``state_stats(state)`` (what the heat map refresh costs),

and prints each as a ratio to the decode step. Usage::

    python benchmarks/bench_state_stats.py --layers 12 --embd 768 --vocab 65536 --tokens 64
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from engine import build_model  # noqa: E402
from engine.state_stats import ChangeTracker, state_stats  # noqa: E402
from engine.synthetic import random_state_dict  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--embd", type=int, default=768)
    parser.add_argument("--vocab", type=int, default=65536)
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default=None)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    model = build_model(
        random_state_dict(args.layers, args.embd, args.vocab, seed=1, dtype=torch.bfloat16),
        device=args.device, dtype=args.dtype, path=f"random-L{args.layers}-C{args.embd}",
    )
    sync = torch.cuda.synchronize if model.info.device.startswith("cuda") else (lambda: None)
    print(f"model: {args.layers} layers × {args.embd}, vocab {args.vocab}, {model.info.dtype} on "
          f"{model.info.device}; state {model.info.state_bytes / 2**20:.2f} MiB")

    _, state = model.forward([1, 2, 3, 4, 5, 6, 7, 8], None)
    tokens = [(i * 7919) % args.vocab for i in range(args.tokens)]

    def decode(track: bool, with_stats: bool) -> float:
        s = state
        tracker = ChangeTracker()
        sync()
        start = time.perf_counter()
        for token in tokens:
            _, s = model.forward([token], s)
            if track:
                tracker.update(s)
            if with_stats:
                state_stats(s)
        sync()
        return (time.perf_counter() - start) / len(tokens)

    decode(False, False)  # warm-up
    plain, tracked, full = [], [], []
    for _ in range(args.repeats):
        plain.append(decode(False, False))
        tracked.append(decode(True, False))
        full.append(decode(True, True))

    states = []
    s = state
    for token in tokens[:16]:
        _, s = model.forward([token], s)
        states.append(s)

    def per_call(fn) -> float:
        best = []
        for _ in range(args.repeats):
            sync()
            start = time.perf_counter()
            fn()
            sync()
            best.append((time.perf_counter() - start) / len(states))
        return min(best)

    tracker = ChangeTracker()
    tracker_cost = per_call(lambda: [tracker.update(x) for x in states])
    stats_cost = per_call(lambda: [state_stats(x) for x in states])

    base = statistics.median(plain)
    print(f"decode step             {base * 1e3:8.3f} ms/token   (peer, 1.000)")
    print(f"decode + tracker        {statistics.median(tracked) * 1e3:8.3f} ms/token   "
          f"ratio {statistics.median(tracked) / base:.3f}")
    print(f"decode + tracker + stats{statistics.median(full) * 1e3:8.3f} ms/token   "
          f"ratio {statistics.median(full) / base:.3f}")
    print(f"tracker alone           {tracker_cost * 1e3:8.3f} ms/call    ratio {tracker_cost / base:.4f}")
    print(f"state_stats alone       {stats_cost * 1e3:8.3f} ms/call    ratio {stats_cost / base:.4f}")


if __name__ == "__main__":
    main()
