"""The CPU thread count: --threads, RWKV_TUI_THREADS, else the cores the cgroup and the
affinity mask leave this process."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from engine import cpu_threads as threads
from engine.errors import EngineError


@pytest.fixture(autouse=True)
def _reset(monkeypatch):
    monkeypatch.delenv(threads.THREADS_ENV, raising=False)
    monkeypatch.setattr(threads, "_own_cgroups", lambda: ["/"])
    yield
    threads.set_cpu_threads(None)


def _affinity() -> int:
    return len(os.sched_getaffinity(0))


@pytest.mark.parametrize("cpu_max,expected", [("150000 100000", 2), ("50000 100000", 1), ("max 100000", None)])
def test_cgroup_v2_quota_caps_the_affinity_mask(tmp_path: Path, cpu_max, expected) -> None:
    (tmp_path / "cpu.max").write_text(cpu_max + "\n")
    want = _affinity() if expected is None else min(_affinity(), expected)
    assert threads.available_cpus(tmp_path) == want


def test_cgroup_v1_quota(tmp_path: Path) -> None:
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("100000")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000")
    assert threads.available_cpus(tmp_path) == 1
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1")
    assert threads.available_cpus(tmp_path) == _affinity()


def test_no_cgroup_files_means_the_affinity_mask(tmp_path: Path) -> None:
    assert threads.available_cpus(tmp_path / "missing") == _affinity()


def test_threads_flag_beats_the_environment_which_beats_the_default(monkeypatch) -> None:
    monkeypatch.setattr(threads, "available_cpus", lambda: 5)
    assert threads.cpu_threads() == 5
    monkeypatch.setenv(threads.THREADS_ENV, "3")
    assert threads.cpu_threads() == 3
    threads.set_cpu_threads(7)
    assert threads.cpu_threads() == 7
    with pytest.raises(EngineError, match="at least 1"):
        threads.set_cpu_threads(0)


def test_a_loaded_model_uses_the_chosen_count(tiny_checkpoint: Path) -> None:
    from engine import load_model

    threads.set_cpu_threads(3)
    assert load_model(tiny_checkpoint, device="cpu").backend.threads == 3
