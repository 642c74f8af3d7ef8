"""Progress of a model load: bytes read from disk, then the (indeterminate) build step."""

from __future__ import annotations

from pathlib import Path

from tui.protocol import ModelLoading
from tui.safe_text import plain
from tui.widgets.progress_line import ProgressLine
from tui.widgets.status_line import human_bytes


class LoadProgress(ProgressLine):
    def __init__(self, id: str | None = None) -> None:  # noqa: A002
        super().__init__(label_id="load-label", bar_id="load-bar", id=id)

    def show_loading(self, event: ModelLoading) -> None:
        name = Path(event.path).name
        size = f" ({human_bytes(event.size_bytes)})" if event.size_bytes else ""
        self.show(plain(f"Loading {event.role} model {name}{size}: {event.stage}"), event.fraction)
