"""Helpers for tests that need external programs or a GPU."""

from __future__ import annotations

import os
import shutil

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
