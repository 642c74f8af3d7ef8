"""Text we did not write is shown as text in every pane and dialog (issue 19, items 1 and 2).

Markup-like text (``[/]``, ``[b]``, ``[x=``, ``[@click=quit]``) must show as typed, never crash
or vanish; terminal control sequences (OSC, CSI, DCS, C1, DEL) from model replies, files, file
names and port names must reach the screen as visible pictures, never as controls. Each test
reads what the compositor hands the terminal driver (tests/tui/rendered.py).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from textual.widgets import DataTable, Input, Select

from engine.music.ports import PortInfo, PortListing
from engine.state_stats import state_diff
from tests.tui.conftest import notices, open_model_file_dialog, start, wait_idle, wait_until
from tests.tui.rendered import MARKUP, SEQUENCES, controls_in, screen_text
from tui.music_protocol import MusicProgress, MusicStarted
from tui.protocol import (
    ConversationInfo, Notice, PromptRejected, ReplyDelta, ReplyFailed, ReplyFinished, StateDiffReady,
    TranscriptReplaced, TurnStarted, TurnView,
)
from tui.screens.path_prompt import PathPrompt
from tui.screens.resume_prompt import ResumePrompt

SIZE = (170, 50)
#: What the issue's user typed, with the other markup-like pieces in front (they reach the
#: snapshot list's 13-character preview too).
MESSAGE = "[/] [b] [x= [@click=quit] what does [/] mean in a regex?"
RAW = " ".join(raw for raw, _ in SEQUENCES.values())
SHOWN = [shown for _, shown in SEQUENCES.values()]
#: A reply that tries everything at once.
REPLY = f"Reply {' '.join(MARKUP)} {RAW} end"


def assert_literal(app, *expected: str) -> str:
    """The screen shows every expected string and hands the terminal no control character."""
    text = screen_text(app)
    print(text)  # shown when the test fails
    assert controls_in(text) == [], f"control characters reach the terminal: {controls_in(text)}"
    missing = [piece for piece in expected if piece not in text]
    assert missing == [], f"not shown literally: {missing}"
    assert app.is_running
    return text


def turn(index: int, user: str, reply: str) -> TurnView:
    return TurnView(index, user, reply, "stop string", 3, 0.0, True, 0)


# ---------------------------------------------------------------------------------- chat


async def test_chat_message_and_streamed_reply_are_shown_literally(make_app) -> None:
    app = make_app(model=None)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(0.2)
        outbox = app.worker.outbox
        outbox.put(TurnStarted(0, MESSAGE, ""))
        outbox.put(ReplyDelta(0, REPLY[:20]))
        await wait_until(pilot, lambda: (v := app.chat_pane.view_for(0, "assistant")) is not None and v.answer,
                         what="the streamed reply")
        outbox.put(ReplyDelta(0, REPLY[20:]))
        await wait_until(pilot, lambda: app.chat_pane.view_for(0, "assistant").answer == REPLY, what="all of it")
        await pilot.pause(0.1)
        assert_literal(app, *MARKUP, *SHOWN)  # while it streams

        outbox.put(ReplyFinished(turn(0, MESSAGE, f"<think>{RAW} [/]</think>{REPLY}")))
        view = app.chat_pane.view_for(0, "assistant")
        await wait_until(pilot, lambda: not view.streaming, what="the end of the reply")
        await pilot.pause(0.1)
        assert_literal(app, MESSAGE, *MARKUP, *SHOWN)
        assert view.answer == REPLY, "what a copy takes stays exactly what the model wrote"
        view.query_one("Collapsible").collapsed = False  # the reasoning, unfolded
        await pilot.pause(0.1)
        assert_literal(app, *SHOWN)


async def test_a_loaded_transcript_and_its_snapshot_list_are_shown_literally(make_app, tiny_model) -> None:
    app = make_app(model=None)
    turns = (turn(0, MESSAGE, REPLY), turn(1, f"{RAW} second", "[b]bold?[/b] [x="))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(0.2)
        app.worker.outbox.put(TranscriptReplaced(turns))
        app.worker.outbox.put(ConversationInfo(turns, 10, 1024, 2, 2048, 1 << 20))
        await wait_until(pilot, lambda: len(app.chat_pane.views()) == 4, what="the transcript")
        await pilot.pause(0.1)
        assert_literal(app, MESSAGE, *SHOWN, "[b]bold?[/b] [x=")

        await pilot.press("f4")
        table = app.state_pane.query_one("#snapshots", DataTable)
        await wait_until(pilot, lambda: table.row_count == 2, what="the snapshot list")
        await pilot.pause(0.1)
        assert_literal(app, "[/] [b] [x= …", "[b]bold?[/b]", "␛]0;PWNED␇ ␛…")

        # A comparison with a file names the file in the region's title.
        zero = tiny_model.zero_state()
        label = "x [b] [x= \x1b]0;PWNED\x07.state"
        app.worker.outbox.put(StateDiffReady(state_diff(zero, zero), "live", label))
        await wait_until(pilot, lambda: app.state_pane.showing == "diff", what="the diff")
        await pilot.pause(0.1)
        assert_literal(app, "live vs x [b] [x= ␛]0;PWNED␇.state")


async def test_resume_after_a_message_with_markup_and_a_random_reply(make_app) -> None:
    """The issue's scenario: send "what does [/] mean in a regex?", quit, start again. The resume
    dialog's description quotes the message; it raised MarkupError at every start. The tiny
    model's replies are random bytes, control characters included."""
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await start(pilot, app)
        app.chat_pane.prompt.set_text(MESSAGE)
        app.chat_pane.prompt.focus()
        await pilot.press("enter")
        await wait_until(pilot, lambda: len(app.chat_pane.views()) == 2, what="the turn")
        await wait_idle(pilot, app)
        assert_literal(app, MESSAGE)

    again = make_app()
    async with again.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: isinstance(again.screen, ResumePrompt), what="the resume offer")
        await pilot.pause(0.1)
        assert_literal(again, "1 turn", "“[/] [b] [x=", "[@click=quit] what does [/] mean in a regex?”")
        await pilot.press("r")
        await wait_until(pilot, lambda: len(again.chat_pane.views()) == 2, what="the resumed transcript")
        await pilot.pause(0.1)
        assert_literal(again, MESSAGE)


# ---------------------------------------------------------------------------------- notifications


async def test_notifications_show_their_text_literally(make_app) -> None:
    app = make_app(model=None)
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await pilot.pause(0.2)
        outbox = app.worker.outbox
        outbox.put(Notice("error", f"/tmp/[x=: cannot read {RAW}"))
        outbox.put(PromptRejected("[b]typed[/b]", "[/] is not allowed here"))
        outbox.put(TurnStarted(0, "hi", ""))
        outbox.put(ReplyFailed(0, "hi", "[@click=quit] failed"))
        app.chat_pane.notify("a pane's own: [b]x[/b]")  # widgets pass markup=True
        await wait_until(pilot, lambda: len(notices(app)) >= 4, what="the notifications")
        await pilot.pause(0.3)
        assert_literal(app, "/tmp/[x=: cannot read", *SHOWN[:2], "Not sent: [/] is not allowed here",
                       "[@click=quit] failed", "a pane's own: [b]x[/b]")


# ---------------------------------------------------------------------------------- path dialogs


async def path_dialog(pilot, app) -> PathPrompt:
    return await open_model_file_dialog(pilot, app)


async def type_path(pilot, dialog: PathPrompt, value: str) -> None:
    """Type ``value`` and let the dialog check it and the suggester answer (events, not a clock)."""
    field = dialog.query_one("#path", Input)
    field.value = value
    field.cursor_position = len(value)
    await pilot.pause()
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


async def test_path_dialog_shows_paths_and_suggestions_literally(make_app, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # short relative paths: the whole of each fits in the field
    folder = Path("a [b] dir")
    folder.mkdir()
    (folder / "[b]model [x= [@click=quit].pth").write_bytes(b"")
    hostile = Path("esc")
    hostile.mkdir()
    (hostile / "\x1b]0;PWNED\x07.pth").write_bytes(b"")
    app = make_app(model=None)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(0.2)
        dialog = await path_dialog(pilot, app)

        await type_path(pilot, dialog, "/tmp/[x=")  # crashed: "Expected markup value"
        assert_literal(app, "/tmp/[x=: no such file")

        await type_path(pilot, dialog, str(folder))
        assert_literal(app, "a [b] dir: is a folder")  # "[b]" vanished

        await type_path(pilot, dialog, f"{folder}/[")
        assert dialog.query_one("#path", Input)._suggestion.endswith("[@click=quit].pth")
        assert_literal(app, "[b]model [x= [@click=quit].pth")  # the suggestion, as typed

        await type_path(pilot, dialog, f"{hostile}/")
        assert dialog.query_one("#path", Input)._suggestion == ""  # a name with controls is not offered
        assert_literal(app)

        await type_path(pilot, dialog, f"{hostile}/\x1b]0;PWNED\x07.pth")  # pasted, say
        assert_literal(app, "␛]0;PWNED")

        await type_path(pilot, dialog, "x" * 5000)  # too long for the file system: one line, no crash
        assert "cannot use this path" in str(dialog.query_one("#path-note").render())
        assert_literal(app)


# ---------------------------------------------------------------------------------- model names


async def test_model_names_from_file_names_are_shown_literally(make_app, tiny_checkpoint: Path, tmp_path: Path) -> None:
    name = "m [b] [x= [@click=quit] \x1b]0;PWNED\x07"
    hostile = shutil.copy(tiny_checkpoint, tmp_path / f"{name}.pth")
    app = make_app(model=str(hostile), music_model=str(hostile))
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await start(pilot, app)
        await wait_until(pilot, lambda: app.music_pane.model is not None, what="the music model")
        await pilot.pause(0.2)
        shown = "m [b] [x= [@click=quit] ␛]0;PWNED␇"
        assert_literal(app, f"chat: {shown}", f"music: {shown}", f"Chat model {shown} loaded")
        await pilot.press("f4")
        await pilot.pause(0.2)
        assert app.state_pane.numbers["Model"] == hostile.stem
        assert_literal(app, shown)  # the state pane's numbers
        await pilot.press("f3")
        await pilot.pause(0.2)
        assert_literal(app, f"Music model: {shown}")


# ---------------------------------------------------------------------------------- music pane


async def test_music_text_ports_and_settings_errors_are_shown_literally(make_app, tiny_checkpoint: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    port = "synth [b] [x= [@click=quit] \x1b]0;PWNED\x07"
    monkeypatch.setattr("tui.panes.music.list_output_ports",
                        lambda: PortListing([PortInfo("JACK", port)], ["ALSA: [/] no sequencer"]))
    app = make_app(model=None, music_model=str(tiny_checkpoint))
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.music_pane.model is not None, what="the music model")
        await pilot.press("f3")
        pane = app.music_pane
        select = pane.transport.query_one("#port", Select)
        await wait_until(pilot, lambda: len(select._options) > 2, what="the port listing")
        # Token / ABC text as the music thread sends it, control sequences and all.
        pane.worker.outbox.put(MusicStarted(pane.run, "abc", "X:1\nT:[b]tune[/b] [x=\n"))
        lines = "\n".join(raw for raw, _ in SEQUENCES.values())  # one a line: the view is narrow
        pane.worker.outbox.put(MusicProgress(pane.run, f"K:C [/]\n{lines}\n", (), 0.0, 3, 0.0))
        pane._wake()
        await wait_until(pilot, lambda: any("K:C" in line for line in pane.text_view.lines), what="the text")
        select.expanded = True
        await pilot.pause(0.2)
        assert_literal(app, "T:[b]tune[/b] [x=", "K:C [/]", *SHOWN, "synth [b] [x= [@click=quit] ␛]0;PWNED␇ (JACK)")
        select.expanded = False

        field = pane.settings_panel.query_one("#field-continue_from", Input)
        field.value = "/tmp/[x="
        await pilot.pause(0.2)
        assert_literal(app, "/tmp/[x=")


async def test_chat_settings_errors_are_shown_literally(make_app) -> None:
    app = make_app(model=None)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(0.2)
        await pilot.press("f5")
        field = app.chat_pane.query_one("#field-temperature", Input)
        field.value = "[/]"
        await pilot.pause(0.2)
        assert app.chat_pane.query_one("#field-temperature").has_class("-invalid")
        assert_literal(app, "[/]")
