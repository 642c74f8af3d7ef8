"""PianoRoll: where notes land, colours, playhead, following, incremental refresh, snapshot."""

from __future__ import annotations

from pathlib import Path

from rich.color import Color
from textual.app import App, ComposeResult
from textual.geometry import Region

from engine.music import midi_codec as codec
from tui.widgets.piano_roll import PianoRoll, pitch_name

PIECE = (
    "<start> p:24:9 b:30:8 pi:3c:a pi:40:9 pi:43:9 t62 p:24:0 b:30:0 pi:3c:0 pi:40:0 pi:43:0 "
    "v:48:8 b:2b:8 pi:3e:a t62 v:48:0 pi:3e:0 pi:3e:a t31 pi:3e:0 b:2b:0 <end>"
)
GUTTER = 4


class RollHost(App):
    CSS = "PianoRoll { height: 1fr; }"

    def __init__(self) -> None:
        super().__init__()
        self.seeks: list[float] = []

    def compose(self) -> ComposeResult:
        yield PianoRoll(id="roll")

    def on_piano_roll_seek(self, message: PianoRoll.Seek) -> None:
        self.seeks.append(message.position_ms)


def cells(roll: PianoRoll, y: int) -> list[tuple[Color, Color]]:
    """(upper colour, lower colour) of each time cell of line ``y``."""
    out: list[tuple[Color, Color]] = []
    for segment in list(roll.render_line(y))[1:]:  # skip the label
        out.extend([(segment.style.color, segment.style.bgcolor)] * len(segment.text))
    return out


def cell_of(roll: PianoRoll, pitch: int, column: int) -> Color:
    for half in range(2 * roll.size.height):
        if pitch in roll.half_line_pitches(half):
            upper, lower = cells(roll, half // 2)[column]
            return upper if half % 2 == 0 else lower
    raise AssertionError(f"pitch {pitch} not shown")


def colour(roll: PianoRoll, name: str) -> Color:
    return roll.get_component_rich_style(f"piano-roll--{name}").color


async def test_notes_are_drawn_in_their_instrument_colour_and_time_cells() -> None:
    app = RollHost()
    async with app.run_test(size=(44, 14)) as pilot:
        roll = app.query_one(PianoRoll)
        roll.follow = False  # stay at the start (following would show the end pause)
        result = codec.decode_tokens(PIECE)
        roll.add_events(result.events, result.end_ms)
        await pilot.pause()
        piano, bass, lane = colour(roll, "bin-8"), colour(roll, "bin-4"), colour(roll, "lane")
        assert piano != bass
        # C4 (60) sounds 0–496 ms: cells 0–4 at 100 ms per cell; the first cell is lighter.
        assert cell_of(roll, 60, 0) not in (piano, lane)
        assert [cell_of(roll, 60, c) for c in range(1, 5)] == [piano] * 4
        assert cell_of(roll, 60, 5) == lane
        assert cell_of(roll, 48, 2) == bass  # b:30 → pitch 48 on the bass channel
        # D4 (62) is struck twice (496 and 992 ms): two onsets, each lighter than the body.
        onsets = [c for c in range(4, 14) if cell_of(roll, 62, c) not in (piano, lane, colour(roll, "grid"))]
        assert onsets == [4, 9]
        assert pitch_name(60) == "C4" and pitch_name(21) == "A0"


async def test_all_pitches_stay_visible_when_the_range_is_wide() -> None:
    app = RollHost()
    async with app.run_test(size=(30, 6)) as pilot:
        roll = app.query_one(PianoRoll)
        roll.add_events(codec.decode_tokens("pi:15:a pi:6c:a t10 pi:15:0 pi:6c:0").events)
        await pilot.pause()
        assert roll.pitch_step > 1
        shown = [p for half in range(12) for p in roll.half_line_pitches(half)]
        assert 21 in shown and 108 in shown
        assert cell_of(roll, 21, 0) != colour(roll, "lane") and cell_of(roll, 108, 0) != colour(roll, "lane")


async def test_playhead_column_and_follow() -> None:
    app = RollHost()
    async with app.run_test(size=(44, 10)) as pilot:
        roll = app.query_one(PianoRoll)
        roll.add_events(codec.decode_tokens("pi:3c:a " + "t125 " * 30 + "pi:3c:0").events)
        roll.set_playhead(700)
        await pilot.pause()
        assert roll.view_start_ms == 0
        assert cell_of(roll, 61, 7) == colour(roll, "playhead")  # an empty lane at 700 ms
        roll.set_playhead(20_000)  # far ahead: the view jumps so the playhead sits at a quarter
        await pilot.pause()
        span = 40 * roll.ms_per_cell
        assert roll.view_start_ms == 20_000 - 0.25 * span
        roll.focus()
        await pilot.press("left")
        assert not roll.follow and roll.view_start_ms < 20_000 - 0.25 * span
        await pilot.press("f")
        assert roll.follow and roll.view_start_ms == 20_000 - 0.25 * span
        await pilot.press("minus")
        assert roll.ms_per_cell == 200


async def test_without_playhead_the_view_follows_the_newest_music() -> None:
    app = RollHost()
    async with app.run_test(size=(44, 10)) as pilot:
        roll = app.query_one(PianoRoll)
        decoder = codec.TokenDecoder()
        for word in ("pi:3c:a " + "t125 " * 12 + "pi:3c:0 pi:40:a t50").split():
            roll.add_events(decoder.feed_text(word), decoder.time_ms)
        await pilot.pause()
        newest = decoder.time_ms  # 12.4 s; E4 has sounded since 12 s
        assert roll.view_start_ms <= newest < roll.view_start_ms + 40 * roll.ms_per_cell
        # The note that is still sounding is drawn up to the horizon, not beyond.
        horizon_cell = int((newest - roll.view_start_ms) // roll.ms_per_cell)
        assert cell_of(roll, 64, horizon_cell - 1) == colour(roll, "bin-8")
        assert cell_of(roll, 64, horizon_cell) != colour(roll, "bin-8")


async def test_new_notes_refresh_only_their_lines(monkeypatch) -> None:
    app = RollHost()
    async with app.run_test(size=(44, 12)) as pilot:
        roll = app.query_one(PianoRoll)
        roll.add_events(codec.decode_tokens("pi:30:a pi:50:a t10 pi:30:0 pi:50:0").events)
        await pilot.pause()
        roll.follow = False
        calls: list[tuple] = []
        monkeypatch.setattr(roll, "refresh", lambda *regions, **kw: calls.append(regions))
        roll.add_events([codec.NoteEvent(200, 7, 64, 90)])
        line = (roll.top_pitch - 64) // (2 * roll.pitch_step)
        assert calls == [(Region(0, line, 44, 1),)]
        calls.clear()
        roll.set_playhead(300)
        roll.set_playhead(400)
        assert calls[-2:] == [(Region(GUTTER + 3, 0, 1, 12),), (Region(GUTTER + 4, 0, 1, 12),)]


async def test_click_asks_to_seek() -> None:
    app = RollHost()
    async with app.run_test(size=(44, 10)) as pilot:
        roll = app.query_one(PianoRoll)
        roll.add_events(codec.decode_tokens("pi:3c:a t125 pi:3c:0").events)
        await pilot.click(PianoRoll, offset=(GUTTER + 6, 2))
        await pilot.pause()
    assert app.seeks == [600]


def test_piano_roll_snapshot(snap_compare) -> None:
    async def show(pilot) -> None:
        roll = pilot.app.query_one(PianoRoll)
        result = codec.decode_tokens(PIECE)
        roll.add_events(result.events, result.end_ms)
        roll.set_playhead(600)
        await pilot.pause()

    assert snap_compare(RollHost(), terminal_size=(50, 14), run_before=show)
