"""The state inspector pane with the real engine on the tiny model: live numbers, diff, fork,
rewind, time_state import/export, bad files, autosave and resume, palette entries."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch
from textual.widgets import DataTable, Input

from engine.session import autosave_path
from engine.state import State
from engine.state_stats import state_diff, state_stats
from engine.time_state import Orientation, export_time_state, import_time_state
from tests.tui.conftest import notice_texts, run_from_palette, start, wait_idle, wait_until
from tui.messages import EngineRequest
from tui.protocol import Send
from tui.screens.path_prompt import PathPrompt
from tui.screens.resume_prompt import ResumePrompt
from tui.screens.state_file_prompt import StateFilePrompt

SIZE = (130, 42)


async def chat(pilot, app, *messages: str) -> None:
    """Send each message and wait for its reply to finish (not just for the engine to look idle)."""
    for text in messages:
        shown = len(app.chat_pane.views())
        await pilot.press(*text, "enter")
        await wait_until(pilot, lambda: len(app.chat_pane.views()) >= shown + 2, what=f"the turn for {text!r}")
        await wait_idle(pilot, app)


async def answer_prompt(pilot, app, path: Path, orientation: str | None = None) -> None:
    assert isinstance(app.screen, StateFilePrompt)
    app.screen.query_one("#path", Input).value = str(path)
    if orientation is not None:
        app.clear_notifications()  # toasts would cover the radio buttons
        await pilot.pause(0.05)
        await pilot.click(f"#orientation-{orientation}")
        assert app.screen.chosen_orientation.value == orientation
    app.screen.query_one("#path", Input).focus()
    await pilot.press("enter")
    await pilot.pause(0.05)


async def refused_keeping_the_chat(pilot, app, key: str, bad: Path, kept: tuple) -> str:
    """Give ``bad`` to the file dialog that ``key`` opens: one line names it, and the app keeps
    running with the conversation, its state and its turns exactly as they were."""
    conversation, state, turns = kept
    await pilot.press(key)
    await answer_prompt(pilot, app, bad)
    await wait_until(pilot, lambda: any(bad.name in m for m in notice_texts(app)), what=f"{bad.name} refused")
    message = next(m for m in notice_texts(app) if bad.name in m)
    assert "\n" not in message and "Traceback" not in message and "engine failure" not in message
    assert app.is_running and app.worker.conversation is conversation and conversation.state is state
    assert conversation.turns == turns
    return message


def select_row(app, row: int) -> DataTable:
    table = app.state_pane.query_one("#snapshots", DataTable)
    table.focus()
    table.move_cursor(row=row)
    return table


async def test_heat_map_and_bars_show_the_live_state_after_a_turn(make_app) -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await start(pilot, app)
        pane = app.state_pane
        await wait_until(pilot, lambda: pane.heatmap.shape == (2, 2), what="the first summary")
        assert all(v == 0 for row in pane.heatmap.values for v in row)  # a fresh chat: zero state
        await chat(pilot, app, "hello there")
        expected = state_stats(app.worker.conversation.state)
        await wait_until(pilot, lambda: pane.heatmap.values == expected.wkv_norms.tolist(), what="the heat map")
        assert all(v > 0 for row in pane.heatmap.values for v in row)
        assert pane.token_shift_bars.series["att shift"] == expected.att_x_norms.tolist()
        assert pane.token_shift_bars.series["ffn shift"] == expected.ffn_x_norms.tolist()
        assert pane.numbers["Dtype"] == "float32"


async def test_the_sparkline_follows_generation_while_the_pane_is_shown(make_app) -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await start(pilot, app)
        await chat(pilot, app, "not watched")
        assert app.state_pane.sparkline.values == []  # the chat pane was showing: no per-token work
        await pilot.press("f4")
        assert app.worker.inspector.watching
        app.post_message(EngineRequest(Send("now watched", app.chat_settings)))
        await wait_until(pilot, lambda: len(app.chat_pane.views()) == 4, what="the reply")
        await wait_idle(pilot, app)
        generated = app.worker.conversation.turns[-1].stats.generated_tokens
        values = app.state_pane.sparkline.values
        # One change per generated token after the first (which has no previous token state).
        assert len(values) == generated - 1 and all(v > 0 for v in values)
        await pilot.press("f2")
        assert not app.worker.inspector.watching


async def test_diff_of_two_snapshots_and_of_live_against_a_file(make_app, tmp_path: Path) -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await start(pilot, app)
        await chat(pilot, app, "one", "two")
        await pilot.press("f4")
        pane = app.state_pane
        await wait_until(pilot, lambda: pane.query_one("#snapshots", DataTable).row_count == 2)
        select_row(app, 0)
        await pilot.press("m")
        assert pane.marked == 0
        select_row(app, 1)
        await pilot.press("d")
        await wait_until(pilot, lambda: pane.showing == "diff" and pane.diff_view.diff is not None, what="the diff")
        turns = app.worker.conversation.turns
        expected = state_diff(turns[0].state_before, turns[1].state_before)
        shown = pane.diff_view.diff
        assert torch.equal(shown.wkv, expected.wkv) and not shown.identical
        assert (shown.wkv_relative > 0).all()  # every layer and head moved between the turns
        assert pane.diff_view.summary_text().startswith("before turn 1 (0 tokens) vs before turn 2")
        await pilot.press("v")
        assert pane.showing == "live"

        # Live against a state file saved from the live state: identical.
        saved = tmp_path / "now.state.safetensors"
        await pilot.press("s")
        app.screen.query_one("#path", Input).value = str(saved)
        await pilot.press("enter")
        await wait_until(pilot, lambda: saved.exists(), what="the saved state")
        await pilot.press("c")
        await answer_prompt(pilot, app, saved)
        await wait_until(pilot, lambda: pane.showing == "diff" and pane.diff_view.diff.identical, what="live vs file")
        assert "identical" in pane.diff_view.summary_text()


async def test_fork_makes_a_branch_and_both_branches_stay(make_app) -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await start(pilot, app)
        await chat(pilot, app, "one", "two", "three")
        original = app.worker.conversation
        replies = [t.reply for t in original.turns]
        await pilot.press("f4")
        await wait_until(pilot, lambda: app.state_pane.query_one("#snapshots", DataTable).row_count == 3)
        select_row(app, 1)
        await pilot.press("f")
        await wait_until(pilot, lambda: app.worker.conversation is not original, what="the fork")
        fork = app.worker.conversation
        assert [t.reply for t in fork.turns] == replies[:2]
        assert fork.state.equal(original.turns[2].state_before)  # continues from after turn 2
        assert len(original.turns) == 3  # the old branch is intact
        await wait_until(pilot, lambda: len(app.chat_pane.views()) == 4, what="the chat to show the branch")
        await wait_until(pilot, lambda: app.state_pane.numbers.get("Branch", "").startswith("2 of 2"))
        await pilot.press("f2")
        await chat(pilot, app, "a different third")
        assert len(fork.turns) == 3 and fork.turns[2].user == "a different third"
        await pilot.press("f4", "b")
        await wait_until(pilot, lambda: app.worker.conversation is original, what="switching back")
        await wait_until(pilot, lambda: len(app.chat_pane.views()) == 6)
        assert [v.index for v in app.chat_pane.views() if v.role == "user"] == [0, 1, 2]
        assert original.turns[2].user == "three"


async def test_rewind_then_resend_reproduces_the_reply(make_app) -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await start(pilot, app)
        await chat(pilot, app, "one", "two")
        first_reply = app.worker.conversation.turns[0].reply
        before = app.worker.conversation.turns[0].state_before
        await pilot.press("f4")
        await wait_until(pilot, lambda: app.state_pane.query_one("#snapshots", DataTable).row_count == 2)
        select_row(app, 0)
        await pilot.press("r")
        assert len(app.worker.conversation.turns) == 2  # the first press only arms
        await pilot.press("r")
        await wait_until(pilot, lambda: not app.worker.conversation.turns, what="the rewind")
        assert app.worker.conversation.state is before
        await pilot.press("f2")
        await chat(pilot, app, "one")
        assert app.worker.conversation.turns[0].reply == first_reply


def _random_wkv(tiny_model, seed: int) -> torch.Tensor:
    i = tiny_model.info
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(i.n_layer, i.n_head, i.head_size, i.head_size, generator=generator)


class _Hostile:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


async def test_time_state_import_lands_and_bad_files_change_nothing(make_app, tiny_model, tmp_path: Path) -> None:
    wkv = _random_wkv(tiny_model, 3)
    tuned = State(torch.zeros_like(tiny_model.zero_state().att_x), wkv, torch.zeros_like(tiny_model.zero_state().ffn_x))
    transposed_file = export_time_state(tmp_path / "tuned.pth", tuned, orientation=Orientation.TRANSPOSED)
    # Bad files: another model's shape, garbage, truncated, and a pickle that would run code.
    other = State(torch.zeros(3, 128), torch.zeros(3, 2, 64, 64), torch.zeros(3, 128))
    wrong_shape = export_time_state(tmp_path / "three-layers.pth", other)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"PK\x03\x04 definitely not a zip")
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(transposed_file.read_bytes()[:300])
    marker = tmp_path / "pwned"
    hostile = tmp_path / "hostile.pth"
    torch.save({"blocks.0.att.time_state": _Hostile(marker)}, hostile, pickle_protocol=pickle.DEFAULT_PROTOCOL)

    # Same shapes, other weights: refused by fingerprint.
    from engine import build_model
    from engine.state_io import save_state
    from engine.synthetic import random_state_dict

    other_model = build_model(random_state_dict(2, 128, 256, seed=99), path="other.pth", device="cpu", dtype="fp32")
    _, other_state = other_model.forward([1, 2, 3], None)
    foreign = save_state(tmp_path / "foreign.state.safetensors", other_state, other_model)

    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await start(pilot, app)
        await chat(pilot, app, "keep this conversation")
        conversation = app.worker.conversation
        state, turns = conversation.state, list(conversation.turns)
        await pilot.press("f4")
        # A truncated rwkv-tui state file, through Load.
        saved = tmp_path / "whole.state.safetensors"
        await pilot.press("s")
        app.screen.query_one("#path", Input).value = str(saved)
        await pilot.press("enter")
        await wait_until(pilot, lambda: saved.exists(), what="the saved state")
        cut_state = tmp_path / "cut.state.safetensors"
        cut_state.write_bytes(saved.read_bytes()[:-1000])
        for key, bad in (("i", wrong_shape), ("i", garbage), ("i", truncated), ("i", hostile), ("l", cut_state),
                         ("l", foreign)):
            await refused_keeping_the_chat(pilot, app, key, bad, (conversation, state, turns))
        assert not marker.exists()
        assert len(app.chat_pane.views()) == 2
        assert "from other weights" in next(m for m in notice_texts(app) if foreign.name in m)

        # The user's call: a state from other weights loads when asked to.
        await pilot.press("l")
        app.screen.query_one("#path", Input).value = str(foreign)
        app.clear_notifications()
        await pilot.pause(0.05)
        await pilot.click("#allow-other-model")
        app.screen.query_one("#path", Input).focus()
        await pilot.press("enter")
        await wait_until(pilot, lambda: app.worker.conversation.state.equal(other_state), what="loading anyway")
        assert not app.worker.conversation.turns

        # The good file, read transposed back: our layout holds exactly the original matrices.
        await pilot.press("i")
        await answer_prompt(pilot, app, transposed_file, "transposed")
        await wait_until(pilot, lambda: torch.equal(app.worker.conversation.state.wkv, wkv), what="the import")
        assert not app.worker.conversation.state.att_x.any()
        await wait_until(pilot, lambda: not app.chat_pane.views())
        expected = state_stats(app.worker.conversation.state).wkv_norms.tolist()
        await wait_until(pilot, lambda: app.state_pane.heatmap.values == expected, what="the heat map")
        # Read as stored instead, the same file gives the transposed matrices.
        await pilot.press("l")
        await answer_prompt(pilot, app, transposed_file, "as-stored")
        await wait_until(pilot, lambda: torch.equal(app.worker.conversation.state.wkv, wkv.transpose(-1, -2)))


async def test_export_time_state_and_save_load_from_the_chat_pane(make_app, tiny_model, tmp_path: Path) -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await start(pilot, app)
        await chat(pilot, app, "export me")
        live = app.worker.conversation.state
        await pilot.press("f4", "x")
        exported = tmp_path / "exported.pth"
        await answer_prompt(pilot, app, exported, "transposed")
        await wait_until(pilot, lambda: exported.exists(), what="the export")
        assert torch.equal(import_time_state(exported, tiny_model, orientation="transposed").wkv, live.wkv)
        assert any("token-shift vectors" in m for m in notice_texts(app))

        # Alt+S / Alt+L from the chat pane (the prompt has focus).
        await pilot.press("f2", "alt+s")
        assert app.chat_pane.prompt.text == ""  # the key did not type into the message box
        saved = tmp_path / "from-chat.state.safetensors"
        app.screen.query_one("#path", Input).value = str(saved)
        await pilot.press("enter")
        await wait_until(pilot, lambda: saved.exists(), what="the save")
        await pilot.press("ctrl+n")
        await wait_until(pilot, lambda: not app.worker.conversation.turns)
        await pilot.press("alt+l")
        await answer_prompt(pilot, app, saved)
        await wait_until(pilot, lambda: app.worker.conversation.state.equal(live), what="the load")


async def resume_offer(pilot, app, turns: int) -> None:
    """Wait for the start-up offer to resume the autosaved conversation and check what it says."""
    await wait_until(pilot, lambda: isinstance(app.screen, ResumePrompt), what="the resume offer")
    await pilot.pause(0.1)
    said = f"{turns} turn{'s' if turns != 1 else ''}"
    assert said in str(app.screen.query_one("#resume-description").render())


async def test_autosave_on_exit_and_resume_on_the_next_start(make_app, tiny_model) -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await start(pilot, app)
        await chat(pilot, app, "remember me", "and this")
        final = app.worker.conversation.state
        replies = [t.reply for t in app.worker.conversation.turns]
    path = autosave_path(tiny_model)
    assert path.is_file()

    again = make_app()
    async with again.run_test(size=SIZE) as pilot:
        await resume_offer(pilot, again, 2)
        await pilot.press("r")
        await wait_until(pilot, lambda: len(again.worker.conversation.turns) == 2, what="the resume")
        assert again.worker.conversation.state.equal(final)
        assert [t.reply for t in again.worker.conversation.turns] == replies
        await wait_until(pilot, lambda: len(again.chat_pane.views()) == 4, what="the transcript")
        await wait_until(pilot, lambda: again.state_pane.query_one("#snapshots", DataTable).row_count == 2)
        # The resumed conversation goes on from where it was.
        await chat(pilot, again, "one more")
        assert len(again.worker.conversation.turns) == 3

    fresh = make_app()
    async with fresh.run_test(size=SIZE) as pilot:
        await resume_offer(pilot, fresh, 3)
        await pilot.press("n")
        await pilot.pause(0.3)
        assert not fresh.worker.conversation.turns and not isinstance(fresh.screen, ResumePrompt)
        # Still there later, from the state pane.
        await pilot.press("f4", "u")
        await wait_until(pilot, lambda: len(fresh.worker.conversation.turns) == 3, what="the later resume")
        await wait_until(pilot, lambda: len(fresh.chat_pane.views()) == 6)


async def test_a_bug_in_a_ui_handler_still_autosaves_the_conversation(make_app, tiny_model, monkeypatch) -> None:
    """Textual ends the app on an exception in a handler; the conversation must survive it."""
    from tui.app import RwkvApp

    app = make_app()

    def broken(self, pane: str) -> None:
        raise RuntimeError("a bug in a key handler")

    with pytest.raises(RuntimeError, match="a bug in a key handler"):
        async with app.run_test(size=SIZE) as pilot:
            await start(pilot, app)
            await chat(pilot, app, "keep me safe")
            final = app.worker.conversation.state
            monkeypatch.setattr(RwkvApp, "action_show_pane", broken)
            await pilot.press("f4")
            await pilot.pause(0.2)
    assert autosave_path(tiny_model).is_file()

    again = make_app()
    async with again.run_test(size=SIZE) as pilot:
        await resume_offer(pilot, again, 1)
        await pilot.press("r")
        await wait_until(pilot, lambda: len(again.worker.conversation.turns) == 1, what="the resume")
        assert again.worker.conversation.state.equal(final)


async def test_state_flag_reads_a_time_state_file_in_the_asked_orientation(make_app, tiny_model, tmp_path: Path) -> None:
    from tui.app import LaunchOptions
    from tui.cli import build_parser

    wkv = _random_wkv(tiny_model, 5)
    zero = tiny_model.zero_state()
    tuned = export_time_state(tmp_path / "t.pth", State(zero.att_x, wkv, zero.ffn_x))
    args = build_parser([]).parse_args(["--state", str(tuned), "--state-orientation", "transposed", "--no-autosave"])
    options = LaunchOptions.from_args(args)
    assert options.state_orientation == "transposed" and not options.autosave
    app = make_app(state=str(tuned), state_orientation="transposed", autosave=False)
    async with app.run_test(size=SIZE) as pilot:
        await start(pilot, app)
        assert torch.equal(app.worker.conversation.state.wkv, wkv.transpose(-1, -2))
        await chat(pilot, app, "not kept")
    assert not autosave_path(tiny_model).exists()  # --no-autosave


async def test_state_actions_run_from_the_palette_and_the_chat(make_app, tmp_path: Path) -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await start(pilot, app)
        await chat(pilot, app, "one")
        await run_from_palette(pilot, app, "State: Diff")
        pane = app.state_pane
        await wait_until(pilot, lambda: pane.showing == "diff" and pane.diff_view.diff is not None, what="the diff")
        assert app.query_one("#panes").active == "state"
        assert pane.diff_view.summary_text().startswith("before turn 1 (0 tokens) vs live")
        await pilot.press("f2")
        await run_from_palette(pilot, app, "Chat: Save state")
        await wait_until(pilot, lambda: isinstance(app.screen, PathPrompt), what="the save dialog")


async def test_the_load_dialog_refuses_damaged_files_in_one_line_and_keeps_the_chat(
    make_app, tmp_path: Path, monkeypatch
) -> None:
    """Issue 19.3: each of these ended the app with a traceback from the load dialog."""
    import struct

    from tests.helpers import deny_reading

    files = {
        "empty.state.safetensors": b"",
        "three.state.safetensors": b"abc",
        "cut-header.state.safetensors": struct.pack("<Q", 400) + b'{"__metadata__": {"format": "rwkv',
        "bad-utf8.state.safetensors": struct.pack("<Q", 24) + b'{"__metadata__": "\xff\xfe"}',
        "huge-header.state.safetensors": struct.pack("<Q", 2**60) + b"{}",
        "locked.state.safetensors": b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ",
    }
    paths = []
    for name, data in files.items():
        paths.append(tmp_path / name)
        paths[-1].write_bytes(data)
    deny_reading(paths[-1], monkeypatch)

    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await start(pilot, app)
        await chat(pilot, app, "keep this conversation")
        conversation = app.worker.conversation
        kept = (conversation, conversation.state, list(conversation.turns))
        await pilot.press("f4")
        for path in paths:
            await refused_keeping_the_chat(pilot, app, "l", path, kept)
        assert "permission denied" in next(m for m in notice_texts(app) if "locked" in m).lower()
        assert len(app.chat_pane.views()) == 2


async def test_the_load_dialog_reads_a_time_state_file_in_the_chosen_orientation(make_app, tiny_model, tmp_path: Path) -> None:
    """What kind of file it is is decided on the engine thread; the orientation travels with the request."""
    wkv = _random_wkv(tiny_model, 5)
    zero = tiny_model.zero_state()
    tuned = export_time_state(tmp_path / "tuned.pth", State(zero.att_x, wkv, zero.ffn_x), orientation=Orientation.TRANSPOSED)
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await start(pilot, app)
        await pilot.press("f4", "l")
        await answer_prompt(pilot, app, tuned, "transposed")
        await wait_until(pilot, lambda: torch.equal(app.worker.conversation.state.wkv, wkv), what="the time_state")
