"""The README's two set-up commands are the contract with a new user; CI must run the second."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return re.findall(r"```bash\n(.+?)\n```", text, flags=re.S)[:2]


def test_readme_starts_with_run_and_test_commands() -> None:
    run, test = _readme_commands()
    assert run.rstrip().endswith("rwkv-tui") and "pip install" in run
    assert "pytest" in test and "\n" not in run and "\n" not in test


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    _, test = _readme_commands()
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert test.strip() in ci_lines
