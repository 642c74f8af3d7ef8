"""What the state inspector's live numbers cost a reply: tokens/s with them ÷ tokens/s without.

The state pane, while shown, attaches the engine thread's inspector (``tui.inspector``) to the
running generation: per token a ``ChangeTracker`` update, and every 0.25 s a layer × head
summary. While the pane is hidden the hook only checks a flag. This runs the same reply (same
model, prompt and seed, hence the same tokens) three ways, alternating so that background load
hits all of them alike (each round in a rotated order), and reports the engine's own decode rate (medians):

* bare: no hook at all (the peer),
* hidden: the hook installed, the pane not shown,
* watching: the pane shown (per-token tracking and periodic summaries).

    python benchmarks/bench_inspector_overhead.py                       # 0.1B shape (12 x 768)
    python benchmarks/bench_inspector_overhead.py --layers 2 --embd 128 --vocab 256   # worst case

Aim: watching ÷ bare ≥ 0.95 (and hidden indistinguishable from bare).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.model_shape import add_model_arguments, tokenizer_for  # noqa: E402

PROMPT = "Tell me a long story about a lighthouse keeper."


class _StubWorker:
    conversation = None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_arguments(parser, tokens=48)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import engine
    from engine.synthetic import random_state_dict, save_checkpoint
    from tui.inspector import EngineInspector
    from tui.worker import STATS_INTERVAL

    with tempfile.TemporaryDirectory() as directory:
        path = save_checkpoint(
            random_state_dict(args.layers, args.embd, args.vocab, seed=11), Path(directory) / "bench.pth"
        )
        model = engine.load_model(path, device=args.device, dtype=args.dtype)
    tokenizer = engine.get_tokenizer(tokenizer_for(args.vocab))
    params = engine.SamplingParams(max_tokens=args.tokens, seed=5)
    print(f"model: {args.layers} layers × {args.embd}, vocab {args.vocab}, {model.info.dtype} on {model.info.device}; "
          f"state {model.info.state_bytes / 2**20:.2f} MiB; {args.tokens} tokens per reply")

    events: list[object] = []
    inspector = EngineInspector(_StubWorker(), events.append)  # type: ignore[arg-type]
    rates: dict[str, list[float]] = {"bare": [], "hidden": [], "watching": []}
    generated: dict[str, set[int]] = {name: set() for name in rates}
    modes = list(rates)
    for repeat in range(args.repeats + 1):
        # Each round starts with another mode, so no mode always runs first (or after the same one).
        for mode in modes[repeat % 3:] + modes[:repeat % 3]:
            conversation = engine.Conversation(model, tokenizer, params)
            generation = conversation.send(PROMPT)
            if mode != "bare":
                inspector.watching = mode == "watching"
                inspector.attach(generation, conversation.state)
            next_publish = time.perf_counter() + STATS_INTERVAL
            for _ in generation:
                if mode == "watching" and time.perf_counter() >= next_publish:
                    next_publish = time.perf_counter() + STATS_INTERVAL
                    inspector.publish()  # as the worker does, at its statistics rate
            assert generation.result is not None
            stats = generation.result.stats
            generated[mode].add(stats.generated_tokens)
            if repeat:  # the first round warms caches
                rates[mode].append(stats.tokens_per_second)
    bare = statistics.median(rates["bare"])
    for mode, values in rates.items():
        rate = statistics.median(values)
        print(f"{mode:9s} {rate:9.2f} tokens/s   {rate / bare:.3f} of bare   (tokens {sorted(generated[mode])})")
    print(f"(medians of {args.repeats} alternating runs; engine decode clock)")


if __name__ == "__main__":
    main()
