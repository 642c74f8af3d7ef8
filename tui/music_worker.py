"""The music thread: generates pieces for the music pane, next to (not on) the engine thread.

Why a thread of its own rather than the engine worker's: a MIDI piece is thousands of tokens and
can take minutes on a CPU. On the shared engine thread it would hold the chat's queue for all that
time (a message sent meanwhile would wait for the music to end), and stopping one would have to
know about the other. Here the chat and the music run side by side on different models; both
threads spend their time in torch kernels that release the GIL, and a model's ``forward`` never
mutates shared state, so the only thing they share is the CPU. The engine worker still *loads*
the music model (one place for loading, progress and errors); this thread reads the loaded model
through ``model_source`` when a run starts, so a model loaded mid-piece applies to the next one.

The thread owns no widget: it feeds the :class:`~engine.music.player.Player` directly (so live
playback keeps time whatever the UI does) and publishes events into a merging
:class:`~tui.music_protocol.MusicOutbox` that the pane drains on its own timer.
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
from pathlib import Path
from typing import Callable, Iterable

import mido

from engine import EngineError, Model
from engine.music import abc as abc_notation
from engine.music import generate as music_generate
from engine.music import midi_vocab as vocab
from engine.music.errors import AbcError, MusicError
from engine.music.midi_codec import NoteEvent, id_to_token
from engine.music.player import Player, midi_file_timeline
from tui.failures import report_failure
from tui.music_protocol import (
    MusicFailed, MusicFinished, MusicOutbox, MusicPiece, MusicPreview, MusicProgress, MusicRequest, MusicStarted,
)


#: The message of a run that was stopped or replaced while it still waited in the queue.
STOPPED_BEFORE_START = "stopped before it started"
NO_MODEL = "no music model is loaded: load one with Ctrl+Shift+O or --music-model PATH"


def midi_note_events(mid: mido.MidiFile) -> list[NoteEvent]:
    """Note-ons and note-offs of a MIDI file at absolute times (for the piano roll)."""
    out: list[NoteEvent] = []
    for time_ms, message in midi_file_timeline(mid)[0]:
        status = message[0] & 0xF0
        if status in (0x80, 0x90) and len(message) >= 3:
            velocity = message[2] if status == 0x90 else 0
            out.append(NoteEvent(time_ms, message[0] & 0x0F, message[1], velocity))
    return out


def token_display(tokens: Iterable[int], at_line_start: bool) -> tuple[str, bool]:
    """Token words laid out one time step per line (a line starts at each wait token)."""
    parts: list[str] = []
    for token in tokens:
        word = id_to_token(token) or f"<{token}>"
        is_wait = vocab.END_ID < token < vocab.FIRST_NOTE_ID
        if is_wait and not at_line_start:
            parts.append("\n")
        elif not at_line_start:
            parts.append(" ")
        parts.append(word)
        at_line_start = False
    return "".join(parts), at_line_start


#: Seconds between conversions of an ABC tune being written, for the live piano roll.
ABC_PREVIEW_INTERVAL = 0.5


class MusicWorker:
    """Owns the music thread. :meth:`start`, :meth:`generate`, :meth:`cancel`, :meth:`close`."""

    def __init__(self, model_source: Callable[[], Model | None], *, player: Player | None = None,
                 log_path: Path | None = None) -> None:
        self.outbox = MusicOutbox()
        self.player = player
        self._model_source = model_source
        self._log_path = log_path
        self._requests: queue.Queue[tuple[int, MusicRequest | None]] = queue.Queue()
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._latest = 0
        self._cancelled_through = 0
        self._running = 0
        self._finished_through = 0
        self._active: music_generate.MidiGeneration | music_generate.AbcGeneration | None = None
        self._thread = threading.Thread(target=self._loop, name="rwkv-music", daemon=True)
        #: Seconds between two ABC previews (each runs abc2midi once, tens of milliseconds).
        self.abc_preview_interval = ABC_PREVIEW_INTERVAL

    # ------------------------------------------------------------------ UI side (any thread)

    def start(self) -> None:
        self._thread.start()

    def generate(self, request: MusicRequest) -> int:
        """Queue a piece (a piece being written is stopped first); returns its run number."""
        with self._lock:
            run = next(self._ids)
            self._cancelled_through = self._latest
            self._latest = run
            active = self._active
        if active is not None:
            active.cancel()
        self._requests.put((run, request))
        return run

    def cancel(self) -> bool:
        """Stop the piece being written (and any queued). True if one was running or queued."""
        with self._lock:
            pending = self._latest > self._cancelled_through
            self._cancelled_through = self._latest
            active = self._active
        if active is not None:
            active.cancel()
        return pending or active is not None

    @property
    def busy(self) -> bool:
        """A piece is queued or being written."""
        with self._lock:
            return self._running != 0 or self._latest > max(self._cancelled_through, self._finished_through)

    def close(self, timeout: float = 5.0) -> None:
        self.cancel()
        self._requests.put((0, None))
        if self._thread.is_alive():
            self._thread.join(timeout)

    # ------------------------------------------------------------------ music thread

    def _loop(self) -> None:
        while True:
            run, request = self._requests.get()
            if request is None:
                return
            with self._lock:
                skip = run <= self._cancelled_through  # replaced or stopped before it started
                if not skip:
                    self._running = run
            if skip:
                self.outbox.put(MusicFailed(run, STOPPED_BEFORE_START))  # whoever waits for it hears
                with self._lock:
                    self._finished_through = max(self._finished_through, run)
                continue
            try:
                if request.settings.mode == "abc":
                    self._run_abc(run, request)
                else:
                    self._run_midi(run, request)
            except EngineError as exc:
                self.outbox.put(MusicFailed(run, str(exc)))
            except Exception as exc:  # a bug must not kill the thread or the app
                self.outbox.put(MusicFailed(run, self._report_failure(exc)))
            finally:
                with self._lock:
                    self._active = None
                    self._running = 0
                    self._finished_through = max(self._finished_through, run)

    def _model(self) -> Model:
        model = self._model_source()
        if model is None:
            raise MusicError(NO_MODEL)
        return model

    def _activate(self, run: int, generation: music_generate.MidiGeneration | music_generate.AbcGeneration) -> None:
        with self._lock:
            self._active = generation
            if run <= self._cancelled_through:
                generation.cancel()  # stopped between the queue and here

    def _run_midi(self, run: int, request: MusicRequest) -> None:
        settings = request.settings
        midi_settings = settings.midi_settings()
        prompt: list[int] = []
        if settings.continue_from:
            prompt = self._continuation(settings.continue_from, midi_settings.prompt_limit)
        generation = music_generate.MidiGeneration(self._model(), midi_settings, prompt_tokens=prompt)
        self._activate(run, generation)
        player = self.player if request.play else None
        # A continuation's first chunk replays the prompt, <start> included.
        self.outbox.put(MusicStarted(run, "midi", "" if prompt else vocab.START))
        if player is not None:
            player.begin()
            player.play()
        at_line_start = bool(prompt)
        generated = 0
        first_token_at: float | None = None
        for chunk in generation:
            if player is not None and (chunk.events or chunk.tokens or chunk.final):
                player.feed_events(chunk.events, chunk.time_ms)
            text, at_line_start = token_display(chunk.tokens, at_line_start)
            if not chunk.from_prompt and chunk.tokens:
                generated += len(chunk.tokens)
                if first_token_at is None:
                    first_token_at = time.perf_counter()
            rate = _rate(generated, first_token_at)
            self.outbox.put(MusicProgress(run, text, tuple(chunk.events), chunk.time_ms, generated, rate))
        result = generation.result
        assert result is not None
        if player is not None:
            player.finish(result.end_ms)
        self.outbox.put(MusicFinished(run, MusicPiece(
            mode="midi", text=result.text, events=tuple(result.events), end_ms=result.end_ms,
            midi=result.to_midi(), generated_tokens=len(result.tokens),
            tokens_per_second=result.stats.tokens_per_second, stop_reason=result.stop_reason.value,
            invalid_tokens=result.invalid_tokens,
        )))

    @staticmethod
    def _continuation(path_text: str, limit: int) -> list[int]:
        path = Path(path_text).expanduser()
        if path.suffix.lower() == ".txt":
            try:
                text = path.read_text(encoding="utf-8", errors="replace")
            except OSError as exc:
                raise MusicError(f"{path}: cannot read ({exc.strerror or exc})") from None
            prompt = music_generate.midi_prompt_from_text(text, limit)
            if len(prompt) <= 1:
                raise MusicError(f"{path}: no MIDI tokens to continue")
            return prompt
        return music_generate.midi_prompt_from_file(str(path), limit)

    def _run_abc(self, run: int, request: MusicRequest) -> None:
        settings = request.settings
        prompt = settings.abc_prompt()
        generation = music_generate.AbcGeneration(self._model(), prompt, settings.abc_settings())
        self._activate(run, generation)
        self.outbox.put(MusicStarted(run, "abc", prompt))
        generated = 0
        first_token_at: float | None = None
        written: list[str] = [prompt]
        previewed_bars = prompt.count("|")
        previewed_at = time.perf_counter()
        for delta in generation:
            generated += 1
            now = time.perf_counter()
            if first_token_at is None:
                first_token_at = now
            self.outbox.put(MusicProgress(run, delta, (), 0.0, generated, _rate(generated, first_token_at)))
            written.append(delta)
            if "|" in delta and now - previewed_at >= self.abc_preview_interval:
                text = "".join(written)
                written = [text]
                if text.count("|") > previewed_bars:
                    previewed_bars = text.count("|")
                    self._preview_abc(run, text)
                    previewed_at = time.perf_counter()
        result = generation.result
        assert result is not None
        tune = abc_notation.with_reference_number(result.text)
        midi: mido.MidiFile | None = None
        events: list[NoteEvent] = []
        problem = ""
        try:
            converted = abc_notation.abc_to_midi(tune)
        except AbcError as exc:
            problem = str(exc)
        else:
            midi = converted.midi
            events = midi_note_events(midi)
            if converted.errors:
                problem = f"abc2midi worked around {len(converted.errors)} problem(s), first: {converted.errors[0]}"
        end_ms = midi_file_timeline(midi)[1] if midi is not None else 0.0
        self.outbox.put(MusicFinished(run, MusicPiece(
            mode="abc", text=tune, events=tuple(events), end_ms=end_ms, midi=midi,
            generated_tokens=len(result.tokens), tokens_per_second=result.stats.tokens_per_second,
            stop_reason=result.stop_reason.value, conversion_problem=problem,
        )))
        if midi is not None and request.play and self.player is not None:
            with self._lock:
                current = run == self._latest and run > self._cancelled_through
            if current:
                self.player.load_midi(midi)
                self.player.play()

    def _preview_abc(self, run: int, text: str) -> None:
        """Convert the complete bars of a tune being written and show them (best effort).

        The text is cut after its last bar line so abc2midi never sees half a bar; a prefix it
        cannot convert yet (no K: line, no notes, no abc2midi) simply shows nothing new.
        """
        complete = text[: text.rfind("|") + 1]
        try:
            converted = abc_notation.abc_to_midi(complete, timeout=5.0)
        except AbcError:
            return
        midi = converted.midi
        self.outbox.put(MusicPreview(run, tuple(midi_note_events(midi)), midi_file_timeline(midi)[1]))

    def _report_failure(self, exc: BaseException) -> str:
        return report_failure(exc, "music generation failed", self._log_path)


def _rate(tokens: int, since: float | None) -> float:
    if since is None or tokens < 2:
        return 0.0
    elapsed = time.perf_counter() - since
    return (tokens - 1) / elapsed if elapsed > 0 else 0.0
