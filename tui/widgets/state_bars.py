"""Per-layer horizontal bars for a few series side by side (token-shift vector magnitudes).

Each layer is one line: its label, then for each series a bar drawn with eighth-block
characters (so small differences show) and the number. All series share one scale, because
the point is to compare them.
"""

from __future__ import annotations

import math
from typing import ClassVar, Sequence

from rich.segment import Segment
from textual.geometry import Size
from textual.strip import Strip
from textual.widget import Widget

_EIGHTHS = " ▏▎▍▌▋▊▉"
_LABEL_WIDTH = 4
_NUMBER_WIDTH = 7


class LayerBars(Widget):
    """Bars per layer for named series, e.g. ``{"att shift": [...], "ffn shift": [...]}``."""

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "layer-bars--label",
        "layer-bars--series-0",
        "layer-bars--series-1",
        "layer-bars--series-2",
    }
    """
    | Class | Description |
    | :- | :- |
    | `layer-bars--label` | Layer labels, numbers and the header. |
    | `layer-bars--series-N` | Colour of the N-th series' bars. |
    """

    DEFAULT_CSS = """
    LayerBars {
        height: auto;
    }
    LayerBars > .layer-bars--label { color: $text-muted; }
    LayerBars > .layer-bars--series-0 { color: $primary; }
    LayerBars > .layer-bars--series-1 { color: $accent; }
    LayerBars > .layer-bars--series-2 { color: $success; }
    """

    def __init__(
        self,
        series: dict[str, Sequence[float]] | None = None,
        *,
        row_prefix: str = "L",
        name: str | None = None,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.row_prefix = row_prefix
        self._series: dict[str, list[float]] = {}
        if series is not None:
            self.set_series(series)

    @property
    def series(self) -> dict[str, list[float]]:
        return self._series

    def set_series(self, series: dict[str, Sequence[float] | object]) -> None:
        """Replace the data; values may be sequences or anything with ``tolist()``."""
        if len(series) > 3:
            raise ValueError("LayerBars shows at most three series")
        converted: dict[str, list[float]] = {}
        for name, values in series.items():
            items = values.tolist() if hasattr(values, "tolist") else values  # type: ignore[union-attr]
            numbers = [float(v) for v in items]  # type: ignore[union-attr]
            converted[name] = [v if math.isfinite(v) else 0.0 for v in numbers]
        lengths = {len(v) for v in converted.values()}
        if len(lengths) > 1:
            raise ValueError("every series needs one value per layer")
        rows_before = self._rows()
        self._series = converted
        self.refresh(layout=self._rows() != rows_before)

    def _rows(self) -> int:
        return len(next(iter(self._series.values()), []))

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        return self._rows() + 1

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        label_style = self.get_component_rich_style("layer-bars--label")
        if not self._series or not self._rows():
            text = " no data" if y == 0 else ""
            return Strip([Segment(text, label_style)]).extend_cell_length(width, self.rich_style)
        names = list(self._series)
        column = max(8, (width - _LABEL_WIDTH) // len(names))
        bar_width = max(1, column - _NUMBER_WIDTH - 2)  # bar, space, number, space before the next
        if y == 0:
            header = " " * _LABEL_WIDTH + "".join(f"{name:<{column}}"[:column] for name in names)
            return Strip([Segment(header, label_style)]).crop_extend(0, width, self.rich_style)
        row = y - 1
        if row >= self._rows():
            return Strip.blank(width, self.rich_style)
        top = max((max(values) for values in self._series.values()), default=0.0)
        label = f"{self.row_prefix}{row}"
        segments = [Segment(f"{label:<{_LABEL_WIDTH}}"[:_LABEL_WIDTH], label_style)]
        for index, name in enumerate(names):
            value = self._series[name][row]
            bar_style = self.get_component_rich_style(f"layer-bars--series-{index}")
            segments.append(Segment(_bar(value, top, bar_width), bar_style))
            segments.append(Segment(f" {_fmt(value):>{_NUMBER_WIDTH}} ", label_style))
        return Strip(segments).crop_extend(0, width, self.rich_style)


def _bar(value: float, top: float, width: int) -> str:
    if top <= 0 or value <= 0:
        return " " * width
    eighths = round(max(0.0, min(1.0, value / top)) * width * 8)
    full, part = divmod(eighths, 8)
    text = "█" * full + (_EIGHTHS[part] if part else "")
    return text.ljust(width)


def _fmt(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1e4 or abs(value) < 1e-2:
        return f"{value:.1e}"
    return f"{value:.3g}"
