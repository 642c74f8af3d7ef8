"""The header: which chat and music models are loaded, on which device and in which dtype.

For the built-in demo models it says plainly that they are small and how to load real weights,
so nobody mistakes a 1 MB demo for what RWKV-7 can do.
"""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from tui.protocol import ModelSummary
from tui.safe_text import plain


def describe(summary: ModelSummary) -> str:
    size = f"{summary.n_params / 1e6:.1f}M" if summary.n_params < 1e9 else f"{summary.n_params / 1e9:.2f}B"
    return f"{summary.name} ({size}, {summary.n_layer}×{summary.n_embd}, {summary.tokenizer}) · {summary.device} · {summary.dtype}"


class ModelBar(Static):
    DEFAULT_CSS = """
    ModelBar {
        height: auto;
        max-height: 2;
        padding: 0 1;
        background: $primary-background;
        color: $foreground;
    }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.chat: ModelSummary | None = None
        self.music: ModelSummary | None = None
        self.chat_status = "loading…"
        self.music_status = "loading…"

    def on_mount(self) -> None:
        self.update(self.render_bar())

    def set_model(self, summary: ModelSummary) -> None:
        if summary.role == "chat":
            self.chat = summary
        else:
            self.music = summary
        self.update(self.render_bar())

    def set_status(self, role: str, status: str) -> None:
        """Text shown for a role while no model of it is loaded (loading…, none)."""
        if role == "chat":
            self.chat_status = status
        else:
            self.music_status = status
        self.update(self.render_bar())

    def render_bar(self) -> Text:
        text = Text()
        text.append("rwkv-tui", style="bold")
        text.append("  chat: ")
        text.append(plain(describe(self.chat) if self.chat else self.chat_status, "bold" if self.chat else "italic"))
        text.append("  │  music: ")
        text.append(plain(self.music.name if self.music else self.music_status, "" if self.music else "italic"))
        if any(m is not None and m.demo for m in (self.chat, self.music)):
            text.append("\n")
            text.append(
                "Built-in demo models: tiny, for trying the app. Load real RWKV-7 weights with "
                "--model PATH or Ctrl+O.",
                style="italic",
            )
        return text
