"""The token loop as an iterator of text deltas.

``Generation`` yields text as it becomes final: a multi-byte character split across tokens is
held until complete, and text that might be the beginning of a stop string is held until it
is known not to be. Cancellation from another thread takes effect after the token in flight.
When iteration ends, ``result`` holds the text, the tokens, the state after everything fed
and the timings.
"""

from __future__ import annotations

import enum
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import torch

from engine.model import Model
from engine.sampling import Sampler
from engine.state import State
from engine.tokenizers import Tokenizer


class StopReason(str, enum.Enum):
    STOP_STRING = "stop string"
    STOP_TOKEN = "stop token"
    MAX_TOKENS = "token budget"
    CANCELLED = "cancelled"


@dataclass
class GenerationStats:
    prompt_tokens: int = 0
    generated_tokens: int = 0
    prefill_seconds: float = 0.0
    decode_seconds: float = 0.0
    #: Seconds from the start (prompt included) to the first sampled token.
    time_to_first_token: float | None = None

    @property
    def tokens_per_second(self) -> float:
        return self.generated_tokens / self.decode_seconds if self.decode_seconds > 0 else 0.0

    @property
    def prefill_tokens_per_second(self) -> float:
        return self.prompt_tokens / self.prefill_seconds if self.prefill_seconds > 0 else 0.0


@dataclass
class GenerationResult:
    text: str
    tokens: list[int]
    #: State after the prompt and every generated token except a stop token.
    state: State
    #: Logits that follow ``state``, so a caller can keep generating without re-feeding.
    logits: torch.Tensor
    stop_reason: StopReason
    stats: GenerationStats
    #: The stop string that ended generation, if any (it is not part of ``text``).
    stop_string: str | None = None


@dataclass
class _Pending:
    text: str = ""
    emitted: list[str] = field(default_factory=list)


class Generation:
    """One generation run. Iterate it (in any thread) for text deltas; ``cancel()`` from any thread."""

    def __init__(
        self,
        model: Model,
        tokenizer: Tokenizer,
        sampler: Sampler,
        *,
        prompt: Sequence[int] = (),
        state: State | None = None,
        logits: torch.Tensor | None = None,
        max_tokens: int | None = None,
        stop_strings: Sequence[str] = (),
        stop_tokens: Sequence[int] = (),
        on_finish: Callable[[GenerationResult], None] | None = None,
        on_token: Callable[[int, State], None] | None = None,
    ) -> None:
        if not prompt and logits is None:
            raise ValueError("a generation needs prompt tokens or the logits of the state it continues")
        self.model = model
        self.tokenizer = tokenizer
        self.sampler = sampler
        self.prompt = list(prompt)
        self.initial_state = state if state is not None else model.zero_state()
        self.initial_logits = logits
        self.max_tokens = max_tokens if max_tokens is not None else sampler.params.max_tokens
        self.stop_strings = [s for s in stop_strings if s]
        self.stop_tokens = set(stop_tokens)
        self.on_finish = on_finish
        self.on_token = on_token
        self.result: GenerationResult | None = None
        self.stats = GenerationStats(prompt_tokens=len(self.prompt))
        self._cancel = threading.Event()
        self._started = False

    def cancel(self) -> None:
        """Ask the loop to stop after the current token (thread-safe)."""
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def run(self) -> GenerationResult:
        """Consume the whole generation and return its result."""
        for _ in self:
            pass
        assert self.result is not None
        return self.result

    def __iter__(self) -> Iterator[str]:
        if self._started:
            raise RuntimeError("a Generation can only be iterated once")
        self._started = True
        return self._loop()

    # ------------------------------------------------------------------ internals

    def _loop(self) -> Iterator[str]:
        start = time.perf_counter()
        state = self.initial_state
        logits = self.initial_logits
        stats = self.stats
        tokens: list[int] = []
        decoder = self.tokenizer.stream_decoder()
        pending = _Pending()
        stop_reason = StopReason.MAX_TOKENS
        stop_string: str | None = None

        chunk = self.model.chunk_len
        for offset in range(0, len(self.prompt), chunk):
            if self._cancel.is_set():
                break
            logits, state = self.model.forward(self.prompt[offset:offset + chunk], state)
        prefill_end = time.perf_counter()
        stats.prefill_seconds = prefill_end - start if self.prompt else 0.0

        if self._cancel.is_set() or logits is None:
            stop_reason = StopReason.CANCELLED
        else:
            while len(tokens) < self.max_tokens:
                if self._cancel.is_set():
                    stop_reason = StopReason.CANCELLED
                    break
                token = self.sampler.sample(logits)
                if stats.time_to_first_token is None:
                    stats.time_to_first_token = time.perf_counter() - start
                if token in self.stop_tokens:
                    stop_reason = StopReason.STOP_TOKEN
                    break
                tokens.append(token)
                logits, state = self.model.forward([token], state)
                stats.generated_tokens = len(tokens)
                if self.on_token is not None:
                    self.on_token(token, state)
                pending.text += decoder.feed(token)
                found = self._find_stop(pending.text)
                if found is not None:
                    index, stop_string = found
                    if index:
                        yield self._emit(pending, pending.text[:index])
                    pending.text = ""
                    stop_reason = StopReason.STOP_STRING
                    break
                safe = len(pending.text) - self._held_suffix(pending.text)
                if safe > 0:
                    delta = pending.text[:safe]
                    pending.text = pending.text[safe:]
                    yield self._emit(pending, delta)
                stats.decode_seconds = time.perf_counter() - prefill_end
        stats.decode_seconds = time.perf_counter() - prefill_end
        if stop_reason != StopReason.STOP_STRING:
            tail = pending.text + decoder.flush()
            if tail:
                yield self._emit(pending, tail)
        assert logits is not None or stop_reason == StopReason.CANCELLED
        self.result = GenerationResult(
            text="".join(pending.emitted),
            tokens=tokens,
            state=state,
            logits=logits if logits is not None else torch.empty(0),
            stop_reason=stop_reason,
            stats=stats,
            stop_string=stop_string,
        )
        if self.on_finish is not None:
            self.on_finish(self.result)

    @staticmethod
    def _emit(pending: _Pending, text: str) -> str:
        pending.emitted.append(text)
        return text

    def _find_stop(self, text: str) -> tuple[int, str] | None:
        best: tuple[int, str] | None = None
        for stop in self.stop_strings:
            index = text.find(stop)
            if index >= 0 and (best is None or index < best[0]):
                best = (index, stop)
        return best

    def _held_suffix(self, text: str) -> int:
        """Length of the longest suffix of ``text`` that could start a stop string."""
        held = 0
        for stop in self.stop_strings:
            for length in range(min(len(stop) - 1, len(text)), held, -1):
                if text.endswith(stop[:length]):
                    held = length
                    break
        return held
