"""Cost of the state inspector's numbers relative to the decode step they accompany.

The inspector wants a per-token "how much did the state move" value and, a few times a
second, the layer × head norms. Both must be cheap next to a forward pass, or generation
slows down. This measures, in one run on one machine:

* decode: ``model.forward([token], state)`` per token (the peer),
* tracker: ``ChangeTracker.update(state)`` per token,
* stats: ``state_stats(state)`` (what the heat map refresh costs),

and prints each as a ratio to the decode step (medians of per-token timings). Usage::

    python benchmarks/bench_state_stats.py --layers 12 --embd 768 --vocab 65536 --tokens 64
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.model_shape import add_model_arguments  # noqa: E402

import torch  # noqa: E402

from engine import build_model  # noqa: E402
from engine.state_stats import ChangeTracker, state_stats  # noqa: E402
from engine.synthetic import random_state_dict  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_arguments(parser, tokens=48)
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

    # Each token is timed in three parts inside one loop, so a busy machine slows the peer and
    # the measured work alike and the ratios stay meaningful.
    forward_times: list[float] = []
    tracker_times: list[float] = []
    stats_times: list[float] = []
    for repeat in range(args.repeats + 1):
        s = state
        tracker = ChangeTracker()
        for token in tokens:
            sync()
            t0 = time.perf_counter()
            _, s = model.forward([token], s)
            sync()
            t1 = time.perf_counter()
            tracker.update(s)
            sync()
            t2 = time.perf_counter()
            state_stats(s)
            sync()
            t3 = time.perf_counter()
            if repeat:  # the first pass warms caches and kernels
                forward_times.append(t1 - t0)
                tracker_times.append(t2 - t1)
                stats_times.append(t3 - t2)

    forward = statistics.median(forward_times)
    tracker_cost = statistics.median(tracker_times)
    stats_cost = statistics.median(stats_times)
    print(f"decode step (peer)   {forward * 1e3:9.3f} ms/token   1.000")
    print(f"ChangeTracker.update {tracker_cost * 1e3:9.3f} ms/token   {tracker_cost / forward:.4f} of a decode step")
    print(f"state_stats          {stats_cost * 1e3:9.3f} ms/call    {stats_cost / forward:.4f} of a decode step")
    print(f"(medians over {len(forward_times)} tokens; the tracker runs every token, state_stats "
          "only when the inspector refreshes, a few times a second)")


if __name__ == "__main__":
    main()
