"""The TUI talks to the engine only through its public API: no torch in ``tui/``, and the engine
thread's modules work without Textual (they are tested and could be reused on their own)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_tui_never_imports_torch() -> None:
    offenders = [
        str(path.relative_to(ROOT)) for path in (ROOT / "tui").rglob("*.py")
        if any(name == "torch" or name.startswith("torch.") for name in imported_modules(path))
    ]
    assert offenders == []


def test_tui_uses_only_public_engine_modules() -> None:
    private = [
        (str(path.relative_to(ROOT)), name) for path in (ROOT / "tui").rglob("*.py")
        for name in imported_modules(path)
        if name.startswith("engine.") and (name.startswith("engine.backends") or "._" in name)
    ]
    assert private == []


def test_engine_thread_modules_import_without_textual() -> None:
    code = (
        "import sys; sys.modules['textual'] = None\n"
        "import tui.worker, tui.protocol, tui.think, tui.pacing, tui.failures, tui.music_worker\n"
        "print('ok')"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
