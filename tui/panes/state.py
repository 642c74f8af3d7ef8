"""The state inspector: what the RNN state looks like, and the snapshots, branches and files it lives in.

Left: the live state (layer × head heat map of WKV norms, token-shift magnitudes per layer, a
sparkline of how much the state moves per generated token) or, after a diff, the difference of
two states; below it the plain numbers. Right: the snapshot before every turn, with rewind, fork
and diff, and the buttons for state files (rwkv-tui state/session files, time_state ``.pth``).

Everything comes from the engine thread as events (:class:`~tui.protocol.InspectorUpdate`,
:class:`~tui.protocol.StateDiffReady`, …) and every action goes back as an engine command: the
pane never touches a tensor it did not receive.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

from rich.table import Table
from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Button, ContentSwitcher, DataTable, Label, Static

from engine import state_io
from tui.actions import bindings_for
from tui.messages import EngineRequest, RewindRequested
from tui.protocol import (
    BranchesInfo, ConversationInfo, DiffStates, ExportTimeState, Fork, ImportTimeState, InspectorUpdate, LoadState,
    ModelSummary, ResumeSession, SaveState, StateDiffReady, StateRef, SwitchBranch,
)
from tui.screens.path_prompt import PathPrompt
from tui.screens.state_file_prompt import StateFileChoice, StateFilePrompt
from tui.safe_text import plain
from tui.think import split_reply
from tui.widgets.state_bars import LayerBars
from tui.widgets.state_diff import StateDiffView
from tui.widgets.state_heatmap import StateHeatmap
from tui.widgets.state_sparkline import StateChangeSparkline
from tui.widgets.status_line import human_bytes


def _preview(text: str, width: int = 28) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def _flat(values: object) -> list[float]:
    items = values.tolist() if hasattr(values, "tolist") else values  # type: ignore[union-attr]
    return [float(v) for v in items]  # type: ignore[union-attr]


class StatePane(Horizontal):
    BINDINGS = bindings_for("state")

    DEFAULT_CSS = """
    StatePane { height: 1fr; }
    StatePane .region { border: round $panel-lighten-2; border-title-color: $primary; padding: 0 1; }
    StatePane #state-left { width: 1fr; }
    StatePane #state-right { width: 1fr; }
    StatePane #inspector-region { height: 1fr; }
    StatePane #inspector-switcher { height: 1fr; }
    StatePane #inspector-live, StatePane #inspector-diff, StatePane #inspector-live-scroll { height: 1fr; }
    StatePane #state-sparkline { margin-bottom: 1; }
    StatePane .inspector-caption { color: $text-muted; text-style: bold; }
    StatePane #state-bars { margin-bottom: 1; }
    StatePane #numbers-region { height: auto; }
    StatePane #snapshot-region { height: 1fr; }
    StatePane #state-numbers { height: auto; }
    StatePane #snapshots { height: 1fr; background: transparent; }
    StatePane #state-actions { height: 1; margin: 0 1 1 1; }
    StatePane #state-actions Button { margin-right: 1; min-width: 0; width: auto; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.model: ModelSummary | None = None
        self.info: ConversationInfo | None = None
        self._confirm_rewind: int | None = None
        #: The numbers shown, by label (for tests and for the panes that will build on this).
        self.numbers: dict[str, str] = {}
        #: The turn marked as the other side of a diff (``m``), or None: then the live state.
        self.marked: int | None = None
        self.branches: BranchesInfo | None = None
        self._live_numbers: dict[str, str] = {}

    def compose(self) -> ComposeResult:
        with Vertical(id="state-left"):
            with Vertical(id="inspector-region", classes="region") as inspector:
                inspector.border_title = "Live state"
                with ContentSwitcher(initial="inspector-live", id="inspector-switcher"):
                    with Vertical(id="inspector-live"):
                        # Always in view: the one number that moves with every token.
                        yield StateChangeSparkline("Δ/token", id="state-sparkline")
                        with VerticalScroll(id="inspector-live-scroll"):
                            yield Label("WKV state norm per layer × head", classes="inspector-caption")
                            yield StateHeatmap(id="state-heatmap")
                            yield Label("token-shift vector magnitude per layer", classes="inspector-caption")
                            yield LayerBars(id="state-bars")
                    with VerticalScroll(id="inspector-diff"):
                        yield StateDiffView(id="state-diff")
            numbers = Vertical(Static(id="state-numbers"), id="numbers-region", classes="region")
            numbers.border_title = "Numbers"
            yield numbers
        with Vertical(id="state-right"):
            snapshots = Vertical(DataTable(id="snapshots", cursor_type="row", zebra_stripes=True),
                                 id="snapshot-region", classes="region")
            snapshots.border_title = "Snapshots: the state before each turn"
            snapshots.border_subtitle = "m marks · d diffs · f forks · r rewinds"
            yield snapshots
            with Horizontal(id="state-actions"):
                yield Button("Rewind", id="rewind", variant="warning", disabled=True, compact=True,
                             tooltip="Back to the state before the selected turn, dropping it and later turns (r, twice)")
                yield Button("Fork", id="fork", disabled=True, compact=True,
                             tooltip="A new branch that ends with the selected turn (f)")
                yield Button("Diff", id="diff", disabled=True, compact=True,
                             tooltip="Selected snapshot vs the marked one (m), or vs the live state (d)")
                yield Button("Save…", id="save-state", compact=True,
                             tooltip="Write the live chat state to a file (s)")
                yield Button("Load…", id="load-state", compact=True,
                             tooltip="Continue from a state, session or time_state file (l)")

    def on_mount(self) -> None:
        table = self.query_one("#snapshots", DataTable)
        table.add_columns("Turn", "Tokens", "Snapshot", "You", "Reply")
        self._refresh_numbers()

    @property
    def heatmap(self) -> StateHeatmap:
        return self.query_one("#state-heatmap", StateHeatmap)

    @property
    def token_shift_bars(self) -> LayerBars:
        return self.query_one("#state-bars", LayerBars)

    @property
    def sparkline(self) -> StateChangeSparkline:
        return self.query_one("#state-sparkline", StateChangeSparkline)

    @property
    def diff_view(self) -> StateDiffView:
        return self.query_one("#state-diff", StateDiffView)

    @property
    def showing(self) -> str:
        """"live" or "diff": what the inspector region shows."""
        current = self.query_one("#inspector-switcher", ContentSwitcher).current or "inspector-live"
        return current.removeprefix("inspector-")

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
        if self.marked is not None and self.marked >= len(info.turns):
            self.marked = None
        self._refresh_numbers()
        table = self.query_one("#snapshots", DataTable)
        selected_row = table.cursor_row
        table.clear()
        for turn in info.turns:
            table.add_row(
                f"{turn.index + 1}{' ◆' if turn.index == self.marked else ''}",
                f"{turn.tokens_before:,}" if turn.tokens_before is not None else "–",
                "kept" if turn.has_snapshot else f"replay {turn.replay_tokens:,}",
                plain(_preview(turn.user, 13)),
                plain(_preview(split_reply(turn.reply)[1] or turn.reply, 13)),
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
        rows += list(self._live_numbers.items())
        if self.branches is not None and len(self.branches.names) > 1:
            b = self.branches
            rows.append(("Branch", f"{b.current + 1} of {len(b.names)} · {b.names[b.current]}"))
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="bold", no_wrap=True)
        grid.add_column()
        for what, value in rows:
            grid.add_row(what, plain(value))
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
        self.query_one("#fork", Button).disabled = index is None
        self.query_one("#diff", Button).disabled = index is None
        if self._confirm_rewind is not None and self._confirm_rewind == index and self.info is not None:
            dropped = len(self.info.turns) - index
            replay = self.info.turns[index].replay_tokens
            cost = f", re-feed {replay:,} tokens" if replay else ""
            button.label = f"Press again: drop {dropped} turn{'s' if dropped != 1 else ''}{cost}"
        else:
            self._confirm_rewind = None
            button.label = "Rewind"

    @on(DataTable.RowHighlighted, "#snapshots")
    def _row_highlighted(self) -> None:
        if self._confirm_rewind is not None and self._selected_turn() == self._confirm_rewind:
            return  # the table was refreshed under the same selection: stay armed
        self._confirm_rewind = None
        self._update_rewind_button()

    @on(Button.Pressed, "#rewind")
    def _rewind_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.action_rewind()

    def action_rewind(self) -> None:
        """First press arms, second press (same turn) rewinds: it drops turns."""
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
        self.action_save()

    def action_save(self) -> None:
        default = Path.cwd() / f"rwkv-state-{time.strftime('%Y%m%d-%H%M%S')}{state_io.SUFFIX}"

        def chosen(path: str | None) -> None:
            if path:
                self.post_message(EngineRequest(SaveState(path)))

        self.app.push_screen(PathPrompt("Save the live chat state", str(default), mode="save"), chosen)

    @on(Button.Pressed, "#load-state")
    def _load_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.action_load()

    def action_load(self) -> None:
        def chosen(choice: StateFileChoice | None) -> None:
            # The engine thread tells state, session and time_state files apart: reading a file
            # here would block the UI, and its errors are reported there as one line.
            if choice is not None:
                self.post_message(EngineRequest(LoadState(choice.path, choice.allow_other_model, choice.orientation)))

        note = ("A state file starts a new conversation from it; a session file brings its transcript back; "
                "a .pth is read as time_state. Checked against the model first.")
        self.app.push_screen(StateFilePrompt("Load a state, session or time_state file", str(Path.cwd()) + "/",
                                             mode="open", note=note, offer_other_weights=True), chosen)

    def action_import_time_state(self) -> None:
        def chosen(choice: StateFileChoice | None) -> None:
            if choice is not None:
                self.post_message(EngineRequest(ImportTimeState(choice.path, choice.orientation)))

        note = "blocks.N.att.time_state tensors (H, N, N); token shift starts at zero. A new conversation starts."
        self.app.push_screen(StateFilePrompt("Import a state-tuning time_state file", str(Path.cwd()) + "/",
                                             mode="open", note=note), chosen)

    def action_export_time_state(self) -> None:
        default = Path.cwd() / f"rwkv-time-state-{time.strftime('%Y%m%d-%H%M%S')}.pth"

        def chosen(choice: StateFileChoice | None) -> None:
            if choice is not None:
                self.post_message(EngineRequest(ExportTimeState(choice.path, choice.orientation)))

        note = "Only the WKV matrices are written: time_state has no token-shift vectors."
        self.app.push_screen(StateFilePrompt("Export the live state as time_state (.pth)", str(default),
                                             mode="save", note=note), chosen)

    def action_resume(self) -> None:
        self.post_message(EngineRequest(ResumeSession("")))

    # ------------------------------------------------------------------ fork and branches

    @on(Button.Pressed, "#fork")
    def _fork_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.action_fork()

    def action_fork(self) -> None:
        index = self._selected_turn()
        if index is None:
            self.notify("Select a turn to fork from.", severity="warning", timeout=3)
            return
        self.post_message(EngineRequest(Fork(index)))

    def set_branches(self, branches: BranchesInfo) -> None:
        self.branches = branches
        self._refresh_numbers()

    def action_next_branch(self) -> None:
        b = self.branches
        if b is None or len(b.names) < 2:
            self.notify("There is one branch: fork one from a turn with f.", severity="warning", timeout=3)
            return
        self.post_message(EngineRequest(SwitchBranch((b.current + 1) % len(b.names))))

    # ------------------------------------------------------------------ live numbers

    def on_inspector_update(self, update: InspectorUpdate) -> None:
        """New numbers from the engine thread (a few times a second at most)."""
        if update.reset:
            self.sparkline.clear()
        if update.changes:
            self.sparkline.push(update.changes)
        stats = update.stats
        if stats is None:
            return
        if self.info is not None and stats.tokens_seen != self.info.tokens_seen:
            self.info = replace(self.info, tokens_seen=stats.tokens_seen)  # moves while a reply streams
        self.heatmap.set_values(stats.wkv_norms)
        self.token_shift_bars.set_series({"att shift": _flat(stats.att_x_norms), "ffn shift": _flat(stats.ffn_x_norms)})
        self._live_numbers = {
            "Dtype": stats.dtype,
            "WKV norm": f"{stats.wkv_total_norm:.4g} total · max |entry| {stats.wkv_max_abs:.4g}",
        }
        self._refresh_numbers()

    # ------------------------------------------------------------------ diff

    @on(Button.Pressed, "#diff")
    def _diff_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.action_compare()

    def action_mark(self) -> None:
        index = self._selected_turn()
        if index is None:
            return
        self.marked = None if self.marked == index else index
        if self.info is not None:
            self.set_conversation(self.info)
        if self.marked is not None:
            self.notify(f"Marked the snapshot before turn {index + 1}; select another and press d.", timeout=3)

    def action_compare(self) -> None:
        index = self._selected_turn()
        if index is None:
            self.notify("Select a snapshot to compare.", severity="warning", timeout=3)
            return
        selected = StateRef("turn", index)
        if self.marked is not None and self.marked != index:
            # Marked first: "A vs B" reads in the order the user picked them.
            self.post_message(EngineRequest(DiffStates(StateRef("turn", self.marked), selected)))
        else:
            self.post_message(EngineRequest(DiffStates(selected, StateRef("live"))))

    def action_compare_file(self) -> None:
        def chosen(choice: StateFileChoice | None) -> None:
            if choice is not None:
                ref = StateRef("file", path=choice.path, orientation=choice.orientation,
                               allow_other_model=choice.allow_other_model)
                self.post_message(EngineRequest(DiffStates(StateRef("live"), ref)))

        self.app.push_screen(StateFilePrompt("Compare the live state with a file", str(Path.cwd()) + "/",
                                             mode="open", offer_other_weights=True), chosen)

    def show_diff(self, ready: StateDiffReady) -> None:
        self.diff_view.show(ready.diff, ready.label_a, ready.label_b)
        self.query_one("#inspector-switcher", ContentSwitcher).current = "inspector-diff"
        self.query_one("#inspector-region").border_title = plain(f"Difference: {ready.label_a} vs {ready.label_b}")
        self.query_one("#inspector-region").border_subtitle = "v: back to the live state"

    def action_show_live(self) -> None:
        self.query_one("#inspector-switcher", ContentSwitcher).current = "inspector-live"
        region = self.query_one("#inspector-region")
        region.border_title = "Live state"
        region.border_subtitle = ""
