"""engine.atomic: a save either lands whole or leaves the old file as it was."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from engine.atomic import atomic_write, atomic_write_bytes, atomic_write_text
from engine.errors import EngineError


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_write_then_replace(tmp_path: Path) -> None:
    target = tmp_path / "notes.md"
    atomic_write_text(target, "first")
    atomic_write_bytes(target, b"second")
    assert target.read_bytes() == b"second"
    assert _leftovers(tmp_path) == []


def test_failure_inside_the_writer_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "tune.mid"
    target.write_bytes(b"old")

    def half_then_fail(handle) -> None:
        handle.write(b"new but incomplete")
        raise RuntimeError("encoder crashed")

    with pytest.raises(RuntimeError):
        atomic_write(target, half_then_fail)
    assert target.read_bytes() == b"old"
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("where", ["missing-folder", "directory"])
def test_unwritable_targets_are_one_line_errors(tmp_path: Path, where: str) -> None:
    target = tmp_path / "no-such-folder" / "x.txt" if where == "missing-folder" else tmp_path
    with pytest.raises(EngineError) as caught:
        atomic_write_text(target, "x")
    message = str(caught.value)
    assert "\n" not in message and str(target) in message


def test_new_files_follow_the_umask_and_overwrites_keep_their_mode(tmp_path: Path) -> None:
    previous = os.umask(0o027)
    try:
        fresh = atomic_write_text(tmp_path / "export.md", "x")
        assert fresh.stat().st_mode & 0o777 == 0o640
        kept = tmp_path / "shared.md"
        kept.write_text("old")
        kept.chmod(0o664)
        atomic_write_text(kept, "new")
        assert kept.stat().st_mode & 0o777 == 0o664
    finally:
        os.umask(previous)


def test_a_new_private_file_gets_the_mode_asked_for_and_an_overwrite_keeps_its_own(tmp_path: Path) -> None:
    from engine.atomic import PRIVATE

    old = os.umask(0o022)
    try:
        target = atomic_write_bytes(tmp_path / "private.bin", b"secret", new_file_mode=PRIVATE)
        assert target.stat().st_mode & 0o777 == 0o600
        target.chmod(0o644)
        atomic_write_bytes(target, b"still shared", new_file_mode=PRIVATE)
        assert target.stat().st_mode & 0o777 == 0o644
        assert atomic_write_bytes(tmp_path / "plain.bin", b"x").stat().st_mode & 0o777 == 0o644
    finally:
        os.umask(old)


def test_a_temporary_file_names_the_process_writing_it(tmp_path: Path) -> None:
    """So that a later start can tell a dead writer's leftover from a live writer's work."""
    seen: list[str] = []
    atomic_write(tmp_path / "autosave-x.state.safetensors", lambda handle: seen.extend(_leftovers(tmp_path)))
    assert len(seen) == 1
    assert seen[0].startswith(f".autosave-x.state.safetensors.{os.getpid()}.") and seen[0].endswith(".tmp")


def test_stale_temporary_files_are_removed_and_live_ones_kept(tmp_path: Path) -> None:
    """Issue 19.5: every kill during a save left its temporary file (12 kills, 1.8 GB). The rule:
    a temporary file is stale when the process named in it is gone, or, whatever its name, when
    it has not been written to for STALE_TEMP_AGE (no save takes that long)."""
    import subprocess
    import sys
    import time

    from engine.atomic import STALE_TEMP_AGE, remove_stale_temps

    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = int(finished.stdout)
    alive = os.getppid()
    name = "autosave-abc.state.safetensors"
    files = {
        "dead writer": f".{name}.{dead}.k3j9_x2a.tmp",
        "live writer": f".{name}.{alive}.q8w7e6r5.tmp",
        "live writer, stuck for hours": f".{name}.{alive}.zz11yy22.tmp",
        "no pid (older versions), recent": f".{name}.ab12cd34.tmp",
        "no pid (older versions), hours old": f".{name}.ef56gh78.tmp",
        "the autosave itself": name,
        "someone else's hidden file": ".notes.tmp",
        "not ours": "data.tmp",
    }
    for label, file in files.items():
        (tmp_path / file).write_bytes(b"x" * 10)
    old = time.time() - STALE_TEMP_AGE - 60
    for label in ("live writer, stuck for hours", "no pid (older versions), hours old"):
        os.utime(tmp_path / files[label], (old, old))

    removed = remove_stale_temps(tmp_path)
    gone = {label for label, file in files.items() if not (tmp_path / file).exists()}
    assert gone == {"dead writer", "live writer, stuck for hours", "no pid (older versions), hours old"}
    assert sorted(p.name for p in removed) == sorted(files[label] for label in gone)
    assert remove_stale_temps(tmp_path / "missing") == []
