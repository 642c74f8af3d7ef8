"""The difference between two states: a summary line, a per-head heat map and token-shift bars.

Takes an ``engine.state_stats.StateDiff`` (computed on the engine thread) and only draws it.
The heat map shows the *relative* difference per head (0 = same, 2 = opposite), which is
comparable across layers whose norms differ by orders of magnitude.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Label

from engine.state_stats import StateDiff
from tui.safe_text import plain
from tui.widgets.state_bars import LayerBars
from tui.widgets.state_heatmap import StateHeatmap


class StateDiffView(Vertical):
    """Shows one StateDiff; call :meth:`show` with a new one to update."""

    DEFAULT_CSS = """
    StateDiffView {
        height: auto;
    }
    StateDiffView > .state-diff--summary {
        width: 100%;
        color: $text;
        margin-bottom: 1;
    }
    StateDiffView > .state-diff--section {
        color: $text-muted;
        text-style: bold;
    }
    """

    def __init__(self, *, name: str | None = None, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self._diff: StateDiff | None = None
        self._labels = ("A", "B")

    def compose(self) -> ComposeResult:
        yield Label("no comparison yet", classes="state-diff--summary")
        yield Label("relative difference per head", classes="state-diff--section")
        yield StateHeatmap(id="state-diff-heatmap")
        yield Label("token-shift difference per layer", classes="state-diff--section")
        yield LayerBars(id="state-diff-bars")

    @property
    def diff(self) -> StateDiff | None:
        return self._diff

    def show(self, diff: StateDiff, label_a: str = "A", label_b: str = "B") -> None:
        self._diff = diff
        self._labels = (label_a, label_b)
        self.query_one(".state-diff--summary", Label).update(plain(self.summary_text()))
        top = float(diff.wkv_relative.max()) if diff.wkv_relative.numel() else 0.0
        self.query_one(StateHeatmap).set_values(diff.wkv_relative, value_range=(0.0, max(top, 1e-12)))
        self.query_one(LayerBars).set_series({"att Δ": diff.att_x, "ffn Δ": diff.ffn_x})

    def summary_text(self) -> str:
        diff = self._diff
        if diff is None:
            return "no comparison yet"
        a, b = self._labels
        head = f"{a} ({diff.tokens_a} tokens) vs {b} ({diff.tokens_b} tokens): "
        if diff.identical:
            return head + "identical"
        changed = ", ".join(f"L{layer}·h{h} {value:.3g}" for layer, h, value in diff.most_changed(3) if value > 0)
        text = head + f"relative Δ {diff.relative:.3g}, max |Δ| {diff.max_abs:.3g}"
        return text + (f"; most changed {changed}" if changed else "")
