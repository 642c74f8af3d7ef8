"""Music generation on the engine: ABC text and MIDI-LLM tokens, usable without any UI.

MIDI mode follows ChatRWKV's music demo (music.md §3), because the released MIDI models only
sound right with it: a repetition penalty of 0.5 × a decaying occurrence count (notes and
``t125`` count 1.0, shorter waits 0.3), a ``<pad>`` bias that grows with the token count so
pieces end at a chosen length, ``t125`` made slightly less likely, and top-k 8 / top-p 0.8.
Note events are decoded token by token and handed out as they appear, so a player can start
while the model is still writing.

ABC mode is plain sampling of a character-level model between BOS (2) and EOS (3).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import torch

from engine.generate import Generation, GenerationStats, StopReason
from engine.model import Model
from engine.music import abc as abc_notation
from engine.music import midi_codec as codec
from engine.music import midi_vocab as vocab
from engine.music.errors import MusicError
from engine.sampling import Sampler, SamplingParams
from engine.tokenizers import AbcTokenizer, get_tokenizer

T125_ID = vocab.wait_id(vocab.WAIT_STEPS)  # 127


# --------------------------------------------------------------------------- MIDI mode


@dataclass(frozen=True)
class MidiSettings:
    """Sampling and music settings of MIDI mode; defaults are ChatRWKV's music demo."""

    temperature: float = 1.0
    top_p: float = 0.8
    top_k: int = 8
    #: Hard budget of generated tokens.
    max_tokens: int = 4096
    seed: int | None = None
    #: Only piano notes (and waits) can be sampled.
    piano_only: bool = False
    #: Subtracted from a token's logit per unit of its (decayed) occurrence count.
    repetition_penalty: float = 0.5
    penalty_decay: float = 0.997
    note_weight: float = 1.0  # occurrence added per note token and per t125
    wait_weight: float = 0.3  # occurrence added per shorter wait (and specials)
    #: Token count at which the end (<pad>) bias crosses zero: the soft target length.
    length_target: int = 2000
    #: Tokens per +1 of end bias (the bias is (step − length_target) / length_scale).
    length_scale: float = 500.0
    #: Subtracted from the logit of t125 (long silences).
    t125_penalty: float = 1.0
    #: A continuation prompt longer than this keeps only its last tokens.
    prompt_limit: int = 2048

    def validate(self) -> "MidiSettings":
        if not math.isfinite(self.repetition_penalty):
            raise MusicError(f"repetition_penalty must be a finite number, found {self.repetition_penalty}")
        self.sampling_params()
        if self.length_target < 1:
            raise MusicError(f"length_target must be ≥ 1 (a token count), found {self.length_target}")
        if self.length_scale <= 0:
            raise MusicError("length_scale must be > 0")
        if self.prompt_limit < 1:
            raise MusicError("prompt_limit must be ≥ 1")
        return self

    def sampling_params(self) -> SamplingParams:
        return SamplingParams(
            temperature=self.temperature, top_p=self.top_p, top_k=self.top_k,
            presence_penalty=0.0, frequency_penalty=self.repetition_penalty,
            penalty_decay=self.penalty_decay, max_tokens=self.max_tokens, seed=self.seed,
        ).validate()


def midi_occurrence_weight(settings: MidiSettings):  # noqa: ANN201 - a closure for Sampler
    """Occurrence increment per sampled id: notes and t125 weigh more than short waits."""
    note_weight, wait_weight = settings.note_weight, settings.wait_weight

    def weight(token: int) -> float:
        return note_weight if token >= T125_ID else wait_weight

    return weight


def midi_logit_hook(settings: MidiSettings):  # noqa: ANN201 - a closure for Sampler
    """Length control, t125 discouragement and the piano-only filter, applied every step."""
    target, scale, t125 = settings.length_target, settings.length_scale, settings.t125_penalty
    non_piano: list[range] = []
    if settings.piano_only:
        piano = vocab.bin_note_ids(vocab.PIANO_BIN.index)
        non_piano = [range(vocab.FIRST_NOTE_ID, piano.start), range(piano.stop, vocab.VOCAB_SIZE)]

    def hook(logits: torch.Tensor, step: int) -> None:
        logits[vocab.PAD_ID] += (step - target) / scale
        logits[T125_ID] -= t125
        for block in non_piano:
            logits[block.start:block.stop] = -float("inf")

    return hook


@dataclass
class MidiChunk:
    """What one step of generation added: tokens, their text and the note events they complete."""

    tokens: list[int]
    text: str
    events: list[codec.NoteEvent]
    #: Musical time known so far (ms): no later event can start before it.
    time_ms: float
    #: True for the chunk that replays a continuation prompt.
    from_prompt: bool = False
    #: True for the last chunk (generation ended; held notes are released).
    final: bool = False


@dataclass
class MidiResult:
    prompt_tokens: list[int]
    tokens: list[int]
    #: Full token text, prompt included: "<start> … <end>" (what the reference decoder reads).
    text: str
    events: list[codec.NoteEvent]
    end_ms: float
    invalid_tokens: int
    stop_reason: StopReason
    stats: GenerationStats

    def to_midi(self):  # noqa: ANN201 - mido.MidiFile
        return codec.events_to_midi(self.events)


def check_midi_model(model: Model) -> None:
    if model.config.vocab != vocab.VOCAB_SIZE:
        raise MusicError(
            f"{model.info.path}: MIDI mode needs a MIDI-LLM model ({vocab.VOCAB_SIZE} tokens); "
            f"this model has {model.config.vocab}"
        )


def midi_prompt_from_file(path: str, limit: int = MidiSettings.prompt_limit) -> list[int]:
    """Token ids of a .mid file to continue: the whole file as one piece, its last ``limit``
    tokens if longer (cut at a time step), without the closing ``<end>``."""
    result = codec.encode_midi(path, codec.EncodeOptions(piece_split_ms=None, min_piece_ms=None))
    if not result.pieces:
        raise MusicError(f"{path}: no notes in instruments the MIDI model knows")
    return trim_prompt(result.pieces[0].ids, limit)


def midi_prompt_from_text(text: str, limit: int = MidiSettings.prompt_limit) -> list[int]:
    """Token ids of a token text to continue (unknown words are dropped)."""
    ids, _unknown = codec.text_to_ids(text)
    ids = [t for t in ids if t != vocab.PAD_ID]
    if vocab.END_ID in ids:
        ids = ids[: ids.index(vocab.END_ID)]
    return trim_prompt(ids, limit)


def trim_prompt(ids: Sequence[int], limit: int) -> list[int]:
    """``<start>`` + the piece's tokens, the end dropped, at most ``limit`` tokens in all."""
    body = [t for t in ids if t not in (vocab.START_ID, vocab.PAD_ID)]
    while body and body[-1] == vocab.END_ID:
        body.pop()
    if len(body) + 1 > limit:
        cut = len(body) - (limit - 1)
        # Start right after a wait token so the kept part begins on a whole time step.
        while cut < len(body) and not (vocab.FIRST_NOTE_ID > body[cut - 1] > vocab.END_ID):
            cut += 1
        body = body[cut:]
    return [vocab.START_ID] + body


class MidiGeneration:
    """One MIDI-mode run. Iterate (in any thread) for MidiChunks; ``cancel()`` from any thread."""

    def __init__(
        self,
        model: Model,
        settings: MidiSettings | None = None,
        *,
        prompt_tokens: Sequence[int] = (),
    ) -> None:
        check_midi_model(model)
        self.model = model
        self.settings = (settings or MidiSettings()).validate()
        self.prompt_tokens = trim_prompt(prompt_tokens, self.settings.prompt_limit) if prompt_tokens else []
        self.decoder = codec.TokenDecoder()
        self.result: MidiResult | None = None
        self._generation: Generation | None = None
        self._cancelled = threading.Event()
        self._started = False

    def cancel(self) -> None:
        self._cancelled.set()
        if self._generation is not None:
            self._generation.cancel()

    def run(self) -> MidiResult:
        for _ in self:
            pass
        assert self.result is not None
        return self.result

    def __iter__(self) -> Iterator[MidiChunk]:
        if self._started:
            raise RuntimeError("a MidiGeneration can only be iterated once")
        self._started = True
        return self._loop()

    def _loop(self) -> Iterator[MidiChunk]:
        settings = self.settings
        decoder = self.decoder
        events: list[codec.NoteEvent] = []
        if self.prompt_tokens:
            prompt_events = decoder.feed_many(self.prompt_tokens)
            events.extend(prompt_events)
            yield MidiChunk(list(self.prompt_tokens), codec.ids_to_text(self.prompt_tokens),
                            prompt_events, decoder.time_ms, from_prompt=True)
        sampler = Sampler(
            settings.sampling_params(), self.model.config.vocab,
            logit_hooks=[midi_logit_hook(settings)], penalty_exempt=midi_occurrence_weight(settings),
        )
        fresh: list[int] = []
        generation = Generation(
            self.model, get_tokenizer("midi"), sampler,
            prompt=[vocab.PAD_ID] + list(self.prompt_tokens),
            max_tokens=settings.max_tokens,
            stop_tokens=[vocab.PAD_ID, vocab.END_ID],
            on_token=lambda token, _state: fresh.append(token),
        )
        self._generation = generation
        if self._cancelled.is_set():
            generation.cancel()
        generated: list[int] = []

        def drain() -> Iterator[MidiChunk]:
            while fresh:
                token = fresh.pop(0)
                generated.append(token)
                new = decoder.feed_id(token)
                events.extend(new)
                yield MidiChunk([token], codec.id_to_token(token) or "", new, decoder.time_ms)

        for _delta in generation:
            yield from drain()
        yield from drain()
        result = generation.result
        assert result is not None
        if result.stop_reason == StopReason.CANCELLED:
            tail = decoder.release_all()  # stop now: no end pause
        else:
            tail = decoder.feed_text(vocab.END)  # what the reference's appended <end> does
        events.extend(tail)
        yield MidiChunk([], "", tail, decoder.time_ms, final=True)
        words = [codec.id_to_token(t) or "" for t in self.prompt_tokens + generated]
        if not words or words[0] != vocab.START:
            words.insert(0, vocab.START)
        words.append(vocab.END)
        self.result = MidiResult(
            prompt_tokens=list(self.prompt_tokens), tokens=generated, text=" ".join(words),
            events=events, end_ms=decoder.time_ms, invalid_tokens=decoder.invalid_count,
            stop_reason=result.stop_reason, stats=result.stats,
        )


# --------------------------------------------------------------------------- ABC mode


@dataclass(frozen=True)
class AbcSettings:
    """ABC sampling; defaults are ChatRWKV's music demo (the RWKV-5 ABC card suggests top_p 0.5,
    top_k 0)."""

    temperature: float = 1.0
    top_p: float = 0.8
    top_k: int = 8
    max_tokens: int = 1024
    seed: int | None = None

    def validate(self) -> "AbcSettings":
        """Return self, or EngineError naming the first invalid field (before any model work)."""
        self.sampling_params(0)
        return self

    def sampling_params(self, vocab_size: int) -> SamplingParams:
        # Ids 0–2 carry no text, control characters (ESC!) would garble a terminal and ids past
        # ASCII are not ABC; EOS (3) stays allowed: it ends the tune.
        controls = tuple(i for i in range(4, 32) if i not in (9, 10))
        bans = (0, 1, 2) + controls + tuple(range(127, vocab_size))
        return SamplingParams(
            temperature=self.temperature, top_p=self.top_p, top_k=self.top_k,
            presence_penalty=0.0, frequency_penalty=0.0, penalty_decay=1.0,
            max_tokens=self.max_tokens, seed=self.seed, ban_tokens=bans,
        ).validate()


@dataclass
class AbcResult:
    prompt: str
    generated: str
    tokens: list[int]
    stop_reason: StopReason
    stats: GenerationStats
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def text(self) -> str:
        """The whole tune as the model sees it: prompt followed by what it wrote."""
        return self.prompt + self.generated

    @property
    def complete(self) -> bool:
        """True when the model ended the tune itself (EOS) rather than running out of budget."""
        return self.stop_reason == StopReason.STOP_TOKEN


def check_abc_model(model: Model) -> None:
    if not 128 <= model.config.vocab <= 256:
        raise MusicError(
            f"{model.info.path}: ABC mode needs a character-level ABC model (128–256 token ids); "
            f"this model has {model.config.vocab}"
        )


class AbcGeneration:
    """One ABC-mode run: iterate for text deltas; ``result`` when done; ``cancel()`` anytime."""

    def __init__(self, model: Model, prompt: str = "", settings: AbcSettings | None = None) -> None:
        check_abc_model(model)
        self.model = model
        self.prompt = prompt
        self.settings = settings or AbcSettings()
        ids = abc_notation.prompt_ids(prompt)
        sampler = Sampler(self.settings.sampling_params(model.config.vocab), model.config.vocab)
        self._generation = Generation(
            model, AbcTokenizer(model.config.vocab), sampler, prompt=ids,
            max_tokens=self.settings.max_tokens, stop_tokens=[abc_notation.EOS],
        )
        self.result: AbcResult | None = None

    def cancel(self) -> None:
        self._generation.cancel()

    def run(self) -> AbcResult:
        for _ in self:
            pass
        assert self.result is not None
        return self.result

    def __iter__(self) -> Iterator[str]:
        pieces: list[str] = []
        for delta in self._generation:
            pieces.append(delta)
            yield delta
        result = self._generation.result
        assert result is not None
        self.result = AbcResult(self.prompt, "".join(pieces), result.tokens, result.stop_reason, result.stats)
