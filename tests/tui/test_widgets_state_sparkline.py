"""StateChangeSparkline: batched pushes, bounded history, numbers, and how it looks."""

from __future__ import annotations

from textual.app import App, ComposeResult
from textual.widgets import Label, Sparkline

from tui.widgets.state_sparkline import StateChangeSparkline


class SparklineHost(App):
    def compose(self) -> ComposeResult:
        yield StateChangeSparkline(history=8)


async def test_batches_update_the_sparkline_and_numbers():
    app = SparklineHost()
    async with app.run_test(size=(60, 3)) as pilot:
        widget = app.query_one(StateChangeSparkline)
        numbers = widget.query_one(".state-sparkline--numbers", Label)
        assert "no tokens yet" in str(numbers.render())
        widget.push([0.1, 0.4, 0.2])
        widget.push([])
        await pilot.pause()
        assert widget.query_one(Sparkline).data == [0.1, 0.4, 0.2]
        assert str(numbers.render()) == "last 0.2  peak 0.4"
        widget.push(float(i) for i in range(10))
        await pilot.pause()
        assert widget.values == [float(i) for i in range(2, 10)]  # history of 8
        widget.clear()
        await pilot.pause()
        assert widget.query_one(Sparkline).data == []
        assert "no tokens yet" in str(numbers.render())


async def test_values_pushed_before_mounting_are_shown():
    widget = StateChangeSparkline()
    widget.push([0.5, 0.25])

    class Host(App):
        def compose(self) -> ComposeResult:
            yield widget

    async with Host().run_test(size=(60, 3)) as pilot:
        await pilot.pause()
        assert widget.query_one(Sparkline).data == [0.5, 0.25]


def test_sparkline_snapshot(snap_compare):
    async def fill(pilot):
        widget = pilot.app.query_one(StateChangeSparkline)
        widget.push([0.02, 0.05, 0.03, 0.2, 0.12, 0.04, 0.01, 0.3])

    assert snap_compare(SparklineHost(), terminal_size=(60, 3), run_before=fill)
