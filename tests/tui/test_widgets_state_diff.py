"""StateDiffView: draws an engine StateDiff (summary, heat map, token-shift bars)."""

from __future__ import annotations

import torch
from textual.app import App, ComposeResult
from textual.widgets import Label

from engine.state import State
from engine.state_stats import state_diff
from tui.widgets.state_bars import LayerBars
from tui.widgets.state_diff import StateDiffView
from tui.widgets.state_heatmap import StateHeatmap


def _states() -> tuple[State, State]:
    gen = torch.Generator().manual_seed(0)
    a = State(att_x=torch.randn(4, 16, generator=gen), wkv=torch.randn(4, 2, 8, 8, generator=gen),
              ffn_x=torch.randn(4, 16, generator=gen), tokens_seen=10)
    b = a.clone()
    b.tokens_seen = 14
    b.wkv[2, 1] += 0.5 * torch.randn(8, 8, generator=gen)
    b.wkv[3, 0] *= 1.1
    b.att_x[1] += 1.0
    return a, b


class DiffHost(App):
    def compose(self) -> ComposeResult:
        yield StateDiffView()


async def test_shows_the_diff():
    a, b = _states()
    diff = state_diff(a, b)
    app = DiffHost()
    async with app.run_test(size=(70, 20)) as pilot:
        view = app.query_one(StateDiffView)
        assert "no comparison" in view.summary_text()
        view.show(diff, "turn 3", "live")
        await pilot.pause()
        summary = str(view.query_one(".state-diff--summary", Label).render())
        assert summary.startswith("turn 3 (10 tokens) vs live (14 tokens)")
        assert "most changed L2·h1" in summary
        heatmap = view.query_one(StateHeatmap)
        assert heatmap.values == diff.wkv_relative.tolist()
        assert heatmap.values[0] == [0.0, 0.0]
        assert view.query_one(LayerBars).series["att Δ"] == diff.att_x.tolist()
        view.show(state_diff(a, a.clone()))
        await pilot.pause()
        assert view.summary_text().endswith("identical")


def test_diff_snapshot(snap_compare):
    async def show(pilot):
        a, b = _states()
        pilot.app.query_one(StateDiffView).show(state_diff(a, b), "snapshot", "live")

    assert snap_compare(DiffHost(), terminal_size=(70, 18), run_before=show)
