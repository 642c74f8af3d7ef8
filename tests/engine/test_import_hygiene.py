"""The engine is a library: importing it must never pull in Textual or Rich."""

from __future__ import annotations

import json
import os
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


ENVIRONMENT_PROBE = """
import json, os, subprocess, sys
before = dict(os.environ)
import engine, engine.model, engine.music.player
child = subprocess.run([sys.executable, '-c', 'import json, os; print(json.dumps(dict(os.environ)))'],
                       capture_output=True, text=True, check=True).stdout
print(json.dumps({'unchanged': dict(os.environ) == before, 'child_unchanged': json.loads(child) == before,
                  'added': sorted(set(os.environ) - set(before))}))
"""


def test_importing_the_engine_leaves_the_process_environment_alone() -> None:
    """A library must not change its host's environment: an OpenMP wait policy set here once
    slowed llama.cpp started from the same process from 90 to 31 tok/s."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMP_")}
    result = subprocess.run([sys.executable, "-c", ENVIRONMENT_PROBE], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report == {"unchanged": True, "child_unchanged": True, "added": []}
