"""The acceptance gates of the demo models, run through the engine exactly as the app runs them.

* chat: greedy replies to the 200 held-out questions (tools.train.chat_data); a reply counts
  only if it equals the computed answer exactly. Pass: ≥ 80 %.
* abc: 100 tunes sampled from BOS with the music pane's default ABC settings
  (engine.music.generate.AbcGeneration), converted by the app's abc2midi bridge; a tune counts
  if a MIDI file of ≥ 8 bars comes out. Pass: ≥ 90.
* midi: 100 pieces sampled with the music pane's default MIDI settings (MidiGeneration: the
  music demo's penalties and length control), decoded by engine.music.midi_codec; a piece
  counts if its notes span ≥ 10 s and it has no invalid token. Pass: ≥ 90.

Samples are seeded (sample i uses seed + i), so a gate run is reproducible.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import engine
from engine.demo_models import demo_model_path
from engine.sampling import SamplingParams

CHAT_THRESHOLD = 0.80
ABC_THRESHOLD = 0.90
MIDI_THRESHOLD = 0.90
ABC_MIN_BARS = 8
MIDI_MIN_SECONDS = 10.0


@dataclass
class GateResult:
    kind: str
    n: int
    passed_items: int
    threshold: float
    seconds: float
    model: str
    failures: list[dict[str, object]] = field(default_factory=list)
    stats: dict[str, object] = field(default_factory=dict)

    @property
    def score(self) -> float:
        return self.passed_items / self.n if self.n else 0.0

    @property
    def passed(self) -> bool:
        return self.score >= self.threshold

    def report(self, show: int = 5) -> str:
        lines = [
            f"{self.kind} gate: {self.passed_items}/{self.n} = {self.score:.1%} "
            f"(threshold {self.threshold:.0%}) -> {'PASS' if self.passed else 'FAIL'} in {self.seconds:.1f}s",
        ]
        if self.stats:
            lines.append("  " + json.dumps(self.stats))
        for failure in self.failures[:show]:
            lines.append("  failed: " + json.dumps(failure, ensure_ascii=False)[:400])
        return "\n".join(lines)

    def to_json(self) -> dict[str, object]:
        return {
            "kind": self.kind, "n": self.n, "passed_items": self.passed_items, "score": self.score,
            "threshold": self.threshold, "passed": self.passed, "seconds": round(self.seconds, 1),
            "model": self.model, "stats": self.stats, "failures": self.failures[:50],
        }


def run_gate(kind: str, model_path: Path | None = None, n: int | None = None, seed: int = 0) -> GateResult:
    path = Path(model_path) if model_path else demo_model_path(kind)
    if kind == "chat":
        return chat_gate(path, n or 200)
    if kind == "abc":
        return abc_gate(path, n or 100, seed)
    if kind == "midi":
        return midi_gate(path, n or 100, seed)
    raise ValueError(f"unknown gate {kind!r}")


# --------------------------------------------------------------------------- chat


GREEDY = SamplingParams(temperature=1.0, top_p=0.0, top_k=0, presence_penalty=0.0,
                        frequency_penalty=0.0, max_tokens=200, seed=0)


def chat_gate(model_path: Path, n: int = 200, dtype: str | None = None) -> GateResult:
    """``dtype``: the weight format to run the model in (default: the CPU default)."""
    from tools.train.chat_data import split

    started = time.monotonic()
    model = engine.load_model(model_path, device="cpu", dtype=dtype)
    tokenizer = engine.get_tokenizer("bytes")
    questions = split().heldout[:n]
    correct = 0
    failures = []
    by_intent: dict[str, list[int]] = {}
    for q in questions:
        conversation = engine.Conversation(model, tokenizer, GREEDY)
        generation = conversation.send(q.text)
        for _ in generation:
            pass
        reply = conversation.turns[-1].reply.strip()
        ok = reply == q.answer
        correct += ok
        tally = by_intent.setdefault(q.intent, [0, 0])
        tally[0] += ok
        tally[1] += 1
        if not ok:
            failures.append({"question": q.text, "expected": q.answer, "got": reply})
    return GateResult(
        "chat", len(questions), correct, CHAT_THRESHOLD, time.monotonic() - started, str(model_path),
        failures, {"by_intent": {k: f"{v[0]}/{v[1]}" for k, v in sorted(by_intent.items())}},
    )


# --------------------------------------------------------------------------- abc


def sample_abc(model_path: Path, n: int, seed: int) -> list[str]:
    """``n`` tunes from BOS alone with the music pane's default ABC settings (sample i: seed + i)."""
    from engine.music.generate import AbcGeneration, AbcSettings

    model = engine.load_model(model_path, device="cpu")
    return [AbcGeneration(model, "", AbcSettings(seed=seed + i)).run().generated for i in range(n)]


def midi_bars(midi: "mido.MidiFile") -> float:  # noqa: F821 - mido imported lazily
    """Bars covered by the notes of a MIDI file, measured in its first time signature."""
    numerator, denominator = 4, 4
    last_tick = 0
    found_signature = False
    for track in midi.tracks:
        tick = 0
        for msg in track:
            tick += msg.time
            if msg.type == "time_signature" and not found_signature:
                numerator, denominator = msg.numerator, msg.denominator
                found_signature = True
            if msg.type in ("note_on", "note_off"):
                last_tick = max(last_tick, tick)
    bar_ticks = midi.ticks_per_beat * 4 * numerator / denominator
    return last_tick / bar_ticks


def abc_bars(text: str) -> float:
    """Bars of the MIDI file abc2midi makes of a generated tune (0 if it makes none)."""
    from engine.music.abc import abc_to_midi
    from engine.music.errors import AbcError

    try:
        return midi_bars(abc_to_midi(text).midi)
    except AbcError:
        return 0.0


def abc_gate(model_path: Path, n: int = 100, seed: int = 0) -> GateResult:
    started = time.monotonic()
    texts = sample_abc(model_path, n, seed)
    good = 0
    failures = []
    bars_seen = []
    for i, text in enumerate(texts):
        bars = abc_bars(text)
        bars_seen.append(bars)
        if math.floor(bars + 1e-6) >= ABC_MIN_BARS:
            good += 1
        else:
            failures.append({"sample": i, "bars": round(bars, 2), "text": text[:300]})
    bars_sorted = sorted(bars_seen)
    stats = {"median_bars": round(bars_sorted[len(bars_sorted) // 2], 1) if bars_sorted else 0,
             "median_chars": sorted(len(t) for t in texts)[len(texts) // 2] if texts else 0}
    return GateResult("abc", n, good, ABC_THRESHOLD, time.monotonic() - started, str(model_path), failures, stats)


# --------------------------------------------------------------------------- midi

#: Token cap per sampled piece. The music pane's default is 4096; stopping earlier can only
#: shorten a piece, so a pass with this cap implies a pass with the default.
MIDI_GATE_MAX_TOKENS = 400


def sample_midi(model_path: Path, n: int, seed: int, max_tokens: int = MIDI_GATE_MAX_TOKENS) -> list[list[int]]:
    """``n`` pieces with the music pane's default MIDI settings (sample i: seed + i)."""
    from engine.music.generate import MidiGeneration, MidiSettings

    model = engine.load_model(model_path, device="cpu")
    return [
        MidiGeneration(model, MidiSettings(seed=seed + i, max_tokens=max_tokens)).run().tokens
        for i in range(n)
    ]


def midi_gate(model_path: Path, n: int = 100, seed: int = 0) -> GateResult:
    from engine.music.midi_codec import decode_tokens

    started = time.monotonic()
    pieces = sample_midi(model_path, n, seed)
    good = 0
    failures = []
    lengths = []
    for i, ids in enumerate(pieces):
        decoded = decode_tokens(ids)
        seconds = max((e.time_ms for e in decoded.events), default=0.0) / 1000.0
        lengths.append(seconds)
        if decoded.invalid_count == 0 and seconds >= MIDI_MIN_SECONDS:
            good += 1
        else:
            failures.append({"sample": i, "seconds": round(seconds, 2), "tokens": len(ids),
                             "invalid": decoded.invalid_count})
    lengths.sort()
    stats = {"median_seconds": round(lengths[len(lengths) // 2], 1) if lengths else 0.0,
             "median_tokens": sorted(len(p) for p in pieces)[len(pieces) // 2] if pieces else 0}
    return GateResult("midi", n, good, MIDI_THRESHOLD, time.monotonic() - started, str(model_path), failures, stats)
