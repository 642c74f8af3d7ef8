"""Fuzz the display path: any text, markup-like brackets and control characters included, goes
through the sanitizer and the widgets that show user, model and file text.

Invariants: nothing raises; no control character but newline and tab reaches what the terminal
is sent; every other character is shown, in order (where the widget shows text as text rather
than as Markdown). See tui/terminal_text.py for the policy and issue 19 for why.
"""

from __future__ import annotations

import asyncio
import io
import unicodedata

from hypothesis import given, settings
from hypothesis import strategies as st
from textual.app import App, ComposeResult
from textual.containers import Vertical
from textual.widgets import DataTable, Label, Static

from tests.fuzz.conftest import FUZZ
from tests.fuzz.mutations import no_hang
from tests.tui.rendered import controls_in, is_terminal_control, screen_text
from tui.protocol import ModelSummary
from tui.safe_text import plain
from tui.screens.resume_prompt import ResumePrompt
from tui.terminal_text import TerminalSafeWriter, visible_controls
from tui.widgets.message_view import MessageView
from tui.widgets.model_bar import ModelBar
from tui.widgets.safe_fields import SafeInput, SafeTextArea

#: Pieces a hostile or unlucky text is made of.
FRAGMENTS = [
    "[/]", "[b]", "[/b]", "[x=", "[@click=quit]", "[link=x]", "\\[", "$x", "[on red]",
    "\x1b]0;PWNED\x07", "\x1b]52;c;cHduZWQ=\x07", "\x1b[2J", "\x1bP+q544e\x1b\\", "\x9b31m", "\x7f",
    "\r\n", "\r", "\t", "\n", "音楽", "🎵",
]

#: Single characters: printable ASCII, every C0/C1 control and DEL, and printable BMP text that
#: takes one or two cells (combining and zero-width characters are left out: how a terminal
#: composes them is not what is tested here).
CHARACTERS = st.one_of(
    st.characters(min_codepoint=0x20, max_codepoint=0x7E),
    st.characters(min_codepoint=0x00, max_codepoint=0x1F),
    st.characters(min_codepoint=0x7F, max_codepoint=0x9F),
    st.characters(min_codepoint=0xA0, max_codepoint=0xFFFF,
                  exclude_categories=("Mn", "Me", "Mc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp")),
)

TEXT = st.lists(st.one_of(st.text(CHARACTERS, max_size=6), st.sampled_from(FRAGMENTS)), max_size=10).map("".join)


def shown_characters(text: str) -> str:
    """What must be visible of ``text`` once shown: every character but whitespace, its
    control characters as the sanitizer shows them."""
    return "".join(char for char in visible_controls(text) if not char.isspace())


# ---------------------------------------------------------------------------------- the sanitizer


@settings(FUZZ)
@given(TEXT)
def test_the_sanitizer_maps_each_control_to_one_visible_character(text: str) -> None:
    shown = visible_controls(text)
    assert controls_in(shown) == []
    expected = text.replace("\r\n", "\n")  # a CR LF pair is a line break; all else is one for one
    assert len(shown) == len(expected)
    for before, after in zip(expected, shown):
        if is_terminal_control(before):
            assert after == "\ufffd" or unicodedata.name(after).startswith("SYMBOL FOR"), (before, after)
        else:
            assert after == before


@settings(FUZZ)
@given(TEXT, st.lists(st.integers(0, 80), max_size=8))
def test_a_terminal_stream_written_in_pieces_shows_what_the_whole_shows(text: str, cuts: list[int]) -> None:
    """``generate`` writes a reply a few characters at a time; a CR LF may be split anywhere."""
    terminal = io.StringIO()
    writer = TerminalSafeWriter(terminal)
    edges = sorted({0, len(text), *(c for c in cuts if c < len(text))})
    for start, end in zip(edges, edges[1:]):
        writer.write(text[start:end])
    writer.finish()
    assert terminal.getvalue() == visible_controls(text)


# ---------------------------------------------------------------------------------- the widgets


class Showcase(App[None]):
    """The widgets that show text we did not write, each on its own full-width rows."""

    CSS = "Showcase Vertical > * { width: 100%; height: auto; } #md { max-height: 12; }"

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(plain(self.text), id="static")
            yield Label(plain(self.text), id="label")
            yield SafeInput(self.text, id="input")
            yield SafeTextArea(self.text, id="textarea")
            yield DataTable(id="table")
            yield ModelBar(id="bar")
            yield MessageView("user", 0, self.text, id="md")
            yield MessageView("assistant", 0, streaming=True, id="streamed")

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns("You")
        table.add_row(plain(self.text))
        summary = ModelSummary("chat", self.text, "/m.pth", "cpu", "fp32", 1, 64, 1, 64, 256, 1, 1024, "bytes",
                               "torch", False)
        self.query_one(ModelBar).set_model(summary)


def region_text(app: App, widget_id: str) -> str:
    """The characters on the screen rows a widget occupies (each widget has its own rows)."""
    region = app.query_one(f"#{widget_id}").region
    return "".join(screen_text(app).split("\n")[region.y:region.bottom])


async def show(text: str) -> None:
    app = Showcase(text)
    async with app.run_test(size=(100, 70)) as pilot:
        await pilot.pause()
        streamed = app.query_one("#streamed", MessageView)
        middle = len(text) // 2
        await streamed.append(text[:middle])  # a reply arrives in pieces
        await streamed.append(text[middle:])
        await pilot.pause()
        everything = screen_text(app)
        assert controls_in(everything) == [], f"{text!r} reached the terminal as {controls_in(everything)}"
        want = shown_characters(text)
        for widget_id in ("static", "label"):
            got = "".join(char for char in region_text(app, widget_id) if not char.isspace())
            assert got == want, f"{widget_id} showed {got!r} for {text!r}"

        app.push_screen(ResumePrompt(text, text))
        await pilot.pause()
        await pilot.pause()
        dialog = screen_text(app)
        assert controls_in(dialog) == []
        description = "".join(char for char in str(app.screen.query_one("#resume-description").render())
                              if not char.isspace())
        assert description == want
        assert app.is_running


@settings(FUZZ, max_examples=max(8, FUZZ.max_examples // 2))
@given(TEXT)
def test_widgets_show_any_text_literally_and_no_control_reaches_the_terminal(text: str) -> None:
    no_hang(asyncio.run, show(text))
