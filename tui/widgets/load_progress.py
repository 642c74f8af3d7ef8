"""Progress of a model load: bytes read from disk, then the (indeterminate) build step."""

from __future__ import annotations

from pathlib import Path

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Label, ProgressBar

from tui.protocol import ModelLoading
from tui.safe_text import plain
from tui.widgets.status_line import human_bytes


class LoadProgress(Horizontal):
    DEFAULT_CSS = """
    LoadProgress {
        height: 1;
        padding: 0 1;
        background: $boost;
        display: none;
    }
    LoadProgress.-active { display: block; }
    LoadProgress > Label { width: auto; margin-right: 2; }
    LoadProgress > ProgressBar { width: 1fr; }
    """

    def compose(self) -> ComposeResult:
        yield Label("", id="load-label")
        yield ProgressBar(total=100, show_eta=False, id="load-bar")

    def show(self, event: ModelLoading) -> None:
        self.add_class("-active")
        name = Path(event.path).name
        size = f" ({human_bytes(event.size_bytes)})" if event.size_bytes else ""
        self.query_one("#load-label", Label).update(plain(f"Loading {event.role} model {name}{size}: {event.stage}"))
        bar = self.query_one(ProgressBar)
        if event.fraction is None:
            bar.update(total=None)
        else:
            bar.update(total=100, progress=round(event.fraction * 100, 1))

    def done(self) -> None:
        self.remove_class("-active")
