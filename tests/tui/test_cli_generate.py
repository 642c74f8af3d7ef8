"""`rwkv-tui generate`: streams to stdout, one-line errors, exit codes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tui.cli import main

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tui.cli", *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )


def test_generate_streams_and_reports_stats(tiny_checkpoint: Path) -> None:
    result = _run("generate", "--model", str(tiny_checkpoint), "--tokenizer", "bytes", "--prompt", "Hi",
                  "--max-tokens", "12", "--seed", "4", "--stats")
    assert result.returncode == 0, result.stderr
    assert "12 tokens" in result.stderr and "tok/s" in result.stderr
    again = _run("generate", "--model", str(tiny_checkpoint), "--tokenizer", "bytes", "--prompt", "Hi",
                 "--max-tokens", "12", "--seed", "4")
    assert again.stdout == result.stdout, "a fixed seed repeats the output exactly"


def test_generate_chat_mode_uses_conversation(tiny_checkpoint: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["generate", "--model", str(tiny_checkpoint), "--tokenizer", "bytes", "--prompt", "hello",
                 "--chat", "--max-tokens", "5", "--seed", "1"])
    assert code == 0
    assert capsys.readouterr().out.endswith("\n")


def test_missing_model_is_one_line_error(tmp_path: Path) -> None:
    result = _run("generate", "--model", str(tmp_path / "missing.pth"), "--prompt", "x")
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0
    assert "missing.pth: no such file" in result.stderr
    assert "Traceback" not in result.stderr


def test_invalid_sampling_setting_is_one_line_error(tiny_checkpoint: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["generate", "--model", str(tiny_checkpoint), "--prompt", "x", "--top-p", "3"])
    assert code == 1
    assert "top_p must be between 0 and 1" in capsys.readouterr().err


@pytest.mark.parametrize(("flag", "value", "message"), [
    ("--seed", str(2**64), "seed must be between 0 and 18446744073709551615"),  # was a traceback from torch
    ("--max-tokens", "0", "max_tokens must be ≥ 1"),
    ("--temperature", "nan", "temperature must be ≥ 0"),
])
def test_out_of_range_numbers_are_one_line_errors(
    tiny_checkpoint: Path, capsys: pytest.CaptureFixture[str], flag: str, value: str, message: str
) -> None:
    code = main(["generate", "--model", str(tiny_checkpoint), "--prompt", "x", flag, value])
    err = capsys.readouterr().err
    assert code == 1 and message in err and err.count("\n") == 1


def test_reader_closing_the_pipe_ends_quietly(tiny_checkpoint: Path) -> None:
    """`rwkv-tui generate ... | head -c 1`: no traceback, no error status for a reader that left."""
    command = [sys.executable, "-m", "tui.cli", "generate", "--model", str(tiny_checkpoint), "--tokenizer", "bytes",
               "--prompt", "Hi", "--max-tokens", "400", "--seed", "2"]
    writer = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert writer.stdout is not None and writer.stderr is not None
    writer.stdout.read(1)
    writer.stdout.close()
    stderr = writer.stderr.read().decode()
    assert writer.wait(timeout=300) == 0
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr, stderr
