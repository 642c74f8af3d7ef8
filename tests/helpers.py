"""Helpers for tests that need external programs, a GPU or an unreadable file."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import pytest

REQUIRE_TOOLS = os.environ.get("RWKV_TUI_REQUIRE_TOOLS") == "1"


def require_tool(*names: str) -> None:
    """Skip unless every program is on PATH; in CI (RWKV_TUI_REQUIRE_TOOLS=1) fail instead,
    so a missing install step can never turn a real-system test into a silent skip."""
    missing = [n for n in names if shutil.which(n) is None]
    if missing:
        message = f"needs {', '.join(missing)} on PATH"
        if REQUIRE_TOOLS:
            pytest.fail(message + " (RWKV_TUI_REQUIRE_TOOLS=1)")
        pytest.skip(message)


def deny_reading(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``path`` unreadable: chmod for ordinary users; as root (who reads anything), a
    ``Path.open`` that answers EACCES for this one file, the way the OS would for anyone else."""
    path.chmod(0)
    if os.geteuid() != 0:
        return
    real_open = Path.open

    def refuse(self, *args, **kwargs):
        if Path(self) == path:
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", refuse)
