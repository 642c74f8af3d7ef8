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
