"""LayerBars: bar lengths share one scale, eighth blocks, and how it looks."""

from __future__ import annotations

import pytest
import torch
from textual.app import App, ComposeResult

from tui.widgets.state_bars import LayerBars, _bar

SERIES = {"att shift": [4.0, 2.0, 1.0], "ffn shift": [8.0, 0.0, 3.0]}


class BarsHost(App):
    def compose(self) -> ComposeResult:
        yield LayerBars(SERIES)


def test_bar_lengths_use_eighth_blocks():
    assert _bar(8.0, 8.0, 4) == "████"
    assert _bar(1.0, 8.0, 4) == "▌   "
    assert _bar(0.0, 8.0, 4) == "    "
    assert _bar(3.0, 0.0, 2) == "  "


async def test_rows_share_one_scale_and_show_numbers():
    app = BarsHost()
    async with app.run_test(size=(50, 6)) as pilot:
        bars = app.query_one(LayerBars)
        await pilot.pause()
        assert bars.size.height == 4
        header, first = bars.render_line(0).text, bars.render_line(1).text
        assert "att shift" in header and "ffn shift" in header
        assert first.startswith("L0")
        # Layer 0: att (4) is half of the shared maximum (ffn 8).
        att_part, ffn_part = first[4:27], first[27:50]
        assert att_part.count("█") * 2 == pytest.approx(ffn_part.count("█"), abs=1)
        assert att_part.strip().endswith("4") and ffn_part.strip().endswith("8")
        bars.set_series({"a": torch.tensor([1.0, float("inf")])})
        await pilot.pause()
        assert bars.series == {"a": [1.0, 0.0]}
        assert bars.size.height == 3
        with pytest.raises(ValueError):
            bars.set_series({"a": [1.0], "b": [1.0, 2.0]})


def test_bars_snapshot(snap_compare):
    assert snap_compare(BarsHost(), terminal_size=(50, 5))
