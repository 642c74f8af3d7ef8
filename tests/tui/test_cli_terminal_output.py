"""What the command line writes to a terminal has its control characters made visible; what it
writes into a pipe is exact (issue 19, item 2)."""

from __future__ import annotations

import io
import json
import os
import pty
import select
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from engine import get_tokenizer
from engine.state_io import save_state
from tests.engine.scripted import ScriptedModel
from tests.tui.rendered import SEQUENCES, controls_in
from tui.cli import main
from tui.terminal_text import TerminalSafeWriter, terminal_safe_output, visible_controls

ROOT = Path(__file__).resolve().parents[2]
RAW = " ".join(raw for raw, _ in SEQUENCES.values())
SHOWN = " ".join(shown for _, shown in SEQUENCES.values())


class FakeTerminal(io.StringIO):
    """A stream that says it is a terminal (what ``sys.stdout`` is in an interactive shell)."""

    def isatty(self) -> bool:
        return True


# ---------------------------------------------------------------------------------- the policy


def test_every_control_but_newline_and_tab_becomes_one_visible_character() -> None:
    for code in [*range(0x20), 0x7F, *range(0x80, 0xA0)]:
        char = chr(code)
        shown = visible_controls(f"a{char}b")
        if char in "\n\t":
            assert shown == f"a{char}b"
        else:
            assert len(shown) == 3 and controls_in(shown) == [], (hex(code), shown)
    assert visible_controls("\x1b]0;PWNED\x07") == "␛]0;PWNED␇"
    assert visible_controls("\x00\x7f\x9b") == "␀␡\ufffd"
    assert visible_controls("line\r\nnext\rover") == "line\nnext␍over"  # CR LF is a line break
    plain = "naïve café — 音楽 [b]x[/b]\n\tindented"
    assert visible_controls(plain) is plain  # nothing to do: the same string back


def test_a_terminal_writer_joins_a_cr_lf_split_across_writes() -> None:
    terminal = FakeTerminal()
    writer = TerminalSafeWriter(terminal)
    for piece in ("one\r", "\ntwo\r", "three\x1b", "[2J\r"):
        writer.write(piece)
    writer.finish()
    assert terminal.getvalue() == "one\ntwo␍three␛[2J␍"


def test_only_terminals_are_filtered(monkeypatch: pytest.MonkeyPatch) -> None:
    terminal, pipe = FakeTerminal(), io.StringIO()
    monkeypatch.setattr(sys, "stdout", terminal)
    monkeypatch.setattr(sys, "stderr", pipe)
    with terminal_safe_output():
        print(RAW)
        print(RAW, file=sys.stderr)
    assert sys.stdout is terminal and sys.stderr is pipe
    assert terminal.getvalue() == SHOWN + "\n"
    assert pipe.getvalue() == RAW + "\n"


# ---------------------------------------------------------------------------------- generate


@pytest.fixture
def scripted_reply(monkeypatch: pytest.MonkeyPatch) -> str:
    """`generate` with a model whose greedy reply is a string of control sequences."""
    reply = f"Hi {RAW} bye"
    model = ScriptedModel(list(reply.encode("utf-8")))
    monkeypatch.setattr("tui.commands.generate.load_model_from_args", lambda args: (model, get_tokenizer("bytes")))
    return reply


def _generate(reply: str) -> int:
    return main(["generate", "--prompt", "x", "--temperature", "0", "--presence-penalty", "0",
                 "--frequency-penalty", "0", "--max-tokens", str(len(reply.encode("utf-8")))])


def test_generate_shows_control_sequences_on_a_terminal(scripted_reply: str, monkeypatch) -> None:
    terminal = FakeTerminal()
    monkeypatch.setattr(sys, "stdout", terminal)
    assert _generate(scripted_reply) == 0
    assert terminal.getvalue() == f"Hi {SHOWN} bye\n"


def test_generate_into_a_pipe_writes_the_exact_reply(scripted_reply: str, capsys) -> None:
    assert _generate(scripted_reply) == 0
    assert capsys.readouterr().out == scripted_reply + "\n"


# ---------------------------------------------------------------------------------- state inspect


@pytest.fixture
def hostile_state(tmp_path: Path, tiny_model, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A state file whose header fields carry terminal control sequences (OSC 52 writes the
    clipboard): the model name, the app version and a free-form meta entry."""
    monkeypatch.setattr("engine.state_io.app_version", lambda: "9 \x1b]52;c;cHduZWQ=\x07")
    info = replace(tiny_model.info, path=str(tmp_path / "m \x1b]0;PWNED\x07 [b].pth"))
    state = tiny_model.zero_state()
    state.meta["note"] = "\x1bP+q544e\x1b\\ \x9b31m"
    return save_state(tmp_path / "hostile.state.safetensors", state, info)


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_state_inspect_shows_header_fields_visibly_on_a_terminal(hostile_state: Path, as_json: bool,
                                                                 monkeypatch) -> None:
    terminal = FakeTerminal()
    monkeypatch.setattr(sys, "stdout", terminal)
    assert main(["state", "inspect", str(hostile_state), *(["--json"] if as_json else [])]) == 0
    out = terminal.getvalue()
    assert controls_in(out) == []
    if as_json:
        data = json.loads(out)  # still JSON: the C0 controls were escaped by JSON itself
        assert data["model_name"] == "m \x1b]0;PWNED\x07 [b]" and data["meta"]["note"] == "\x1bP+q544e\x1b\\ \ufffd31m"
    else:
        for shown in ("m ␛]0;PWNED␇ [b]", "rwkv-tui 9 ␛]52;c;cHduZWQ=␇", "␛P+q544e␛\\ \ufffd31m"):
            assert shown in out


def test_state_inspect_into_a_pipe_is_exact(hostile_state: Path, capsys) -> None:
    assert main(["state", "inspect", str(hostile_state)]) == 0
    assert "m \x1b]0;PWNED\x07 [b]" in capsys.readouterr().out


def test_errors_quoting_a_file_name_are_visible_on_a_terminal(tmp_path: Path, monkeypatch) -> None:
    terminal = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert main(["state", "inspect", str(tmp_path / "x\x1b]0;PWNED\x07.state")]) == 1
    err = terminal.getvalue()
    assert controls_in(err) == [] and "x␛]0;PWNED␇.state" in err and err.count("\n") == 1


# ---------------------------------------------------------------------------------- a real terminal


def _run_on_a_terminal(*args: str) -> bytes:
    """Run ``rwkv-tui ARGS`` with stdout and stderr on a pseudo-terminal; all it wrote."""
    master, slave = pty.openpty()
    process = subprocess.Popen([sys.executable, "-m", "tui.cli", *args], cwd=ROOT, stdin=subprocess.DEVNULL,
                               stdout=slave, stderr=slave)
    os.close(slave)
    out = bytearray()
    try:
        while True:
            ready, _, _ = select.select([master], [], [], 300)
            assert ready, "the command wrote nothing for 300 s"
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the command exited and closed its side
                break
            if not chunk:
                break
            out += chunk
    finally:
        os.close(master)
        assert process.wait(timeout=300) == 0, out.decode("utf-8", "replace")
    return bytes(out)


def test_generate_on_a_real_terminal_shows_the_random_models_controls(tiny_checkpoint: Path) -> None:
    """The tiny model's random bytes are full of control characters: piped they come out
    exactly, on a terminal none of them reaches it (the terminal's own CR before each LF aside)."""
    args = ("generate", "--model", str(tiny_checkpoint), "--tokenizer", "bytes", "--prompt", "Hi",
            "--max-tokens", "200", "--seed", "2")
    piped = subprocess.run([sys.executable, "-m", "tui.cli", *args], cwd=ROOT, capture_output=True, timeout=300)
    assert piped.returncode == 0
    assert controls_in(piped.stdout.decode("utf-8", "replace").replace("\r\n", "\n")) != [], \
        "the reply should contain control characters for this test to mean something"
    shown = _run_on_a_terminal(*args).decode("utf-8", "replace").replace("\r\n", "\n")
    assert controls_in(shown) == []
    assert shown == visible_controls(piped.stdout.decode("utf-8", "replace"))
