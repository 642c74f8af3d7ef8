"""The engine is a library: importing it must never pull in Textual or Rich."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('textual', 'rich'):
            raise ImportError(f'engine must not import {name}')
sys.meta_path.insert(0, Block())
import engine, engine.chat, engine.generate, engine.sampling, engine.tokenizers, engine.model
import pkgutil, importlib
for info in pkgutil.walk_packages(engine.__path__, 'engine.'):
    importlib.import_module(info.name)
print('ok')
"""


def test_engine_imports_without_textual_or_rich() -> None:
    result = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("ok")
