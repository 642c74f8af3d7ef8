"""The state inspector's frame: heat map, numbers, the snapshot list, save and load.

The numbers, the snapshot list (rewind to any turn), and saving and loading the live state are
wired to the engine thread; the heat map and other inspector widgets are built separately and
slot into their regions with :meth:`StatePane.mount_in`.
"""

from __future__ import annotations

import time
from pathlib import Path

from rich.table import Table
from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widget import Widget
from textual.widgets import Button, DataTable, Static

from engine import state_io
from tui.messages import EngineRequest, RewindRequested
from tui.protocol import ConversationInfo, LoadState, ModelSummary, SaveState
from tui.screens.path_prompt import PathPrompt
from tui.think import split_reply
from tui.widgets.status_line import human_bytes


def _preview(text: str, width: int = 28) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


class StatePane(Horizontal):
    DEFAULT_CSS = """
    StatePane { height: 1fr; }
    StatePane .region { border: round $panel-lighten-2; border-title-color: $primary; padding: 0 1; }
    StatePane #state-left { width: 2fr; }
    StatePane #state-right { width: 3fr; }
    StatePane #heatmap-region { height: 1fr; }
    StatePane #numbers-region { height: auto; }
    StatePane #snapshot-region { height: 1fr; }
    StatePane .region-pending { color: $text-muted; text-style: italic; }
    StatePane #state-numbers { height: auto; }
    StatePane #snapshots { height: 1fr; background: transparent; }
    StatePane #state-actions { height: 1; margin: 0 1 1 1; }
    StatePane #state-actions Button { margin-right: 2; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.model: ModelSummary | None = None
        self.info: ConversationInfo | None = None
        self._confirm_rewind: int | None = None
        #: The numbers shown, by label (for tests and for the panes that will build on this).
        self.numbers: dict[str, str] = {}

    def compose(self) -> ComposeResult:
        with Vertical(id="state-left"):
            heatmap = Vertical(
                Static("Per layer × head norms of the WKV state, updated while generating.\n"
                       "(arrives with the state inspector)", classes="region-pending"),
                id="heatmap-region", classes="region",
            )
            heatmap.border_title = "Heat map"
            yield heatmap
            numbers = Vertical(Static(id="state-numbers"), id="numbers-region", classes="region")
            numbers.border_title = "Numbers"
            yield numbers
        with Vertical(id="state-right"):
            snapshots = Vertical(DataTable(id="snapshots", cursor_type="row", zebra_stripes=True),
                                 id="snapshot-region", classes="region")
            snapshots.border_title = "Snapshots (state before each turn; Tokens = tokens seen then)"
            yield snapshots
            with Horizontal(id="state-actions"):
                yield Button("Rewind to selected", id="rewind", variant="warning", disabled=True, compact=True)
                yield Button("Save state…", id="save-state", compact=True,
                             tooltip="Write the live chat state to a file")
                yield Button("Load state…", id="load-state", compact=True,
                             tooltip="Start a new conversation from a saved state")

    def on_mount(self) -> None:
        table = self.query_one("#snapshots", DataTable)
        table.add_columns("Turn", "Tokens", "Snapshot", "You", "Reply")
        self._refresh_numbers()

    # ------------------------------------------------------------------ data

    def set_model(self, summary: ModelSummary) -> None:
        if summary.role == "chat":
            self.model = summary
            self._refresh_numbers()

    def set_conversation(self, info: ConversationInfo) -> None:
        """Show a new conversation summary, keeping the user's selection and a pending
        "press again" for the same turn: summaries also arrive while nothing changed for them."""
        self.info = info
        if self._confirm_rewind is not None and self._confirm_rewind >= len(info.turns):
            self._confirm_rewind = None
        self._refresh_numbers()
        table = self.query_one("#snapshots", DataTable)
        selected_row = table.cursor_row
        table.clear()
        for turn in info.turns:
            table.add_row(
                str(turn.index + 1),
                f"{turn.tokens_before:,}" if turn.tokens_before is not None else "–",
                "kept" if turn.has_snapshot else f"replay {turn.replay_tokens:,}",
                _preview(turn.user, 16),
                _preview(split_reply(turn.reply)[1] or turn.reply, 16),
                key=str(turn.index),
            )
        if table.row_count:
            table.move_cursor(row=min(max(selected_row, 0), table.row_count - 1))
        self._update_rewind_button()

    def _refresh_numbers(self) -> None:
        rows: list[tuple[str, str]] = []
        m, info = self.model, self.info
        if m is None:
            rows.append(("Model", "no chat model loaded"))
        else:
            rows += [
                ("Model", m.name),
                ("Layers", str(m.n_layer)),
                ("Heads × head size", f"{m.n_head} × {m.head_size}"),
                ("Embedding", str(m.n_embd)),
                ("State size", f"{human_bytes(m.state_bytes)} ({m.state_bytes:,} bytes, fp32)"),
                ("Per layer", "att_x [C] · wkv [H,N,N] · ffn_x [C]"),
            ]
        if info is not None:
            rows += [
                ("Tokens seen", f"{info.tokens_seen:,}"),
                ("Snapshots kept", f"{info.snapshots_kept} · {human_bytes(info.snapshot_bytes)} of "
                                   f"{human_bytes(info.snapshot_budget)} budget"),
            ]
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="bold", no_wrap=True)
        grid.add_column()
        for what, value in rows:
            grid.add_row(what, value)
        self.numbers = dict(rows)
        self.query_one("#state-numbers", Static).update(grid)

    # ------------------------------------------------------------------ rewind

    def _selected_turn(self) -> int | None:
        table = self.query_one("#snapshots", DataTable)
        if self.info is None or not self.info.turns or table.row_count == 0:
            return None
        row = table.cursor_row
        if not 0 <= row < len(self.info.turns):
            return None
        return self.info.turns[row].index

    def _update_rewind_button(self) -> None:
        button = self.query_one("#rewind", Button)
        index = self._selected_turn()
        button.disabled = index is None
        if self._confirm_rewind is not None and self._confirm_rewind == index and self.info is not None:
            dropped = len(self.info.turns) - index
            replay = self.info.turns[index].replay_tokens
            cost = f", re-feed {replay:,} tokens" if replay else ""
            button.label = f"Press again: drop {dropped} turn{'s' if dropped != 1 else ''}{cost}"
        else:
            self._confirm_rewind = None
            button.label = "Rewind to selected"

    @on(DataTable.RowHighlighted, "#snapshots")
    def _row_highlighted(self) -> None:
        if self._confirm_rewind is not None and self._selected_turn() == self._confirm_rewind:
            return  # the table was refreshed under the same selection: stay armed
        self._confirm_rewind = None
        self._update_rewind_button()

    @on(Button.Pressed, "#rewind")
    def _rewind_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        index = self._selected_turn()
        if index is None:
            return
        if self._confirm_rewind != index:
            self._confirm_rewind = index
            self._update_rewind_button()
            return
        self._confirm_rewind = None
        self.post_message(RewindRequested(index))

    @on(Button.Pressed, "#save-state")
    def _save_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        default = Path.cwd() / f"rwkv-state-{time.strftime('%Y%m%d-%H%M%S')}{state_io.SUFFIX}"

        def chosen(path: str | None) -> None:
            if path:
                self.post_message(EngineRequest(SaveState(path)))

        self.app.push_screen(PathPrompt("Save the live chat state", str(default), mode="save"), chosen)

    @on(Button.Pressed, "#load-state")
    def _load_pressed(self, event: Button.Pressed) -> None:
        event.stop()

        def chosen(path: str | None) -> None:
            if path:
                self.post_message(EngineRequest(LoadState(path)))

        note = "The chat starts a new conversation from this state; the file is checked against the model first."
        self.app.push_screen(PathPrompt("Load a state file", str(Path.cwd()) + "/", mode="open", note=note), chosen)

    async def mount_in(self, region_id: str, widget: Widget) -> None:
        """Put a finished widget in its region, replacing the region's placeholder."""
        region = self.query_one(f"#{region_id}", Vertical)
        await region.query(".region-pending").remove()
        await region.mount(widget)
