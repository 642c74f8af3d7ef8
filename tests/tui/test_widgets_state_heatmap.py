"""StateHeatmap: cursor, messages, scales, packing, and how it looks."""

from __future__ import annotations

import pytest
import torch
from textual.app import App, ComposeResult
from textual.containers import Vertical

from tui.widgets.state_heatmap import StateHeatmap

VALUES = [[(layer + 1) * (head + 1) * 1.5 for head in range(4)] for layer in range(6)]


class HeatmapHost(App):
    CSS = "#box { height: auto; }"

    def __init__(self, values=VALUES, box_height: str = "auto") -> None:
        super().__init__()
        self.values = values
        self.box_height = box_height
        self.events: list[StateHeatmap.CellHighlighted] = []

    def compose(self) -> ComposeResult:
        with Vertical(id="box"):
            yield StateHeatmap(self.values, unit="", id="heatmap")

    def on_mount(self) -> None:
        self.query_one("#box").styles.height = self.box_height

    def on_state_heatmap_cell_highlighted(self, event: StateHeatmap.CellHighlighted) -> None:
        self.events.append(event)


async def test_cursor_moves_with_keys_and_reports_values():
    app = HeatmapHost()
    async with app.run_test(size=(50, 12)) as pilot:
        heatmap = app.query_one(StateHeatmap)
        heatmap.focus()
        await pilot.press("down", "down", "right", "left", "right", "right")
        await pilot.pause()
        assert heatmap.cursor == (2, 2)
        last = app.events[-1]
        assert (last.row, last.column, last.value) == (2, 2, VALUES[2][2])
        await pilot.press("end")
        assert heatmap.cursor == (5, 2)
        await pilot.press("down", "right", "right", "right")  # clamped at the edges
        assert heatmap.cursor == (5, 3)
        await pilot.press("home")
        assert heatmap.cursor == (0, 3)


async def test_enter_and_click_select_a_cell():
    selected: list[tuple[int, int, float]] = []

    class Host(HeatmapHost):
        def on_state_heatmap_cell_selected(self, event: StateHeatmap.CellSelected) -> None:
            selected.append((event.row, event.column, event.value))

    app = Host()
    async with app.run_test(size=(50, 12)) as pilot:
        heatmap = app.query_one(StateHeatmap)
        heatmap.focus()
        await pilot.press("right", "enter")
        await pilot.pause()
        # Column 3 of layer 4: label (4) + 3 cells of width 3, row line 1 + 4.
        await pilot.click(StateHeatmap, offset=(4 + 3 * 3 + 1, 1 + 4))
        await pilot.pause()
    assert selected == [(0, 1, VALUES[0][1]), (4, 3, VALUES[4][3])]


async def test_legend_shows_range_scale_and_cursor_value():
    app = HeatmapHost()
    async with app.run_test(size=(60, 12)) as pilot:
        heatmap = app.query_one(StateHeatmap)
        await pilot.pause()
        legend = heatmap.render_line(1 + 6).text
        assert "1.5…36" in legend and "linear" in legend and "L0·h0 = 1.5" in legend
        heatmap.focus()
        await pilot.press("s")
        assert heatmap.scale == "log"
        assert "log" in heatmap.render_line(7).text
        assert heatmap.render_line(0).text.split() == ["h0", "h1", "h2", "h3"]
        assert [heatmap.render_line(y).text[:4].strip() for y in range(1, 7)] == [f"L{i}" for i in range(6)]


async def test_colours_follow_the_values():
    app = HeatmapHost()
    async with app.run_test(size=(50, 12)) as pilot:
        heatmap = app.query_one(StateHeatmap)
        await pilot.pause()
        stops = heatmap._colors()
        lowest = heatmap._color_for(VALUES[0][0], stops)
        highest = heatmap._color_for(VALUES[5][3], stops)
        assert lowest == stops[0] and highest == stops[2]
        # The drawn cells carry exactly these colours.
        segments = list(heatmap.render_line(6))  # layer 5: label, then one segment per head
        assert segments[4].style.bgcolor == highest.rich_color
        assert list(heatmap.render_line(1))[1].style.bgcolor == lowest.rich_color
        heatmap.scale = "log"
        middle_linear = heatmap._position(VALUES[2][1])
        heatmap.scale = "linear"
        assert heatmap._position(VALUES[2][1]) < middle_linear  # log spreads the small values


async def test_tall_maps_pack_two_layers_per_line_when_space_is_short():
    values = [[float(i + j) for j in range(8)] for i in range(24)]
    app = HeatmapHost(values, box_height="16")
    async with app.run_test(size=(60, 20)) as pilot:
        heatmap = app.query_one(StateHeatmap)
        await pilot.pause()
        assert heatmap._packed()
        assert heatmap.size.height == 12 + 2  # 24 layers in 12 lines, header, legend
        line = heatmap.render_line(1).text
        assert line.startswith("L0") and "▀" in line
        assert heatmap.render_line(2).text.startswith("L2")


async def test_set_values_accepts_tensors_and_pins_ranges():
    app = HeatmapHost()
    async with app.run_test(size=(50, 12)) as pilot:
        heatmap = app.query_one(StateHeatmap)
        heatmap.cursor = (5, 3)
        heatmap.set_values(torch.ones(2, 3), value_range=(0.0, 4.0))
        await pilot.pause()
        assert heatmap.shape == (2, 3)
        assert heatmap.cursor == (1, 2)  # clamped into the new shape
        assert heatmap._position(1.0) == pytest.approx(0.25)
        heatmap.set_values([[float("nan"), 1.0]])
        assert heatmap.values == [[0.0, 1.0]]
        with pytest.raises(ValueError):
            heatmap.set_values([[1.0], [1.0, 2.0]])
        heatmap.set_values([])
        await pilot.pause()
        assert "no state" in heatmap.render_line(0).text


def test_heatmap_snapshot(snap_compare):
    async def move(pilot):
        heatmap = pilot.app.query_one(StateHeatmap)
        heatmap.focus()
        await pilot.press("down", "right", "right")

    assert snap_compare(HeatmapHost(), terminal_size=(48, 10), run_before=move)


def test_packed_heatmap_snapshot(snap_compare):
    values = [[float((i * 7 + j * 3) % 11) for j in range(12)] for i in range(12)]
    assert snap_compare(HeatmapHost(values, box_height="8"), terminal_size=(48, 10))
