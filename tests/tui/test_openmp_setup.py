"""The rwkv-tui process waits passively in OpenMP, and nothing it starts inherits that."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

ENTRY_PROBE = """
import json, os, subprocess, sys
before = dict(os.environ)
import tui.cli
import torch  # what the app loads next, if the entry point has not
child = subprocess.run([sys.executable, '-c', 'import json, os; print(json.dumps(dict(os.environ)))'],
                       capture_output=True, text=True, check=True).stdout
print(json.dumps({'unchanged': dict(os.environ) == before, 'child_unchanged': json.loads(child) == before}))
"""


def _run_entry(extra_env: dict[str, str]) -> tuple[dict, str]:
    """Import the entry point in a fresh interpreter with libgomp asked to print what it read."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMP_")}
    env.update(extra_env, OMP_DISPLAY_ENV="TRUE")
    result = subprocess.run([sys.executable, "-c", ENTRY_PROBE], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1]), result.stdout + result.stderr


def test_the_entry_point_runs_passive_openmp_without_changing_the_environment() -> None:
    report, output = _run_entry({})
    assert "OMP_WAIT_POLICY = 'PASSIVE'" in output  # what torch's OpenMP runtime read at load
    assert report == {"unchanged": True, "child_unchanged": True}


def test_a_users_own_wait_policy_wins() -> None:
    report, output = _run_entry({"OMP_WAIT_POLICY": "ACTIVE"})
    assert "OMP_WAIT_POLICY = 'ACTIVE'" in output
    assert report == {"unchanged": True, "child_unchanged": True}
