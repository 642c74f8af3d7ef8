"""Autosave (issue 19.5, 19.6 and 17.4): after every change, in the background, newest only; a
failure is said in one line and keeps the previous autosave; model switches keep the previous
model's conversation; killed saves leave nothing behind for long. Also 19.10: an unreadable
``--state`` file."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import engine.atomic
from engine import get_tokenizer
from engine.session import autosave_path, find_autosave, load_session, sessions_dir
from engine.synthetic import random_state_dict, save_checkpoint
from tests.tui.conftest import Recorder, notice_texts, open_model_file_dialog, settings, start, wait_until
from tests.tui.test_state_pane import SIZE, chat
from tui.autosaver import Autosaver
from tui.protocol import (
    AutosaveSession, ConversationInfo, Edit, Fork, LoadModel, ModelLoaded, ModelLoadFailed, Notice, Regenerate,
    ReplyFinished, Rewind, Send, SessionAvailable,
)
from tui.worker import EngineWorker

WAIT = 180.0  # a safety net against a hung test, never a timing window


# ---------------------------------------------------------------------------- the background writer


def test_saves_that_pile_up_are_coalesced_to_the_newest() -> None:
    outcomes: list[tuple[Path, BaseException | None]] = []
    saver = Autosaver(lambda path, error: outcomes.append((path, error)))
    first_started, release = threading.Event(), threading.Event()
    written: list[str] = []

    def slow_first() -> None:
        first_started.set()
        assert release.wait(WAIT)
        written.append("first")

    target, other = Path("a"), Path("b")
    saver.submit(target, slow_first)
    assert first_started.wait(WAIT)
    for name in ("second", "third", "newest"):  # while the first is being written
        saver.submit(target, lambda name=name: written.append(name))
    saver.submit(other, lambda: written.append("other file"))
    assert not saver.idle
    release.set()
    assert saver.flush(WAIT) and saver.idle
    assert written == ["first", "newest", "other file"]
    assert outcomes == [(target, None), (target, None), (other, None)]

    def broken() -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    saver.submit(target, broken)
    saver.submit(other, lambda: written.append("after a failure"))
    assert saver.close(WAIT)
    assert isinstance(outcomes[3][1], OSError) and written[-1] == "after a failure"
    saver.submit(target, lambda: written.append("after close"))  # ignored: the app is gone
    assert saver.idle and written[-1] == "after a failure"


# ---------------------------------------------------------------------------- the engine thread


@pytest.fixture
def saving_worker(tiny_checkpoint: Path):
    """The engine thread with autosave on, as the app runs it."""
    w = EngineWorker(autosave=True)
    w.start()
    rec = Recorder(w)
    _load(w, rec, tiny_checkpoint)
    yield w, rec
    w.close()


def _load(w: EngineWorker, rec: Recorder, checkpoint: Path) -> None:
    rec.clear()
    w.submit(LoadModel("chat", str(checkpoint), device="cpu", dtype="fp32", tokenizer="bytes"))
    rec.wait_for(lambda e: isinstance(e, (ModelLoaded, ModelLoadFailed)))
    assert rec.of(ModelLoaded), rec.events
    rec.wait_for(lambda e: isinstance(e, ConversationInfo))


def _settle(w: EngineWorker) -> None:
    """Until every command so far has run and the saves it asked for are written."""
    deadline = time.monotonic() + WAIT
    while not w.settled:
        assert time.monotonic() < deadline, "the engine did not settle"
        time.sleep(0.01)
    assert w.autosaver is not None and w.autosaver.flush(WAIT)


def _saved_turns(model) -> list[str]:
    conversation = load_session(autosave_path(model), model, get_tokenizer("bytes"))
    return [t.user for t in conversation.turns]


def _notices(w: EngineWorker, rec: Recorder) -> list[Notice]:
    rec.events.extend(w.drain())
    return rec.of(Notice)


def _turn(w: EngineWorker, rec: Recorder, command) -> ReplyFinished:
    rec.clear()
    w.submit(command)
    return rec.wait_for(lambda e: isinstance(e, ReplyFinished))


def test_every_change_to_the_conversation_is_autosaved(saving_worker, tiny_model) -> None:
    w, rec = saving_worker
    _turn(w, rec, Send("one", settings()))
    _settle(w)
    assert _saved_turns(tiny_model) == ["one"]

    _turn(w, rec, Send("two", settings()))
    _settle(w)
    assert _saved_turns(tiny_model) == ["one", "two"]
    saved = load_session(autosave_path(tiny_model), tiny_model, get_tokenizer("bytes"))
    assert saved.state.equal(w.conversation.state)

    _turn(w, rec, Edit(1, "two, edited", settings()))
    _settle(w)
    assert _saved_turns(tiny_model) == ["one", "two, edited"]

    before = w.conversation.turns[1].reply
    _turn(w, rec, Regenerate(settings(seed=99)))
    _settle(w)
    assert _saved_turns(tiny_model) == ["one", "two, edited"]
    assert load_session(autosave_path(tiny_model), tiny_model, get_tokenizer("bytes")).turns[1].reply == (
        w.conversation.turns[1].reply
    ) != before

    w.submit(Rewind(1))
    _settle(w)
    assert _saved_turns(tiny_model) == ["one"]

    _turn(w, rec, Send("three", settings()))
    w.submit(Fork(0))
    _settle(w)
    assert _saved_turns(tiny_model) == ["one"]  # the branch the chat now shows

    # Back to no turns at all: the autosave keeps the last conversation that had some.
    w.submit(Rewind(0))
    _settle(w)
    assert _saved_turns(tiny_model) == ["one"]


def test_a_stopped_reply_is_autosaved(saving_worker, tiny_model) -> None:
    w, rec = saving_worker
    rec.clear()
    w.submit(Send("go on and on", settings(max_tokens=100_000)))
    rec.wait_for(lambda e: e.__class__.__name__ == "ReplyDelta")
    w.stop()
    finished = rec.wait_for(lambda e: isinstance(e, ReplyFinished))
    assert finished.turn.stop_reason == "cancelled"
    _settle(w)
    saved = load_session(autosave_path(tiny_model), tiny_model, get_tokenizer("bytes"))
    assert [t.reply for t in saved.turns] == [w.conversation.turns[0].reply]
    assert saved.state.equal(w.conversation.state)


def test_a_turn_stopped_before_its_first_token_is_autosaved(saving_worker, tiny_model, monkeypatch) -> None:
    """Issue 19.6 as the app met it: Esc right after Enter stops the turn once the engine has taken
    it but before its first token. Send A, B, C (stopped so), D: the autosave must hold all four."""
    w, rec = saving_worker
    taken, go_on = threading.Event(), threading.Event()
    generate = EngineWorker._generate

    def gated(self, conversation, generation, index):
        if conversation.turns[index].user == "C":
            taken.set()
            assert go_on.wait(WAIT)
        return generate(self, conversation, generation, index)

    monkeypatch.setattr(EngineWorker, "_generate", gated)
    _turn(w, rec, Send("A", settings()))
    _turn(w, rec, Send("B", settings()))
    rec.clear()
    w.submit(Send("C", settings()))
    assert taken.wait(WAIT)
    w.stop()  # the engine has the turn but has not fed a token of it
    go_on.set()
    stopped = rec.wait_for(lambda e: isinstance(e, ReplyFinished))
    assert stopped.turn.stop_reason == "cancelled" and stopped.turn.generated_tokens == 0
    notices = _notices(w, rec)
    _turn(w, rec, Send("D", settings()))
    w.submit(AutosaveSession())
    _settle(w)
    notices += _notices(w, rec)
    assert not [n for n in notices if n.severity == "error"], notices
    assert w.autosave_problem is None
    assert _saved_turns(tiny_model) == ["A", "B", "C", "D"]


def _refuse_writes(monkeypatch, error: int) -> None:
    """A disk that refuses the data (tests may run as root, where chmod stops nothing)."""
    def refuse(fd: int) -> None:
        raise OSError(error, os.strerror(error))

    monkeypatch.setattr(engine.atomic.os, "fsync", refuse)


@pytest.mark.parametrize("error", [errno.ENOSPC, errno.EROFS])
def test_a_failed_autosave_says_so_once_and_keeps_the_previous_one(saving_worker, tiny_model, monkeypatch, error) -> None:
    w, rec = saving_worker
    _turn(w, rec, Send("kept", settings()))
    _settle(w)
    previous = autosave_path(tiny_model).read_bytes()

    _refuse_writes(monkeypatch, error)
    notices: list[Notice] = []
    for text in ("lost one", "lost two"):
        _turn(w, rec, Send(text, settings()))
        _settle(w)
        notices += _notices(w, rec)
    problems = [n for n in notices if "not autosaved" in n.message]
    assert len(problems) == 1, notices  # said once, not after every turn
    assert problems[0].severity == "error" and "\n" not in problems[0].message
    assert os.strerror(error) in problems[0].message and str(autosave_path(tiny_model)) in problems[0].message
    assert w.autosave_problem is not None
    assert autosave_path(tiny_model).read_bytes() == previous
    assert [p.name for p in autosave_path(tiny_model).parent.iterdir()] == [autosave_path(tiny_model).name]

    monkeypatch.undo()  # the disk has room again: the next turn saves everything
    _turn(w, rec, Send("saved again", settings()))
    _settle(w)
    assert w.autosave_problem is None
    assert any("Autosaved the conversation again" in n.message for n in _notices(w, rec))
    assert _saved_turns(tiny_model) == ["kept", "lost one", "lost two", "saved again"]


def test_an_autosave_folder_that_cannot_be_made_is_reported(tiny_checkpoint, tmp_path, monkeypatch) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("XDG_STATE_HOME", str(blocker / "state"))
    w = EngineWorker(autosave=True)
    w.start()
    rec = Recorder(w)
    try:
        _load(w, rec, tiny_checkpoint)
        _turn(w, rec, Send("nowhere to go", settings()))
        _settle(w)
        problem = rec.wait_for(lambda e: isinstance(e, Notice) and "not autosaved" in e.message)
        assert "cannot create" in problem.message and "\n" not in problem.message
        _turn(w, rec, Send("still chatting", settings()))  # the chat goes on
    finally:
        assert w.close()
    assert w.autosave_problem is not None and "cannot create" in w.autosave_problem


def test_switching_models_keeps_the_previous_conversation_resumable(saving_worker, tiny_model, tmp_path) -> None:
    w, rec = saving_worker
    _turn(w, rec, Send("for the first model", settings()))
    other = save_checkpoint(random_state_dict(2, 128, 256, seed=8), tmp_path / "other.pth")
    _load(w, rec, other)
    assert w.conversation.turns == [] and w.conversation.model is not tiny_model
    assert _saved_turns(tiny_model) == ["for the first model"]

    _load(w, rec, Path(tiny_model.info.path))
    offer = rec.wait_for(lambda e: isinstance(e, SessionAvailable))
    assert "1 turn" in offer.description and "for the first model" in offer.description


def test_stale_temporary_files_are_removed_at_start(tiny_checkpoint) -> None:
    folder = sessions_dir()
    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = folder / f".autosave-x.state.safetensors.{int(done.stdout)}.abcd1234.tmp"
    live = folder / f".autosave-y.state.safetensors.{os.getppid()}.efgh5678.tmp"  # another instance saving
    for temp in (dead, live):
        temp.write_bytes(b"\0" * 1024)
    w = EngineWorker(autosave=True)
    w.start()
    rec = Recorder(w)
    try:
        _load(w, rec, tiny_checkpoint)  # the clean-up runs before the first command
        assert not dead.exists() and live.exists()
    finally:
        w.close()


# ---------------------------------------------------------------------------- --state files (19.10)


@pytest.mark.parametrize("how", ["permission", "directory", "under-a-file"])
def test_an_unreadable_state_file_is_one_line_and_the_chat_works(worker, tiny_checkpoint, tmp_path, monkeypatch, how) -> None:
    w, rec = worker
    path = tmp_path / "start.state.safetensors"
    if how == "permission":
        # As root chmod stops nothing, so the file system says no here.
        path.write_bytes(b"whatever")
        real_open = Path.open

        def refuse(self, *args, **kwargs):
            if self == path:
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
            return real_open(self, *args, **kwargs)

        monkeypatch.setattr(Path, "open", refuse)
    elif how == "directory":
        path.mkdir()
    else:
        (tmp_path / "file").write_text("x")
        path = tmp_path / "file" / "start.state.safetensors"
    rec.clear()
    w.submit(LoadModel("chat", str(tiny_checkpoint), device="cpu", dtype="fp32", tokenizer="bytes",
                       state_path=str(path)))
    rec.wait_for(lambda e: isinstance(e, (ModelLoaded, ModelLoadFailed)))
    assert rec.of(ModelLoaded), rec.events
    problem = rec.wait_for(lambda e: isinstance(e, Notice))
    assert problem.severity == "error" and "\n" not in problem.message and str(path) in problem.message
    assert "initial state" in problem.message
    if how == "permission":
        assert "Permission denied" in problem.message
    _turn(w, rec, Send("still works", settings()))


# ---------------------------------------------------------------------------- the app


async def test_the_app_autosaves_after_each_turn_not_only_at_exit(make_app, tiny_model) -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await start(pilot, app)
        await chat(pilot, app, "saved while running")
        await wait_until(pilot, lambda: (s := find_autosave(tiny_model)) is not None and s.turns == 1,
                         timeout=WAIT, what="the autosave of the first turn")
        await chat(pilot, app, "and the second")
        await wait_until(pilot, lambda: (s := find_autosave(tiny_model)) is not None and s.turns == 2,
                         timeout=WAIT, what="the autosave of the second turn")


async def test_a_failed_autosave_is_shown_and_said_at_exit(make_app, tiny_model, monkeypatch) -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await start(pilot, app)
        await chat(pilot, app, "this one is saved")
        await wait_until(pilot, lambda: find_autosave(tiny_model) is not None, timeout=WAIT, what="the autosave")
        previous = autosave_path(tiny_model).read_bytes()
        _refuse_writes(monkeypatch, errno.ENOSPC)
        await chat(pilot, app, "this one cannot be")
        await wait_until(pilot, lambda: any("not autosaved" in m for m in notice_texts(app)), timeout=WAIT,
                         what="the notification")
        await chat(pilot, app, "the chat still works")
        assert len(app.worker.conversation.turns) == 3
    assert autosave_path(tiny_model).read_bytes() == previous
    assert len(app.exit_messages) == 1
    line = app.exit_messages[0]
    assert "\n" not in line and "not autosaved" in line and "No space left on device" in line


async def test_loading_another_model_keeps_the_conversation_resumable(make_app, tiny_model, tmp_path) -> None:
    from textual.widgets import Input

    other = save_checkpoint(random_state_dict(2, 128, 256, seed=8), tmp_path / "other.pth")
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await start(pilot, app)
        await chat(pilot, app, "before the switch")
        await open_model_file_dialog(pilot, app)
        assert "autosaved" in app.screen.note
        app.screen.query_one("#path", Input).value = str(other)
        await pilot.press("enter")
        await wait_until(pilot, lambda: app.worker.conversation is not None
                         and app.worker.conversation.model.info.path == str(other), what="the other model")
        summary = find_autosave(tiny_model)
        assert summary is not None and summary.turns == 1 and summary.last_user == "before the switch"
