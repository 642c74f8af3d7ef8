"""Input fields that never hand a control character to the terminal.

Textual draws a field's text as it is: a path typed, pasted or filled in from a file name, a
message loaded from a session file into the prompt for editing, a system prompt from the config
file could carry ``ESC ] 0 ; … BEL`` to the terminal. These fields show such characters as their
pictures (see :mod:`tui.terminal_text`), one for one, so what is stored and sent stays exactly
what was typed while the screen shows what is there.
"""

from __future__ import annotations

from typing import Any, Iterable

from rich.console import RenderableType
from rich.text import Text
from textual.suggester import Suggester
from textual.widgets import Input, Select, TextArea

from tui.safe_text import ControlPictures, plain
from tui.terminal_text import has_controls, visible_controls_same_length


class ShowableSuggestions(Suggester):
    """Passes on another suggester's completions, except those with control characters.

    Textual draws a suggestion's text raw; a file named ``ESC]0;…`` would reach the terminal as
    soon as the user typed its first letters. Such a name cannot be typed anyway.
    """

    def __init__(self, inner: Suggester) -> None:
        super().__init__(use_cache=False, case_sensitive=inner.case_sensitive)
        self.inner = inner

    async def get_suggestion(self, value: str) -> str | None:
        suggestion = await self.inner.get_suggestion(value)
        return None if suggestion is None or has_controls(suggestion) else suggestion


class SafeInput(Input):
    """An ``Input`` that shows control characters as pictures and suggests only showable text."""

    def __init__(self, *args: Any, suggester: Suggester | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("highlighter", ControlPictures())
        super().__init__(
            *args, suggester=ShowableSuggestions(suggester) if suggester is not None else None, **kwargs,
        )


class SafeTextArea(TextArea):
    """A ``TextArea`` that shows control characters as pictures (the document keeps them)."""

    def get_line(self, line_index: int) -> Text:
        line = self.document.get_line(line_index)
        return Text(visible_controls_same_length(line), end="", no_wrap=True)


class SafeSelect(Select):  # type: ignore[type-arg]
    """A ``Select`` whose option labels are taken literally (port names come from other programs)."""

    def __init__(self, options: Iterable[tuple[RenderableType, Any]], **kwargs: Any) -> None:
        super().__init__(_literal_labels(options), **kwargs)

    def set_options(self, options: Iterable[tuple[RenderableType, Any]]) -> None:
        super().set_options(_literal_labels(options))


def _literal_labels(options: Iterable[tuple[RenderableType, Any]]) -> list[tuple[RenderableType, Any]]:
    return [(plain(label) if isinstance(label, str) else label, value) for label, value in options]
