"""The acceptance gates of the demo models, run through the engine exactly as the app runs them.

* chat: greedy replies to the 200 held-out questions (tools.train.chat_data); a reply counts
  only if it equals the computed answer exactly. Pass: ≥ 80 %.
* abc: 100 tunes sampled from BOS with the model's default sampling (its sidecar), each given
  an X: line and converted by abc2midi; a tune counts if a MIDI file of ≥ 8 bars comes out.
  Pass: ≥ 90.
* midi: 100 pieces sampled from the piece separator with the default sampling, decoded by
  engine.music.midi_codec; a piece counts if it lasts ≥ 10 s and has no invalid token.
  Pass: ≥ 90.

Samples are seeded (sample i uses seed + i), so a gate run is reproducible.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import engine
from engine.demo_models import demo_model_path
from engine.sampling import Sampler, SamplingParams

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


def sidecar(model_path: Path) -> dict[str, object]:
    path = model_path.with_suffix(".json")
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def default_sampling(model_path: Path, fallback: SamplingParams) -> SamplingParams:
    """The sampling the model ships with (its sidecar's "sampling"), else ``fallback``."""
    data = sidecar(model_path).get("sampling")
    return SamplingParams.from_dict(data) if isinstance(data, dict) else fallback


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


def chat_gate(model_path: Path, n: int = 200) -> GateResult:
    from tools.train.chat_data import split

    started = time.monotonic()
    model = engine.load_model(model_path, device="cpu")
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


ABC_FALLBACK = SamplingParams(temperature=1.0, top_p=0.8, top_k=8, presence_penalty=0.0,
                              frequency_penalty=0.0, max_tokens=1200)


def sample_abc(model_path: Path, n: int, seed: int) -> list[str]:
    """``n`` tunes sampled from BOS alone, as the text between BOS and EOS."""
    model = engine.load_model(model_path, device="cpu")
    tokenizer = engine.get_tokenizer("abc")
    params = default_sampling(model_path, ABC_FALLBACK)
    bos_state = None
    bos_logits = None
    texts = []
    for i in range(n):
        if bos_state is None:
            bos_logits, bos_state = model.forward([tokenizer.BOS])
        sampler = Sampler(params.with_(seed=seed + i), model.config.vocab)
        generation = engine.Generation(
            model, tokenizer, sampler, prompt=[], state=bos_state, logits=bos_logits,
            stop_tokens=[tokenizer.EOS], max_tokens=params.max_tokens,
        )
        texts.append("".join(generation))
    return texts


def abc_to_midi(text: str, workdir: Path, name: str = "tune") -> Path | None:
    """Run abc2midi on a generated tune (with the X: line it requires); None if no file."""
    source = workdir / f"{name}.abc"
    target = workdir / f"{name}.mid"
    source.write_text("X:1\n" + text, encoding="utf-8")
    abc2midi = shutil.which("abc2midi")
    if abc2midi is None:
        raise FileNotFoundError("abc2midi is not installed (Debian package abcmidi)")
    subprocess.run([abc2midi, str(source), "-o", str(target), "-silent"], capture_output=True, timeout=60)
    return target if target.is_file() and target.stat().st_size > 0 else None


def midi_bars(path: Path) -> float:
    """Bars covered by the notes of a MIDI file, measured in its first time signature."""
    import mido

    mid = mido.MidiFile(path)
    numerator, denominator = 4, 4
    last_tick = 0
    found_signature = False
    for track in mid.tracks:
        tick = 0
        for msg in track:
            tick += msg.time
            if msg.type == "time_signature" and not found_signature:
                numerator, denominator = msg.numerator, msg.denominator
                found_signature = True
            if msg.type in ("note_on", "note_off"):
                last_tick = max(last_tick, tick)
    bar_ticks = mid.ticks_per_beat * 4 * numerator / denominator
    return last_tick / bar_ticks


def abc_gate(model_path: Path, n: int = 100, seed: int = 0) -> GateResult:
    started = time.monotonic()
    texts = sample_abc(model_path, n, seed)
    good = 0
    failures = []
    bars_seen = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, text in enumerate(texts):
            midi = abc_to_midi(text, Path(tmp), f"tune{i}")
            bars = midi_bars(midi) if midi else 0.0
            bars_seen.append(bars)
            if midi is not None and math.floor(bars + 1e-6) >= ABC_MIN_BARS:
                good += 1
            else:
                failures.append({"sample": i, "bars": round(bars, 2), "text": text[:300]})
    bars_sorted = sorted(bars_seen)
    stats = {"median_bars": bars_sorted[len(bars_sorted) // 2] if bars_sorted else 0,
             "median_chars": sorted(len(t) for t in texts)[len(texts) // 2] if texts else 0}
    return GateResult("abc", n, good, ABC_THRESHOLD, time.monotonic() - started, str(model_path), failures, stats)


# --------------------------------------------------------------------------- midi


MIDI_FALLBACK = SamplingParams(temperature=1.0, top_p=0.8, top_k=8, presence_penalty=0.0,
                               frequency_penalty=0.0, max_tokens=1024)


def sample_midi(model_path: Path, n: int, seed: int) -> list[list[int]]:
    """``n`` pieces sampled after the piece separator (id 0), up to the next separator."""
    model = engine.load_model(model_path, device="cpu")
    tokenizer = engine.get_tokenizer("midi")
    params = default_sampling(model_path, MIDI_FALLBACK)
    logits, state = model.forward([tokenizer.end_token])
    pieces = []
    for i in range(n):
        sampler = Sampler(params.with_(seed=seed + i), model.config.vocab)
        generation = engine.Generation(
            model, tokenizer, sampler, prompt=[], state=state, logits=logits,
            stop_tokens=[tokenizer.end_token], max_tokens=params.max_tokens,
        )
        for _ in generation:
            pass
        assert generation.result is not None
        pieces.append([t for t in generation.result.tokens if t != tokenizer.end_token])
    return pieces


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
