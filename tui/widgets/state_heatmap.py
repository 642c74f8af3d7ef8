"""A layer × head heat map (WKV state norms, or their differences), drawn with the Line API.

One row per layer and one column per head, shaded through three theme colours. When the widget
is shorter than the number of layers it packs two layers into each line with half blocks, so a
61-layer model still fits a laptop terminal. Arrow keys (or the mouse) move a cursor; the line
under the map shows the cursor's value and the colour scale.
"""

from __future__ import annotations

import math
from typing import ClassVar, Sequence

from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import Binding, BindingType
from textual.color import Color
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.strip import Strip
from textual.widget import Widget

Matrix = Sequence[Sequence[float]]
_LABEL_WIDTH = 4
_LEGEND_STEPS = 16


class StateHeatmap(Widget, can_focus=True):
    """Heat map of a [rows][columns] matrix of non-negative numbers (layers × heads)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up", "move(-1, 0)", "Up", show=False),
        Binding("down", "move(1, 0)", "Down", show=False),
        Binding("left", "move(0, -1)", "Left", show=False),
        Binding("right", "move(0, 1)", "Right", show=False),
        Binding("home", "jump(0)", "First layer", show=False),
        Binding("end", "jump(-1)", "Last layer", show=False),
        Binding("enter", "select", "Select", show=False),
        Binding("s", "toggle_scale", "Lin/log", show=False),
    ]

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "state-heatmap--low",
        "state-heatmap--mid",
        "state-heatmap--high",
        "state-heatmap--label",
        "state-heatmap--cursor",
    }
    """
    | Class | Description |
    | :- | :- |
    | `state-heatmap--low` | Colour (``color``) of the smallest values. |
    | `state-heatmap--mid` | Colour of values half way up the scale. |
    | `state-heatmap--high` | Colour of the largest values. |
    | `state-heatmap--label` | Style of the layer/head labels and the legend text. |
    | `state-heatmap--cursor` | Text style of the cursor mark (◆ focused, ◇ not); its colour
      always contrasts with the cell. |
    """

    DEFAULT_CSS = """
    StateHeatmap {
        height: auto;
        min-height: 3;
    }
    StateHeatmap > .state-heatmap--low { color: $surface; }
    StateHeatmap > .state-heatmap--mid { color: $primary; }
    StateHeatmap > .state-heatmap--high { color: $warning; }
    StateHeatmap > .state-heatmap--label { color: $text-muted; }
    StateHeatmap > .state-heatmap--cursor { text-style: bold; }
    """

    #: "linear" or "log": log shows the structure of norms that span orders of magnitude.
    scale: reactive[str] = reactive("linear")
    #: (row, column) of the cursor.
    cursor: reactive[tuple[int, int]] = reactive((0, 0))

    class CellHighlighted(Message):
        """The cursor moved to a cell."""

        def __init__(self, heatmap: "StateHeatmap", row: int, column: int, value: float) -> None:
            super().__init__()
            self.heatmap = heatmap
            self.row = row
            self.column = column
            self.value = value

        @property
        def control(self) -> "StateHeatmap":
            return self.heatmap

    class CellSelected(CellHighlighted):
        """Enter was pressed (or a cell clicked) on a cell."""

    def __init__(
        self,
        values: Matrix | None = None,
        *,
        row_prefix: str = "L",
        column_prefix: str = "h",
        unit: str = "",
        scale: str = "linear",
        name: str | None = None,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.row_prefix = row_prefix
        self.column_prefix = column_prefix
        self.unit = unit
        self._values: list[list[float]] = []
        self._range = (0.0, 0.0)
        self.set_reactive(StateHeatmap.scale, scale)
        if values is not None:
            self.set_values(values)

    # ------------------------------------------------------------------ data

    @property
    def values(self) -> list[list[float]]:
        return self._values

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self._values), len(self._values[0]) if self._values else 0)

    def set_values(self, values: Matrix | object, value_range: tuple[float, float] | None = None) -> None:
        """Show ``values`` (nested sequences or anything with ``tolist()``, e.g. a tensor).

        ``value_range`` pins the colour scale (useful to compare maps); by default it is the
        data's own minimum and maximum.
        """
        rows = values.tolist() if hasattr(values, "tolist") else values  # type: ignore[union-attr]
        matrix = [[_finite(v) for v in row] for row in rows]  # type: ignore[union-attr]
        if matrix and any(len(row) != len(matrix[0]) for row in matrix):
            raise ValueError("every row of a heat map needs the same number of columns")
        old_shape = self.shape
        self._values = matrix
        flat = [v for row in matrix for v in row]
        if value_range is not None:
            self._range = (float(value_range[0]), float(value_range[1]))
        else:
            self._range = (min(flat), max(flat)) if flat else (0.0, 0.0)
        if self.shape != old_shape:
            row, column = self.cursor
            self.set_reactive(
                StateHeatmap.cursor,
                (min(row, max(0, self.shape[0] - 1)), min(column, max(0, self.shape[1] - 1))),
            )
            self.refresh(layout=True)
        else:
            self.refresh()

    def value_at(self, row: int, column: int) -> float:
        return self._values[row][column]

    # ------------------------------------------------------------------ actions

    def action_move(self, rows: int, columns: int) -> None:
        n_rows, n_columns = self.shape
        if not n_rows:
            return
        row, column = self.cursor
        self.cursor = (max(0, min(n_rows - 1, row + rows)), max(0, min(n_columns - 1, column + columns)))

    def action_jump(self, row: int) -> None:
        if self.shape[0]:
            self.cursor = (row % self.shape[0], self.cursor[1])

    def action_select(self) -> None:
        if self.shape[0]:
            row, column = self.cursor
            self.post_message(self.CellSelected(self, row, column, self.value_at(row, column)))

    def action_toggle_scale(self) -> None:
        self.scale = "log" if self.scale == "linear" else "linear"

    def watch_cursor(self, cursor: tuple[int, int]) -> None:
        if self.shape[0]:
            row, column = cursor
            self.post_message(self.CellHighlighted(self, row, column, self.value_at(row, column)))
        self.refresh()

    def watch_scale(self) -> None:
        self.refresh()

    def on_focus(self) -> None:
        self.refresh()

    def on_blur(self) -> None:
        self.refresh()

    def validate_scale(self, scale: str) -> str:
        if scale not in ("linear", "log"):
            raise ValueError("scale must be 'linear' or 'log'")
        return scale

    # ------------------------------------------------------------------ mouse

    def _cell_at(self, x: int, y: int) -> tuple[int, int] | None:
        n_rows, n_columns = self.shape
        width = self._cell_width()
        column = (x - _LABEL_WIDTH) // width if x >= _LABEL_WIDTH else -1
        packed = self._packed()
        if not 0 <= column < n_columns or y < 1:
            return None
        line = y - 1
        row = line * 2 if packed else line
        if row >= n_rows or line >= self._body_lines():
            return None
        return row, column

    def on_click(self, event: events.Click) -> None:
        cell = self._cell_at(event.x, event.y)
        if cell is not None:
            self.cursor = cell
            self.action_select()

    def on_mouse_move(self, event: events.MouseMove) -> None:
        cell = self._cell_at(event.x, event.y)
        if cell is None:
            self.tooltip = None
        else:
            row, column = cell
            self.tooltip = self._describe(row, column)

    # ------------------------------------------------------------------ layout

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        rows = max(1, self.shape[0])
        full = rows + 2  # header, one line per row, legend
        if container.height and full > container.height:
            return (rows + 1) // 2 + 2  # packed: two rows per line
        return full

    def get_content_width(self, container: Size, viewport: Size) -> int:
        return _LABEL_WIDTH + max(1, self.shape[1]) * 3

    def _cell_width(self) -> int:
        n_columns = max(1, self.shape[1])
        return max(1, min(3, (self.size.width - _LABEL_WIDTH) // n_columns))

    def _packed(self) -> bool:
        """Two layers per line (half blocks) when one per line does not fit."""
        return self.shape[0] > max(1, self.size.height - 2)

    def _body_lines(self) -> int:
        n_rows = self.shape[0]
        lines = (n_rows + 1) // 2 if self._packed() else n_rows
        return min(lines, max(0, self.size.height - 2))

    # ------------------------------------------------------------------ drawing

    def _colors(self) -> tuple[Color, Color, Color]:
        _, base = self.background_colors
        low = base + self.get_component_styles("state-heatmap--low").color
        mid = base + self.get_component_styles("state-heatmap--mid").color
        high = base + self.get_component_styles("state-heatmap--high").color
        return low, mid, high

    def _position(self, value: float) -> float:
        """Where ``value`` sits on the colour scale, 0..1."""
        lo, hi = self._range
        if hi <= lo:
            return 0.0 if value <= lo else 1.0
        if self.scale == "log":
            floor = max(hi * 1e-6, 1e-30)
            f = lambda v: math.log10(max(v, floor))  # noqa: E731
            lo_f, hi_f = f(max(lo, floor)), f(hi)
            t = (f(value) - lo_f) / (hi_f - lo_f) if hi_f > lo_f else 1.0
        else:
            t = (value - lo) / (hi - lo)
        return max(0.0, min(1.0, t))

    def _color_for(self, value: float, stops: tuple[Color, Color, Color]) -> Color:
        t = self._position(value)
        low, mid, high = stops
        return low.blend(mid, t * 2) if t < 0.5 else mid.blend(high, (t - 0.5) * 2)

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        label_style = self.get_component_rich_style("state-heatmap--label")
        n_rows, n_columns = self.shape
        if not n_rows or not n_columns:
            text = " no state to show" if y == 0 else ""
            return Strip([Segment(text, label_style)]).extend_cell_length(width, self.rich_style)
        body = self._body_lines()
        if y == 0:
            return self._header(label_style).crop_extend(0, width, self.rich_style)
        if 1 <= y <= body:
            return self._row_line(y - 1, label_style).crop_extend(0, width, self.rich_style)
        if y == body + 1:
            return self._legend(label_style).crop_extend(0, width, self.rich_style)
        return Strip.blank(width, self.rich_style)

    def _header(self, label_style: Style) -> Strip:
        cell = self._cell_width()
        n_columns = self.shape[1]
        base = self.rich_style
        segments = [Segment(" " * _LABEL_WIDTH, base)]
        # Label every k-th column so labels never collide.
        label_len = len(f"{self.column_prefix}{n_columns - 1}")
        every = max(1, math.ceil((label_len + 1) / cell))
        position = 0
        for column in range(0, n_columns, every):
            start = column * cell
            if start < position:
                continue
            label = f"{self.column_prefix}{column}"
            if start > position:
                segments.append(Segment(" " * (start - position), base))
            segments.append(Segment(label, label_style))
            position = start + len(label)
        return Strip(segments)

    def _row_line(self, line: int, label_style: Style) -> Strip:
        cell = self._cell_width()
        stops = self._colors()
        packed = self._packed()
        cursor_style = self.get_component_rich_style("state-heatmap--cursor", partial=True)
        segments: list[Segment] = []
        if packed:
            top, bottom = line * 2, line * 2 + 1
            label = f"{self.row_prefix}{top}"
            segments.append(Segment(f"{label:<{_LABEL_WIDTH}}"[:_LABEL_WIDTH], label_style))
            for column in range(self.shape[1]):
                upper = self._color_for(self.value_at(top, column), stops)
                lower = (
                    self._color_for(self.value_at(bottom, column), stops)
                    if bottom < self.shape[0] else self.background_colors[1]
                )
                style = Style(color=upper.rich_color, bgcolor=lower.rich_color)
                segments.append(Segment("▀" * cell, style))
            return Strip(segments)
        row = line
        label = f"{self.row_prefix}{row}"
        segments.append(Segment(f"{label:<{_LABEL_WIDTH}}"[:_LABEL_WIDTH], label_style))
        cursor_row, cursor_column = self.cursor
        for column in range(self.shape[1]):
            color = self._color_for(self.value_at(row, column), stops)
            style = Style(bgcolor=color.rich_color)
            if row == cursor_row and column == cursor_column:
                glyph = "◆" if self.has_focus else "◇"
                mark = glyph.center(cell) if cell > 1 else glyph
                segments.append(
                    Segment(mark, cursor_style + style + Style(color=color.get_contrast_text(1.0).rich_color))
                )
            else:
                segments.append(Segment(" " * cell, style))
        return Strip(segments)

    def _legend(self, label_style: Style) -> Strip:
        stops = self._colors()
        lo, hi = self._range
        segments = [Segment(" " * _LABEL_WIDTH, label_style)]
        for step in range(_LEGEND_STEPS):
            t = step / (_LEGEND_STEPS - 1)
            low, mid, high = stops
            color = low.blend(mid, t * 2) if t < 0.5 else mid.blend(high, (t - 0.5) * 2)
            segments.append(Segment(" ", Style(bgcolor=color.rich_color)))
        row, column = self.cursor
        text = f" {_fmt(lo)}…{_fmt(hi)}{self.unit} {self.scale}"
        if self.shape[0]:
            text += f"  {self._describe(row, column)}"
        segments.append(Segment(text, label_style))
        return Strip(segments)

    def _describe(self, row: int, column: int) -> str:
        value = self.value_at(row, column)
        return f"{self.row_prefix}{row}·{self.column_prefix}{column} = {_fmt(value)}{self.unit}"


def _finite(value: object) -> float:
    number = float(value)  # type: ignore[arg-type]
    return number if math.isfinite(number) else 0.0


def _fmt(value: float) -> str:
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 1e4 or magnitude < 1e-3:
        return f"{value:.2e}"
    return f"{value:.3g}"
