"""User-, model- and file-supplied text for widgets: always shown as text, never parsed as markup.

A string handed to ``Static``, ``Label``, ``notify``, a ``DataTable`` cell or a Rich table is
read as markup: ``[/]`` in a chat message raised ``MarkupError`` (in the resume dialog, at every
start), ``[b]`` in a path vanished, ``[@click=quit]`` would be a live action. And control
characters pass through markup and text alike to the terminal. So everything we did not write
ourselves reaches a widget through :func:`plain` (or :func:`plain_content` where Textual wants
``Content``), which makes its controls visible (:mod:`tui.terminal_text`) and never parses it.

Our own fixed texts may keep their markup; a value interpolated into one must not: build a
``Text`` and ``append`` the value instead (``Text.append`` of a string never parses markup).
"""

from __future__ import annotations

from rich.highlighter import Highlighter
from rich.style import StyleType
from rich.text import Text
from textual.content import Content

from tui.terminal_text import has_controls, visible_controls, visible_controls_same_length


def plain(text: object, style: StyleType = "") -> Text:
    """``text`` (anything; ``str()`` of it) as Rich text, literally, with its controls made visible."""
    return Text(visible_controls(str(text)), style=style, end="")


def plain_content(text: object) -> Content:
    """:func:`plain` for the Textual APIs that take ``Content`` (or markup) only."""
    return Content(visible_controls(str(text)))


class ControlPictures(Highlighter):
    """Shows control characters in an input field as pictures, one for one (the cursor stays put)."""

    def highlight(self, text: Text) -> None:
        if has_controls(text.plain):
            text.plain = visible_controls_same_length(text.plain)
