"""A piano roll that draws notes as they arrive and follows the music, with the Line API.

Time runs left to right, pitch bottom to top; each terminal line holds two pitch rows (upper
and lower half block), so three octaves fit in 18 lines — and when the music spans more than
the widget can show, each half line covers several neighbouring pitches so that every note
stays visible. Notes take their instrument's colour
(one component class per MIDI-LLM instrument bin, from theme variables), their first cell is
lighter so repeated notes stay distinct, black-key lanes are shaded and whole seconds are
marked. The playhead is a column; with ``follow`` on, the view scrolls to keep it (or, while
nothing plays, the newest note) in sight.

Built for notes arriving continuously from a generator: notes are indexed per pitch, adding
events refreshes only the lines of the pitches they touch, and moving the playhead inside the
view refreshes two columns. A line costs O(width + visible notes of its two pitches).
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from itertools import groupby
from typing import ClassVar, Iterable

from rich.color import Color as RichColor
from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import Binding, BindingType
from textual.geometry import Region
from textual.message import Message
from textual.reactive import reactive
from textual.strip import Strip
from textual.widget import Widget

from engine.music.midi_codec import BIN_BY_CHANNEL, NoteEvent
from engine.music.midi_vocab import INSTRUMENT_BINS

_GUTTER = 4  # pitch labels ("C4 ")
_NOTE_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
_BLACK_KEYS = frozenset({1, 3, 6, 8, 10})
_HALF_BLOCK = "▀"


@dataclass
class _Note:
    start: float
    end: float | None  # None while the note is sounding
    channel: int


def pitch_name(pitch: int) -> str:
    """MIDI pitch → scientific name (60 → "C4")."""
    return f"{_NOTE_NAMES[pitch % 12]}{pitch // 12 - 1}"


def _bin_class(index: int) -> str:
    return f"piano-roll--bin-{index}"


_BIN_COLOURS = (  # chosen so the common pairings (piano/bass/drums/strings) differ in hue
    "$text-muted", "$panel-lighten-3", "$error-darken-2", "$warning-lighten-2", "$success-darken-1",
    "$warning", "$error", "$accent-darken-2", "$primary", "$secondary-lighten-3", "$success-lighten-2",
    "$error-lighten-2", "$primary-lighten-3",
)


class PianoRoll(Widget, can_focus=True):
    """Notes over time for the 13 MIDI-LLM instruments (or any channels), with a playhead."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("left", "scroll_time(-1)", "Earlier", show=False, id="piano_roll.earlier"),
        Binding("right", "scroll_time(1)", "Later", show=False, id="piano_roll.later"),
        Binding("up", "scroll_pitch(1)", "Higher", show=False, id="piano_roll.higher"),
        Binding("down", "scroll_pitch(-1)", "Lower", show=False, id="piano_roll.lower"),
        Binding("plus,equals_sign", "zoom(0.5)", "Zoom in", show=False, id="piano_roll.zoom_in"),
        Binding("minus", "zoom(2)", "Zoom out", show=False, id="piano_roll.zoom_out"),
        Binding("f", "toggle_follow", "Follow", show=False, id="piano_roll.follow"),
        Binding("home", "to_start", "Start", show=False, id="piano_roll.start"),
    ]

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "piano-roll--lane", "piano-roll--black-lane", "piano-roll--grid", "piano-roll--playhead",
        "piano-roll--label", *(_bin_class(b.index) for b in INSTRUMENT_BINS),
    }
    """
    | Class | Description |
    | :- | :- |
    | `piano-roll--lane` | Colour (``color``) of empty white-key lanes. |
    | `piano-roll--black-lane` | Colour of empty black-key lanes. |
    | `piano-roll--grid` | Colour of the whole-second marks. |
    | `piano-roll--playhead` | Colour of the playhead column. |
    | `piano-roll--label` | Style of the pitch labels. |
    | `piano-roll--bin-N` | Colour of instrument bin N (0 percussion … 8 piano … 12 pad). |
    """

    DEFAULT_CSS = """
    PianoRoll {
        height: 1fr;
        min-height: 4;
    }
    PianoRoll > .piano-roll--lane { color: $surface; }
    PianoRoll > .piano-roll--black-lane { color: $background; }
    PianoRoll > .piano-roll--grid { color: $surface-lighten-1; }
    PianoRoll > .piano-roll--playhead { color: $foreground 60%; }
    PianoRoll > .piano-roll--label { color: $text-muted; }
    """ + "\n".join(
        f"    PianoRoll > .{_bin_class(i)} {{ color: {colour}; }}" for i, colour in enumerate(_BIN_COLOURS)
    )

    #: Milliseconds of music per terminal cell (zoom).
    ms_per_cell: reactive[float] = reactive(100.0)
    #: Keep the playhead (or the newest music) in view.
    follow: reactive[bool] = reactive(True)

    class Seek(Message):
        """The user clicked the roll: play from ``position_ms``."""

        def __init__(self, roll: "PianoRoll", position_ms: float) -> None:
            super().__init__()
            self.roll = roll
            self.position_ms = position_ms

        @property
        def control(self) -> "PianoRoll":
            return self.roll

    def __init__(self, *, name: str | None = None, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self._colour_cache: _Palette | None = None
        self._frame_key: tuple | None = None
        self._frame_rows: tuple[list[int], list[int]] = ([], [])
        self._empty_lines: dict[tuple, Strip] = {}
        self._reset()

    def _reset(self) -> None:
        self._starts: list[list[float]] = [[] for _ in range(128)]
        self._notes: list[list[_Note]] = [[] for _ in range(128)]
        self._open: dict[tuple[int, int], _Note] = {}
        self._latest_ms = 0.0
        self._max_duration = 0.0
        self._low_pitch = 128
        self._high_pitch = -1
        self._view_start = 0.0
        self._top_pitch = 83  # highest pitch shown (upper half of line 0)
        self._pitch_step = 1  # pitches per half line
        self._auto_pitch = True
        self._playhead: float | None = None

    # ------------------------------------------------------------------ data

    @property
    def note_count(self) -> int:
        return sum(len(n) for n in self._notes)

    @property
    def latest_ms(self) -> float:
        """The furthest musical time known (last event or horizon)."""
        return self._latest_ms

    @property
    def view_start_ms(self) -> float:
        return self._view_start

    @property
    def playhead_ms(self) -> float | None:
        return self._playhead

    @property
    def top_pitch(self) -> int:
        return self._top_pitch

    @property
    def pitch_step(self) -> int:
        """Pitches per half line (1 unless the music spans more than fits)."""
        return self._pitch_step

    def half_line_pitches(self, half: int) -> range:
        """Pitches drawn in half line ``half`` (0 = upper half of the first line)."""
        high = self._top_pitch - half * self._pitch_step
        low = max(0, high - self._pitch_step + 1)
        return range(high, low - 1, -1) if high >= 0 else range(0)

    def clear(self) -> None:
        """Forget all notes and the playhead (a new piece)."""
        self._reset()
        self.refresh()

    def set_events(self, note_events: Iterable[NoteEvent], end_ms: float | None = None) -> None:
        """Replace the music (e.g. a loaded file)."""
        self.clear()
        self.add_events(note_events, end_ms)

    def add_events(self, note_events: Iterable[NoteEvent], horizon_ms: float | None = None) -> None:
        """Add events in time order (note-ons open notes, note-offs close them); ``horizon_ms``
        is how far the music is known, so sounding notes can be drawn up to it."""
        touched: set[int] = set()
        range_changed = False
        for event in note_events:
            pitch = event.note
            key = (event.channel, pitch)
            sounding = self._open.pop(key, None)
            if sounding is not None:
                sounding.end = max(event.time_ms, sounding.start)
                self._max_duration = max(self._max_duration, sounding.end - sounding.start)
                touched.add(pitch)
            if event.velocity > 0:
                note = _Note(event.time_ms, None, event.channel)
                index = bisect.bisect_right(self._starts[pitch], event.time_ms)
                self._starts[pitch].insert(index, event.time_ms)
                self._notes[pitch].insert(index, note)
                self._open[key] = note
                touched.add(pitch)
                if pitch < self._low_pitch or pitch > self._high_pitch:
                    self._low_pitch = min(self._low_pitch, pitch)
                    self._high_pitch = max(self._high_pitch, pitch)
                    range_changed = True
            self._latest_ms = max(self._latest_ms, event.time_ms)
        if horizon_ms is not None and horizon_ms > self._latest_ms:
            self._latest_ms = horizon_ms
        if self._open:
            touched.update(pitch for _, pitch in self._open)
            for note in self._open.values():
                self._max_duration = max(self._max_duration, self._latest_ms - note.start)
        if range_changed and self._auto_pitch and self._fit_pitch_range():
            self.refresh()
            self._follow()
            return
        if self._follow():
            return  # the view moved: everything was refreshed
        self._refresh_pitches(touched)

    def set_playhead(self, position_ms: float | None) -> None:
        """Move the playhead (None hides it); cheap when it stays inside the view."""
        old = self._playhead
        self._playhead = position_ms
        if self._follow():
            return
        for value in (old, position_ms):
            column = self._column_of(value)
            if column is not None:
                self.refresh(Region(column, 0, 1, self.size.height))

    # ------------------------------------------------------------------ view

    @property
    def _cells(self) -> int:
        return max(1, self.size.width - _GUTTER)

    def _column_of(self, time_ms: float | None) -> int | None:
        if time_ms is None or not self.size.width:
            return None
        column = math.floor((time_ms - self._view_start) / self.ms_per_cell)
        return _GUTTER + column if 0 <= column < self._cells else None

    def _follow(self) -> bool:
        """Scroll so the playhead (or the newest music) stays in view; True if the view moved."""
        if not self.follow or not self.size.width:
            return False
        span = self._cells * self.ms_per_cell
        if self._playhead is not None:
            target = self._playhead - 0.25 * span
        else:
            target = self._latest_ms - 0.85 * span
        start = max(0.0, math.floor(target / self.ms_per_cell) * self.ms_per_cell)
        if start == self._view_start:
            return False
        self._view_start = start
        self.refresh()
        return True

    def _fit_pitch_range(self) -> bool:
        """Show every used pitch, centred; several pitches per half line if they do not fit."""
        if self._high_pitch < 0:
            return False
        halves = 2 * max(1, self.size.height)
        used = self._high_pitch - self._low_pitch + 1
        step = max(1, math.ceil(used / halves))
        top = self._high_pitch + (halves * step - used) // 2
        top = max(min(127, top), min(127, halves * step - 1))
        if (top, step) == (self._top_pitch, self._pitch_step):
            return False
        self._top_pitch, self._pitch_step = top, step
        return True

    def _refresh_pitches(self, pitches: set[int]) -> None:
        width = self.size.width
        for pitch in pitches:
            line = (self._top_pitch - pitch) // (2 * self._pitch_step)
            if 0 <= line < self.size.height:
                self.refresh(Region(0, line, width, 1))

    def on_resize(self, _event: events.Resize) -> None:
        if self._auto_pitch:
            self._fit_pitch_range()
        self._follow()
        self.refresh()

    def watch_ms_per_cell(self, _old: float, _new: float) -> None:
        self._follow()
        self.refresh()

    def watch_follow(self, follow: bool) -> None:
        if follow:
            self._follow()

    # ------------------------------------------------------------------ actions

    def action_scroll_time(self, direction: int) -> None:
        self.follow = False
        step = max(1, self._cells // 4) * self.ms_per_cell
        self._view_start = max(0.0, self._view_start + direction * step)
        self.refresh()

    def action_scroll_pitch(self, direction: int) -> None:
        self._auto_pitch = False
        lowest_top = min(127, 2 * max(1, self.size.height) * self._pitch_step - 1)
        self._top_pitch = max(lowest_top, min(127, self._top_pitch + 6 * self._pitch_step * direction))
        self.refresh()

    def action_zoom(self, factor: float) -> None:
        self.ms_per_cell = min(2000.0, max(10.0, self.ms_per_cell * factor))

    def action_toggle_follow(self) -> None:
        self.follow = not self.follow

    def action_to_start(self) -> None:
        self.follow = False
        self._view_start = 0.0
        self.refresh()

    def on_click(self, event: events.Click) -> None:
        if event.x >= _GUTTER:
            self.post_message(self.Seek(self, self._view_start + (event.x - _GUTTER) * self.ms_per_cell))

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._colour_cache = None
        if hasattr(self, "_empty_lines"):  # also called while the widget is being built
            self._empty_lines.clear()

    # ------------------------------------------------------------------ drawing

    # Cells are drawn as palette indices (cheap to copy, compare and group) and turned into
    # styles once per run of equal cells; everything that is the same for every line of a
    # frame (grid, playhead, empty lanes) is computed once per frame.

    def _palette(self) -> _Palette:
        if self._colour_cache is None:
            def colour(name: str) -> RichColor:
                return self.get_component_rich_style(f"piano-roll--{name}").color or RichColor.default()

            notes = [colour(f"bin-{b.index}") for b in INSTRUMENT_BINS]
            colours = [colour("lane"), colour("black-lane"), colour("grid"), colour("playhead")]
            colours += notes + [_lighter(c) for c in notes] + [RichColor.default()]
            self._colour_cache = _Palette(colours, self.get_component_rich_style("piano-roll--label"))
        return self._colour_cache

    def _frame(self, cells: int) -> tuple[list[int], list[int]]:
        """Empty white-key and black-key lanes of this frame (grid marks and playhead drawn)."""
        key = (self._view_start, self.ms_per_cell, cells, self._playhead)
        if self._frame_key != key:
            ms = self.ms_per_cell
            # A whole second starts in this cell (when cells are shorter than a second).
            second = [math.floor((self._view_start + c * ms) / 1000) for c in range(-1, cells)]
            grid = [ms < 1000 and second[c] != second[c + 1] for c in range(cells)]
            white = [_GRID if mark else _LANE for mark in grid]
            black = [_GRID if mark else _BLACK_LANE for mark in grid]
            playhead = self._column_of(self._playhead)
            if playhead is not None:
                white[playhead - _GUTTER] = black[playhead - _GUTTER] = _PLAYHEAD
            self._frame_key, self._frame_rows = key, (white, black)
            self._empty_lines.clear()
        return self._frame_rows

    def _paint_notes(self, row: list[int], pitch: int) -> bool:
        """Draw the notes of ``pitch`` into ``row``; False if none is in view."""
        if not 0 <= pitch < 128 or not self._notes[pitch]:
            return False
        painted = False
        ms = self.ms_per_cell
        view_start = self._view_start
        cells = len(row)
        view_end = view_start + cells * ms
        starts = self._starts[pitch]
        first = bisect.bisect_left(starts, view_start - self._max_duration - ms)
        last = bisect.bisect_left(starts, view_end)
        for note in self._notes[pitch][first:last]:
            end = note.end if note.end is not None else max(self._latest_ms, note.start)
            end = max(end, note.start + 1.0)  # zero-length notes still show one cell
            if end <= view_start:
                continue
            c0 = max(0, math.floor((note.start - view_start) / ms))
            c1 = min(cells, math.ceil((end - view_start) / ms))
            if c1 <= c0:
                continue
            colour = _NOTE + BIN_BY_CHANNEL.get(note.channel, note.channel % len(INSTRUMENT_BINS))
            row[c0:c1] = [colour] * (c1 - c0)
            if note.start >= view_start:
                row[c0] = colour + len(INSTRUMENT_BINS)  # the lighter onset cell
            painted = True
        return painted

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        if width <= 0:
            return Strip.blank(0)
        palette = self._palette()
        cells = max(0, width - _GUTTER)
        white, black = self._frame(cells)
        upper_pitches, lower_pitches = self.half_line_pitches(2 * y), self.half_line_pitches(2 * y + 1)
        halves = []
        kinds = []
        painted = False
        for pitches in (upper_pitches, lower_pitches):
            if not pitches:
                halves.append([_BLANK] * cells)
                kinds.append(None)
                continue
            is_black = len(pitches) == 1 and pitches[0] % 12 in _BLACK_KEYS
            row = (black if is_black else white)[:]
            for pitch in reversed(pitches):  # the highest pitch of a group is drawn last
                painted = self._paint_notes(row, pitch) or painted
            halves.append(row)
            kinds.append(is_black)
        label = self._label(upper_pitches, lower_pitches, palette.label)
        empty_key = (kinds[0], kinds[1], label.text)
        if not painted and empty_key in self._empty_lines:
            return self._empty_lines[empty_key]  # most lines of a frame are empty lanes
        segments = [label]
        style_of = palette.style
        for pair, run in groupby(zip(halves[0], halves[1])):
            segments.append(Segment(_HALF_BLOCK * len(list(run)), style_of(pair)))
        strip = Strip(segments, width)
        if not painted:
            self._empty_lines[empty_key] = strip
        return strip

    @staticmethod
    def _label(upper: range, lower: range, style: Style) -> Segment:
        for pitch in (*upper, *lower):
            if pitch % 12 == 0:
                return Segment(pitch_name(pitch).ljust(_GUTTER)[:_GUTTER], style)
        return Segment(" " * _GUTTER, style)


# Palette indices: lanes, then the 13 instrument colours, their lighter onsets, and blank.
_LANE, _BLACK_LANE, _GRID, _PLAYHEAD, _NOTE = 0, 1, 2, 3, 4
_BLANK = _NOTE + 2 * len(INSTRUMENT_BINS)


class _Palette:
    """Colours by index, and the half-block style of each (upper, lower) pair, made once."""

    def __init__(self, colours: list[RichColor], label: Style) -> None:
        self.colours = colours
        self.label = label
        self._styles: dict[tuple[int, int], Style] = {}

    def style(self, pair: tuple[int, int]) -> Style:
        style = self._styles.get(pair)
        if style is None:
            style = self._styles[pair] = Style(color=self.colours[pair[0]], bgcolor=self.colours[pair[1]])
        return style

    def colour(self, index: int) -> RichColor:
        return self.colours[index]


def _lighter(colour: RichColor) -> RichColor:
    """The colour blended 35 % towards white: marks where a note starts."""
    triplet = colour.get_truecolor()
    return RichColor.from_rgb(*(value + (255 - value) * 0.35 for value in triplet))
