"""One line under the panes for work that takes a while: what it is, and how far it got."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Label, ProgressBar


class ProgressLine(Horizontal):
    """A label and a progress bar on one line, hidden until :meth:`show` is called.

    The model load and the model downloads each have one, with their own element ids, so both
    can show at once and tests can tell them apart.
    """

    DEFAULT_CSS = """
    ProgressLine {
        height: 1;
        padding: 0 1;
        background: $boost;
        display: none;
    }
    ProgressLine.-active { display: block; }
    ProgressLine > Label { width: auto; margin-right: 2; }
    ProgressLine > ProgressBar { width: 1fr; }
    """

    def __init__(self, *, label_id: str, bar_id: str, id: str | None = None) -> None:  # noqa: A002
        super().__init__(id=id)
        self._label = Label("", id=label_id)
        self._bar = ProgressBar(total=100, show_eta=False, id=bar_id)

    def compose(self) -> ComposeResult:
        yield self._label
        yield self._bar

    def show(self, text: Text, fraction: float | None) -> None:
        """Show ``text`` (already safe for display) and ``fraction`` done, or an indeterminate bar."""
        self.add_class("-active")
        self._label.update(text)
        if fraction is None:
            self._bar.update(total=None)
        else:
            self._bar.update(total=100, progress=round(fraction * 100, 1))

    def hide(self) -> None:
        self.remove_class("-active")
