"""Music pane overhead: tokens/s of a MIDI piece written in the app ÷ tokens/s of the bare engine.

Both sides write the very same piece (same random-weight MIDI model, same seed and settings, so the
same tokens) and both read the engine's own decode clock (``MidiResult.stats``), so the ratio is
what the app costs the music thread: the merging outbox, the 15 Hz drain into the piano roll and
the token view, and live playback (to no port) competing for the GIL and the cores. Runs
alternate (bare, app, bare, app, …) and the medians are compared. The app runs headless
(Textual's test driver: layout and rendering, no terminal output).

    python benchmarks/bench_music_pane.py                        # 6 x 256 MIDI-vocab model, 600 tokens
    python benchmarks/bench_music_pane.py --layers 2 --embd 64 --tokens 800   # worst case: tiny model

Aim: ratio ≥ 0.9 (the pane also plays the music while it is written).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tui.openmp_setup import load_engine_with_passive_openmp  # noqa: E402

load_engine_with_passive_openmp()  # as the rwkv-tui entry point does, before torch loads


def make_model(layers: int, embd: int, directory: Path) -> Path:
    from engine.music.midi_vocab import VOCAB_SIZE
    from engine.synthetic import random_state_dict, save_checkpoint

    return save_checkpoint(random_state_dict(layers, embd, VOCAB_SIZE, seed=11),
                           directory / f"bench-midi-{layers}x{embd}.pth")


def settings(tokens: int, seed: int):  # noqa: ANN201 - MusicSettings
    from tui.music_settings import MusicSettings

    return MusicSettings().with_field("max_tokens", str(tokens)).with_field("seed", str(seed))


def bare_engine(path: Path, tokens: int, seed: int) -> tuple[float, int]:
    """The same piece on a plain thread (as the pane's music thread), with the app's GIL interval."""
    import engine
    from engine.music.generate import MidiGeneration
    from tui.app import GIL_SWITCH_INTERVAL

    model = engine.load_model(path, device="cpu", dtype="fp32")
    generation = MidiGeneration(model, settings(tokens, seed).midi_settings())
    previous = sys.getswitchinterval()
    sys.setswitchinterval(GIL_SWITCH_INTERVAL)
    try:
        thread = threading.Thread(target=generation.run)
        thread.start()
        thread.join()
    finally:
        sys.setswitchinterval(previous)
    result = generation.result
    assert result is not None
    return result.stats.tokens_per_second, len(result.tokens)


def in_app(path: Path, tokens: int, seed: int, config_dir: Path) -> tuple[float, int]:
    from tui.app import LaunchOptions, RwkvApp

    config = config_dir / "config.json"
    config.write_text(json.dumps({"music": {"settings": settings(tokens, seed).to_dict()}}))
    app = RwkvApp(LaunchOptions(music_model=str(path), device="cpu", dtype="fp32", use_demo_models=False,
                                config_path=config))
    out: dict[str, float] = {}

    async def drive() -> None:
        async with app.run_test(size=(120, 36)) as pilot:
            pane = app.music_pane
            while pane.model is None:
                await pilot.pause(0.05)
            await pilot.press("f3", "g")
            while pane.generating or pane.piece is None:
                await asyncio.sleep(0.25)  # not pilot.pause: it would make the app repaint and settle
            out["rate"] = pane.piece.tokens_per_second
            out["tokens"] = pane.piece.generated_tokens
            assert pane.roll.note_count == pane.piece.note_count
            await pilot.press("s")

    asyncio.run(drive())
    return out["rate"], int(out["tokens"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--embd", type=int, default=256)
    parser.add_argument("--tokens", type=int, default=600)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rwkv-bench-music-") as folder:
        directory = Path(folder)
        path = make_model(args.layers, args.embd, directory)
        bare: list[float] = []
        app: list[float] = []
        for run in range(args.runs):
            rate, count = bare_engine(path, args.tokens, args.seed)
            bare.append(rate)
            rate_app, count_app = in_app(path, args.tokens, args.seed, directory)
            app.append(rate_app)
            if count != count_app:
                raise SystemExit(f"the two sides wrote different pieces ({count} vs {count_app} tokens)")
            print(f"run {run + 1}: bare {bare[-1]:.1f} tok/s, app {app[-1]:.1f} tok/s ({count} tokens)", flush=True)
    ratio = statistics.median(app) / statistics.median(bare)
    print(f"model {args.layers}x{args.embd} (MIDI vocab), {args.tokens} tokens: "
          f"bare engine {statistics.median(bare):.1f} tok/s, music pane {statistics.median(app):.1f} tok/s, "
          f"ratio {ratio:.3f}")


if __name__ == "__main__":
    main()
