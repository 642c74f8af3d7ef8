"""The music pane's frame: piano roll, token text, transport with port picker, settings.

The music engine and its widgets (piano roll, transport, port picker) are built separately; this
pane gives each a named region so they slot in with :meth:`MusicPane.mount_in`. What exists
already is shown for real: the loaded music model and the kind of tokens it speaks.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widget import Widget
from textual.widgets import Static

from tui.protocol import ModelSummary
from tui.widgets.model_bar import describe

#: region id → (title, what will live there).
REGIONS: dict[str, tuple[str, str]] = {
    "piano-roll-region": ("Piano roll", "Notes appear here as the model writes them, with a playhead."),
    "token-text-region": ("Tokens", "The model's MIDI tokens or ABC text, as generated."),
    "transport-region": ("Transport · output port", "Generate, play/pause, stop, replay; choose the MIDI port."),
    "music-settings-region": ("Settings", "Mode, control codes, length, piano-only, seed."),
}

MODES = {"midi": "MIDI tokens (live playback)", "abc": "ABC notation (converted with abc2midi)"}


class MusicPane(Vertical):
    DEFAULT_CSS = """
    MusicPane { height: 1fr; }
    MusicPane .region { border: round $panel-lighten-2; border-title-color: $primary; padding: 0 1; }
    MusicPane #music-main { height: 2fr; }
    MusicPane #music-controls { height: 1fr; min-height: 9; }
    MusicPane #piano-roll-region { width: 3fr; }
    MusicPane #token-text-region { width: 2fr; }
    MusicPane #transport-region { width: 1fr; }
    MusicPane #music-settings-region { width: 1fr; }
    MusicPane .region-pending { color: $text-muted; text-style: italic; }
    MusicPane #music-model { height: auto; margin-bottom: 1; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.model: ModelSummary | None = None
        self.status = "loading the music model…"

    def compose(self) -> ComposeResult:
        with Horizontal(id="music-main"):
            yield self._region("piano-roll-region")
            yield self._region("token-text-region")
        with Horizontal(id="music-controls"):
            yield self._region("transport-region")
            yield self._region("music-settings-region", Static(self._model_text(), id="music-model"))

    def _region(self, region_id: str, *extra: Widget) -> Vertical:
        title, purpose = REGIONS[region_id]
        region = Vertical(*extra, Static(f"{purpose}\n(arrives with music generation)", classes="region-pending"),
                          id=region_id, classes="region")
        region.border_title = title
        return region

    def _model_text(self) -> str:
        m = self.model
        if m is None:
            return f"Music model: {self.status}"
        mode = MODES.get(m.tokenizer, f"{m.tokenizer} tokens (not a music vocabulary)")
        demo = " — built-in demo" if m.demo else ""
        return f"Music model: {describe(m)}{demo}\nMode: {mode}"

    def set_model(self, summary: ModelSummary) -> None:
        self.model = summary
        self.query_one("#music-model", Static).update(self._model_text())

    def set_status(self, status: str) -> None:
        self.status = status
        if self.model is None:
            self.query_one("#music-model", Static).update(self._model_text())

    async def mount_in(self, region_id: str, widget: Widget) -> None:
        """Put a finished widget in its region, replacing the region's placeholder."""
        region = self.query_one(f"#{region_id}", Vertical)
        await region.query(".region-pending").remove()
        await region.mount(widget)
