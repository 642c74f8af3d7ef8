"""The one-line status bar: generation speed, time to first token, tokens, state size.

It is updated from the engine's statistics events (at most ten a second), never per token.
"""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from engine.units import human_bytes  # noqa: F401  (re-exported for the panes)
from tui.protocol import Stats


class StatusLine(Static):
    DEFAULT_CSS = """
    StatusLine {
        height: 1;
        padding: 0 1;
        background: $panel;
        color: $text-muted;
    }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.stats: Stats | None = None
        self.state_bytes = 0

    def on_mount(self) -> None:
        self.update(self.render_stats(), layout=False)

    def show(self, stats: Stats) -> None:
        self.stats = stats
        if stats.state_bytes:
            self.state_bytes = stats.state_bytes
        self.update(self.render_stats(), layout=False)

    def set_state_size(self, state_bytes: int, tokens_seen: int) -> None:
        """State numbers outside a generation (model loaded, rewound, new chat)."""
        self.state_bytes = state_bytes
        s = self.stats
        self.stats = Stats(False, s.tokens_per_second if s else 0.0, s.time_to_first_token if s else None,
                           s.generated_tokens if s else 0, s.prompt_tokens if s else 0, state_bytes, tokens_seen)
        self.update(self.render_stats(), layout=False)

    def render_stats(self) -> Text:
        s = self.stats
        text = Text()
        if s is not None and s.generating:
            text.append("● generating", style="bold")
        else:
            text.append("○ idle")
        sep = " │ "
        text.append(sep)
        text.append(f"{s.tokens_per_second:.1f} tok/s" if s and s.tokens_per_second else "– tok/s")
        text.append(sep)
        ttft = s.time_to_first_token if s else None
        text.append(f"first token {ttft * 1000:.0f} ms" if ttft is not None else "first token –")
        text.append(sep)
        text.append(f"{s.generated_tokens} tokens" if s else "0 tokens")
        text.append(sep)
        if self.state_bytes:
            text.append(f"state {human_bytes(self.state_bytes)}")
            if s is not None:
                text.append(f", {s.tokens_seen:,} seen")
        else:
            text.append("state –")
        return text
