"""How much the state moves per generated token, as a labelled sparkline.

The engine thread computes one number per token (``engine.state_stats.ChangeTracker``); the UI
receives them in batches and calls :meth:`StateChangeSparkline.push` a few times a second, so
the widget redraws at the UI's pace, never per token.
"""

from __future__ import annotations

from collections import deque
from typing import Iterable

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Label, Sparkline


class StateChangeSparkline(Horizontal):
    """``Δ/token`` label, a sparkline of the recent values, and the latest and peak numbers."""

    DEFAULT_CSS = """
    StateChangeSparkline {
        height: 1;
    }
    StateChangeSparkline > .state-sparkline--title {
        width: auto;
        color: $text-muted;
        padding-right: 1;
    }
    StateChangeSparkline > Sparkline {
        width: 1fr;
    }
    StateChangeSparkline > .state-sparkline--numbers {
        width: auto;
        min-width: 22;
        color: $text-muted;
        padding-left: 1;
    }
    """

    def __init__(
        self,
        title: str = "Δ/token",
        *,
        history: int = 256,
        name: str | None = None,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.title = title
        self._values: deque[float] = deque(maxlen=history)

    def compose(self) -> ComposeResult:
        yield Label(self.title, classes="state-sparkline--title")
        yield Sparkline(list(self._values), summary_function=max)
        yield Label(self._numbers(), classes="state-sparkline--numbers")

    @property
    def values(self) -> list[float]:
        return list(self._values)

    def push(self, values: Iterable[float]) -> None:
        """Append a batch of per-token values (call from the UI thread)."""
        added = False
        for value in values:
            self._values.append(float(value))
            added = True
        if added:
            self._update()

    def clear(self) -> None:
        """Start over (a new reply, a rewind, another state loaded)."""
        self._values.clear()
        self._update()

    def _update(self) -> None:
        if not self.is_mounted:
            return
        self.query_one(Sparkline).data = list(self._values)
        self.query_one(".state-sparkline--numbers", Label).update(self._numbers())

    def _numbers(self) -> str:
        if not self._values:
            return "no tokens yet"
        return f"last {_fmt(self._values[-1])}  peak {_fmt(max(self._values))}"


def _fmt(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1e3 or abs(value) < 1e-3:
        return f"{value:.1e}"
    return f"{value:.3g}"
