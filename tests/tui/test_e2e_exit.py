"""End to end: how the real ``rwkv-tui`` in tmux ends, and what the conversation is left as
(issues 19.5 and 17.4).

SIGTERM (``kill``, a service manager) and SIGHUP (the terminal closing) must end the app as Ctrl+Q
does: the conversation autosaved and the terminal restored. SIGKILL cannot be handled, so what
must hold then is that the autosave already has the last finished turn. An autosave that cannot be
written is said in the app and, at exit, in one line on stderr.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from engine import get_tokenizer, load_model
from engine.session import autosave_path, find_autosave, load_session
from tests.helpers import require_tool
from tests.tui.test_e2e_tmux import LETTERS, ROOT, SAFETY_NET, letter_model

MESSAGE = "hello from tmux"
DONE = "Assistant  48 tokens"


class Terminal:
    """A private tmux server with one session running the app; the app's pid comes from a file
    its shell writes before ``exec``, so signals go to the app itself."""

    def __init__(self, tmp_path: Path, model: Path, state_home: Path | None = None, max_tokens: int = 48) -> None:
        self.tmp_path = tmp_path
        self.model = model
        self.server = ["tmux", "-L", f"rwkv-sig-{uuid.uuid4().hex[:8]}", "-f", os.devnull]
        self.session = f"rwkv-sig-{uuid.uuid4().hex[:8]}"
        config_home = tmp_path / "xdg-config"
        (config_home / "rwkv-tui").mkdir(parents=True, exist_ok=True)
        (config_home / "rwkv-tui" / "config.json").write_text(json.dumps({"sampling": {"max_tokens": max_tokens, "seed": 5}}))
        self.env = {
            **os.environ, "PYTHONPATH": str(ROOT), "XDG_CONFIG_HOME": str(config_home),
            "XDG_STATE_HOME": str(state_home or tmp_path / "xdg-state"), "XDG_DATA_HOME": str(tmp_path / "xdg-data"),
            "XDG_CACHE_HOME": os.environ.get("XDG_CACHE_HOME", str(Path.home() / ".cache")),
            "TERM": "xterm-256color",
        }
        self.pid_file = tmp_path / "app.pid"

    def start(self) -> int:
        """Start the app; returns its pid once the model is loaded."""
        self.pid_file.unlink(missing_ok=True)
        app = " ".join(shlex.quote(part) for part in (
            sys.executable, "-m", "tui.cli", "--model", str(self.model), "--tokenizer", "bytes",
            "--device", "cpu", "--dtype", "fp32",
        ))
        inner = f"echo $$ > {shlex.quote(str(self.pid_file))}; exec {app}"
        command = f"sh -c {shlex.quote(inner)}; echo EXIT=$?; sleep 60"
        if self.alive_session():
            self.tmux("respawn-pane", "-k", "-t", self.session, command)
        else:
            self.tmux("new-session", "-d", "-s", self.session, "-x", "110", "-y", "32", "-c", str(ROOT), command)
        self.wait_for(lambda s: "letters (" in s and ("Message the model" in s or "Resume" in s), SAFETY_NET,
                      "the app and its model")
        return int(self.pid_file.read_text())

    def tmux(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*self.server, *args], check=True, env=self.env, capture_output=True, text=True)

    def alive_session(self) -> bool:
        return subprocess.run([*self.server, "has-session", "-t", self.session], capture_output=True).returncode == 0

    def screen(self) -> str:
        return subprocess.run([*self.server, "capture-pane", "-p", "-t", self.session],
                              capture_output=True, text=True).stdout

    def query(self, variable: str) -> str:
        return self.tmux("display-message", "-p", "-t", self.session, f"#{{{variable}}}").stdout.strip()

    def keys(self, *keys: str) -> None:
        self.tmux("send-keys", "-t", self.session, *keys)

    def wait_for(self, predicate, timeout: float, what: str) -> str:
        deadline = time.monotonic() + timeout
        screen = ""
        while time.monotonic() < deadline:
            screen = self.screen()
            if predicate(screen):
                return screen
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {what}; screen was:\n{screen}")

    def chat(self, text: str) -> None:
        """Type a message and wait until its reply has finished on screen."""
        self.keys(text)
        self.wait_for(lambda s: text in s, SAFETY_NET, "the typed text")
        self.keys("Enter")
        self.wait_for(lambda s: DONE in s, SAFETY_NET, "the reply to finish")

    def close(self) -> None:
        subprocess.run([*self.server, "kill-server"], capture_output=True)


def wait_gone(pid: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    raise AssertionError(f"process {pid} still runs after {timeout} s")


@pytest.fixture
def terminal(tmp_path: Path):
    require_tool("tmux")
    model = letter_model(tmp_path / "letters.pth")
    term = Terminal(tmp_path, model)
    yield term
    term.close()


def saved_turns(term: Terminal) -> list[tuple[str, str]]:
    """The autosave as the app would resume it (the tests' XDG state folder is the app's)."""
    assert os.environ["XDG_STATE_HOME"] == term.env["XDG_STATE_HOME"]
    model = load_model(term.model, device="cpu", dtype="fp32")
    if find_autosave(model) is None:
        return []
    conversation = load_session(autosave_path(model), model, get_tokenizer("bytes"))
    return [(t.user, t.reply) for t in conversation.turns]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_a_signal_saves_the_conversation_and_restores_the_terminal(terminal: Terminal, signum: int) -> None:
    pid = terminal.start()
    terminal.chat(MESSAGE)
    os.kill(pid, signum)
    screen = terminal.wait_for(lambda s: "EXIT=" in s, SAFETY_NET, "the app to exit")
    assert f"EXIT={128 + signum}" in screen
    assert "Traceback" not in screen
    # Back on the normal screen, mouse reporting off: the terminal is usable again.
    assert terminal.query("alternate_on") == "0"
    assert terminal.query("mouse_any_flag") == "0"
    turns = saved_turns(terminal)
    assert len(turns) == 1 and turns[0][0] == MESSAGE and set(turns[0][1]) <= set(LETTERS.decode())

    if signum == signal.SIGTERM:
        # And the next start offers it back.
        terminal.start()
        terminal.wait_for(lambda s: "Resume your last conversation" in s and "1 turn" in s, SAFETY_NET, "the resume offer")
        terminal.keys("r")
        terminal.wait_for(lambda s: MESSAGE in s and "Resumed 1 turn" in s, SAFETY_NET, "the resumed transcript")


def test_closing_the_terminal_mid_reply_saves_the_conversation(tmp_path: Path) -> None:
    """The terminal goes away while a reply streams: the app gets SIGHUP with no terminal to draw
    on (its UI may never manage to exit), stops the reply, saves it and ends."""
    require_tool("tmux")
    term = Terminal(tmp_path, letter_model(tmp_path / "letters.pth"), max_tokens=1_000_000)
    try:
        pid = term.start()
        term.keys(MESSAGE)
        term.wait_for(lambda s: MESSAGE in s, SAFETY_NET, "the typed text")
        term.keys("Enter")
        term.wait_for(lambda s: "● generating" in s, SAFETY_NET, "the reply to stream")
    finally:
        term.close()  # the pty goes away: the kernel hangs the app up
    wait_gone(pid, SAFETY_NET)
    turns = saved_turns(term)
    assert [user for user, _ in turns] == [MESSAGE]
    assert turns[0][1] and set(turns[0][1]) <= set(LETTERS.decode())  # the part that streamed


def test_after_sigkill_the_last_finished_turn_is_already_saved(terminal: Terminal) -> None:
    pid = terminal.start()
    terminal.chat(MESSAGE)
    terminal.chat("and a second one")
    deadline = time.monotonic() + SAFETY_NET
    while len(saved_turns(terminal)) < 2:  # written in the background right after the reply
        assert time.monotonic() < deadline, "the autosave never held the second turn"
        time.sleep(0.2)
    os.kill(pid, signal.SIGKILL)
    wait_gone(pid, SAFETY_NET)
    assert [user for user, _ in saved_turns(terminal)] == [MESSAGE, "and a second one"]
    sessions = Path(terminal.env["XDG_STATE_HOME"]) / "rwkv-tui" / "sessions"
    assert [p.name for p in sessions.iterdir()] == [autosave_path(load_model(terminal.model, device="cpu")).name]


def test_an_autosave_that_cannot_be_written_is_said_in_the_app_and_at_exit(tmp_path: Path) -> None:
    require_tool("tmux")
    blocker = tmp_path / "a-file"
    blocker.write_text("where the state folder should be")
    term = Terminal(tmp_path, letter_model(tmp_path / "letters.pth"), state_home=blocker / "state")
    try:
        term.start()
        term.chat(MESSAGE)
        term.wait_for(lambda s: "Conversation not autosaved" in s, SAFETY_NET, "the notification")
        term.keys("C-q")
        screen = term.wait_for(lambda s: "EXIT=" in s, SAFETY_NET, "the app to exit")
        lines = [line for line in screen.splitlines() if "not autosaved" in line]
        assert len(lines) == 1 and lines[0].startswith("rwkv-tui: the conversation was not autosaved: cannot create")
        assert "EXIT=1" in screen and term.query("alternate_on") == "0"
    finally:
        term.close()
