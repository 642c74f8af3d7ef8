"""What the music thread tells the music pane, and the buffer it goes through.

Plain frozen dataclasses (no Textual), like :mod:`tui.protocol`. The :class:`MusicOutbox` merges
what piles up between two UI frames: consecutive progress events of one run become one (text and
note events appended, the newest counters kept), so the pane's work per frame depends on its own
update rate, never on how fast the model writes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Union

import mido

from engine.music.midi_codec import NoteEvent
from tui.music_settings import MusicMode, MusicSettings
from tui.outbox import MergingOutbox

Severity = Literal["information", "warning", "error"]


@dataclass(frozen=True)
class MusicRequest:
    """Generate one piece with these (already validated) settings; ``play`` it as it comes."""

    settings: MusicSettings
    play: bool = True


@dataclass(frozen=True)
class MusicPiece:
    """A finished (or stopped) piece: everything the pane shows and exports."""

    mode: MusicMode
    #: MIDI mode: the full token text ("<start> … <end>"); ABC mode: the tune with its X: line.
    text: str
    events: tuple[NoteEvent, ...]
    end_ms: float
    #: The piece as MIDI (None in ABC mode when abc2midi could not convert it).
    midi: mido.MidiFile | None
    generated_tokens: int
    tokens_per_second: float
    stop_reason: str
    invalid_tokens: int = 0
    #: ABC mode: why there is no MIDI (one line), or abc2midi's first worked-around problem.
    conversion_problem: str = ""

    @property
    def note_count(self) -> int:
        return sum(1 for e in self.events if e.is_on)


@dataclass(frozen=True)
class MusicStarted:
    run: int
    mode: MusicMode
    #: What the model was prompted with, shown before what it writes (ABC header, continued piece).
    prompt_text: str


@dataclass(frozen=True)
class MusicProgress:
    run: int
    #: Text to append to the token / ABC view.
    text: str
    #: Note events completed since the last progress event (MIDI mode).
    events: tuple[NoteEvent, ...]
    #: Musical time known so far (ms).
    time_ms: float
    generated_tokens: int
    tokens_per_second: float


@dataclass(frozen=True)
class MusicPreview:
    """ABC mode: the complete bars written so far, converted to notes (replaces the last preview).

    An ABC tune becomes notes only through abc2midi, so while it is written the music thread
    converts its complete bars now and then and the piano roll shows them.
    """

    run: int
    events: tuple[NoteEvent, ...]
    end_ms: float


@dataclass(frozen=True)
class MusicFinished:
    run: int
    piece: MusicPiece


@dataclass(frozen=True)
class MusicFailed:
    """The run could not start or broke off; nothing shown so far is lost."""

    run: int
    message: str


MusicEvent = Union[MusicStarted, MusicProgress, MusicPreview, MusicFinished, MusicFailed]


class MusicOutbox(MergingOutbox[MusicEvent]):
    """The music thread's outbox: consecutive progress of one run becomes one event, and only
    the newest ABC preview of a run is kept."""

    def merge(self, waiting: list[MusicEvent], event: MusicEvent) -> MusicEvent | None:
        last = waiting[-1] if waiting else None
        if isinstance(event, MusicProgress) and isinstance(last, MusicProgress) and last.run == event.run:
            waiting[-1] = MusicProgress(
                event.run, last.text + event.text, last.events + event.events, event.time_ms,
                event.generated_tokens, event.tokens_per_second,
            )
            return None
        if isinstance(event, MusicPreview):
            # Each preview is the whole tune so far: an older one still waiting is obsolete.
            waiting[:] = [e for e in waiting if not (isinstance(e, MusicPreview) and e.run == event.run)]
        return event

    def urgent(self, event: MusicEvent) -> bool:
        return isinstance(event, (MusicFinished, MusicFailed))

