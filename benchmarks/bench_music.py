"""Speed of the music path, each number next to a peer measured in the same run.

1. Playback timing: our absolute-deadline scheduler vs a loop of relative sleeps (what a naive
   player does), both sending to a recording sink: lateness per note and total drift.
2. Codec: decoding tokens to events and writing the MIDI file, vs mido parsing that same file;
   and how many times faster than dense music needs (≈144 tokens per second of music).
3. Piano roll: one full frame with 200 vs 20,000 notes (our per-pitch index keeps the cost flat),
   next to the same frame plus the per-line scan of all notes an unindexed roll would need.

    python benchmarks/bench_music.py [--notes 500] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import mido  # noqa: E402

from engine.music import midi_codec as codec  # noqa: E402
from engine.music.player import Player  # noqa: E402
from engine.music.ports import RecordingSink  # noqa: E402

DENSE_TOKENS_PER_SECOND = 144.0  # music.md §3: a dense band piece


def random_piece(notes: int, seed: int = 0, step_ms: int = 8) -> str:
    rng = random.Random(seed)
    words = ["<start>"]
    for _ in range(notes):
        bin_short = rng.choice(["pi", "b", "v", "g", "p"])
        note = rng.randint(36, 84)
        words += [f"{bin_short}:{note:x}:{rng.randint(1, 11):x}", f"t{rng.randint(1, step_ms)}",
                  f"{bin_short}:{note:x}:0", f"t{rng.randint(1, step_ms)}"]
    return " ".join(words + ["<end>"])


# --------------------------------------------------------------------------- 1. timing


def bench_timing(notes: int) -> None:
    events = [codec.NoteEvent(i * 10.0, 7, 60 + i % 12, 90) for i in range(notes)]  # one per 10 ms
    sink = RecordingSink()
    with Player(sink, prebuffer_ms=0) as player:
        player.load([(e.time_ms, (0x97, e.note, e.velocity)) for e in events], end_ms=events[-1].time_ms)
        start = time.monotonic()
        player.play()
        player.wait()
    ours = [t - start - e.time_ms / 1000 for (t, m), e in zip([s for s in sink.sent if s[1][0] == 0x97], events)]

    naive_sent: list[float] = []
    start = time.monotonic()
    for index in range(len(events)):
        if index:
            time.sleep(0.010)  # the gap to the previous note
        naive_sent.append(time.monotonic())
    naive = [t - start - e.time_ms / 1000 for t, e in zip(naive_sent, events)]

    def ms(values: list[float]) -> str:
        return f"mean {1000 * statistics.fmean(values):6.2f} ms, max {1000 * max(values):6.2f} ms, end drift {1000 * values[-1]:6.2f} ms"

    print(f"timing, {notes} notes 10 ms apart:")
    print(f"  deadline scheduler : {ms(ours)}")
    print(f"  relative sleeps    : {ms(naive)}")
    print(f"  drift ratio (sleeps / ours) = {abs(naive[-1]) / max(abs(ours[-1]), 1e-4):.1f}×")


# --------------------------------------------------------------------------- 2. codec


def bench_codec(rounds: int) -> None:
    text = random_piece(5000)
    tokens = len(text.split())
    data = io.BytesIO()
    codec.decode_tokens(text).to_midi().save(file=data)
    blob = data.getvalue()
    decode_times, parse_times, encode_times = [], [], []
    for _ in range(rounds):
        t0 = time.perf_counter()
        codec.decode_tokens(text).to_midi()
        t1 = time.perf_counter()
        mid = mido.MidiFile(file=io.BytesIO(blob))
        t2 = time.perf_counter()
        codec.encode_midi(mid)
        t3 = time.perf_counter()
        decode_times.append(t1 - t0)
        parse_times.append(t2 - t1)
        encode_times.append(t3 - t2)
    decode, parse, encode = (statistics.median(x) for x in (decode_times, parse_times, encode_times))
    print(f"codec, {tokens} tokens (median of {rounds}):")
    print(f"  tokens → events → MidiFile : {1000 * decode:7.1f} ms ({tokens / decode:,.0f} tok/s, "
          f"{tokens / decode / DENSE_TOKENS_PER_SECOND:,.0f}× what dense music needs live)")
    print(f"  mido parses the same file  : {1000 * parse:7.1f} ms   ratio decode/parse = {decode / parse:.2f}")
    print(f"  MidiFile → tokens (encode) : {1000 * encode:7.1f} ms   ratio encode/parse = {encode / parse:.2f}")


# --------------------------------------------------------------------------- 3. piano roll


def bench_piano_roll(rounds: int) -> None:
    from textual.app import App, ComposeResult

    from tui.widgets.piano_roll import PianoRoll

    class Host(App):
        def compose(self) -> ComposeResult:
            yield PianoRoll()

    def naive_frame(roll: PianoRoll) -> None:
        """Our drawing plus, per line, the scan of every note that an unindexed roll would do."""
        everything = [(p, n) for p in range(128) for n in roll._notes[p]]
        span = (roll.view_start_ms, roll.view_start_ms + (roll.size.width - 4) * roll.ms_per_cell)
        for y in range(roll.size.height):
            pitches = set(roll.half_line_pitches(2 * y)) | set(roll.half_line_pitches(2 * y + 1))
            for pitch, note in everything:
                if pitch in pitches and note.start < span[1] and (note.end or note.start) > span[0]:
                    pass
            roll.render_line(y)

    async def run() -> None:
        app = Host()
        async with app.run_test(size=(160, 40)) as pilot:
            roll = app.query_one(PianoRoll)
            results = {}
            for count in (200, 20_000):
                roll.clear()
                result = codec.decode_tokens(random_piece(count, seed=count, step_ms=3))
                roll.add_events(result.events)
                roll.set_playhead(result.end_ms / 2)
                await pilot.pause()
                ours, naive = [], []
                for _ in range(rounds):
                    t0 = time.perf_counter()
                    for y in range(roll.size.height):
                        roll.render_line(y)
                    t1 = time.perf_counter()
                    naive_frame(roll)
                    t2 = time.perf_counter()
                    ours.append(t1 - t0)
                    naive.append(t2 - t1)
                results[count] = (statistics.median(ours), statistics.median(naive))
            print(f"piano roll, 160×40 frame (median of {rounds}):")
            for count, (ours, naive) in results.items():
                print(f"  {count:6,} notes: ours {1000 * ours:6.2f} ms, naive scan {1000 * naive:7.2f} ms, "
                      f"naive/ours {naive / ours:5.1f}×")
            print(f"  ours 20,000 / 200 notes = {results[20_000][0] / results[200][0]:.2f}× (flat means indexed)")

    asyncio.run(run())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--notes", type=int, default=500, help="notes in the timing test (10 ms apart)")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    bench_timing(args.notes)
    bench_codec(args.rounds)
    bench_piano_roll(args.rounds)


if __name__ == "__main__":
    main()
