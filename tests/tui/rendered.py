"""What a Textual app puts on the terminal, as text: for tests of what the user sees."""

from __future__ import annotations

from typing import Any

#: Markup-like text that must show as typed: it crashed (``[/]``, ``[x=``), vanished (``[b]``) or
#: could have run an action (``[@click=quit]``) when a widget read it as markup.
MARKUP = ("[/]", "[b]", "[x=", "[@click=quit]")

#: Terminal control sequences from model output or files, and what they must show as instead.
SEQUENCES = {
    "OSC title": ("\x1b]0;PWNED\x07", "␛]0;PWNED␇"),
    "CSI clear": ("\x1b[2J", "␛[2J"),
    "DCS": ("\x1bP+q544e\x1b\\", "␛P+q544e␛\\"),
    "OSC 52 clipboard": ("\x1b]52;c;cHduZWQ=\x07", "␛]52;c;cHduZWQ=␇"),
    "C1 CSI": ("\x9b31m", "\ufffd31m"),
    "DEL": ("a\x7fb", "a␡b"),
}


def screen_text(app: Any) -> str:
    """Every character of the current screen (and the screens under a dialog), line by line,
    exactly as the compositor hands it to the terminal driver."""
    update = app.screen._compositor.render_update(full=True, screen_stack=app._background_screens)
    return "\n".join("".join(segment.text for strip in line for segment in strip) for line in update.strips)


def is_terminal_control(char: str) -> bool:
    """C0 controls but newline and tab, DEL and the C1 controls: what a terminal acts on.
    (Written out here rather than taken from tui.terminal_text: the test's own definition.)"""
    code = ord(char)
    return (code < 0x20 and char not in "\n\t") or 0x7F <= code <= 0x9F


def controls_in(text: str) -> list[str]:
    """The control characters a terminal would act on, as ``repr``s (for a readable failure)."""
    return sorted({repr(char) for char in text if is_terminal_control(char)})
