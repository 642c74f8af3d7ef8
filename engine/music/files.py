"""Atomic saves for everything the music features export (.mid, .abc, token text, .wav).

A crash or a full disk must never leave a half-written file where a good one was: each save
writes a temporary file in the destination folder and renames it over the target.
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path
from typing import Callable

import mido

from engine.music.errors import MusicError


def atomic_write(path: str | Path, write: Callable[[io.BufferedWriter], None]) -> Path:
    """Call ``write`` with a binary file in ``path``'s folder, then move it into place."""
    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        raise MusicError(f"cannot save {target}: folder {folder} does not exist")
    try:
        fd, temp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=folder)
    except OSError as exc:
        raise MusicError(f"cannot save {target}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp_name, target)
    except BaseException as exc:
        try:
            os.unlink(temp_name)
        except FileNotFoundError:
            pass
        if isinstance(exc, OSError):
            raise MusicError(f"cannot save {target}: {exc.strerror or exc}") from None
        raise
    return target


def save_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda handle: handle.write(data))


def save_text(path: str | Path, text: str) -> Path:
    """Save text as UTF-8 with a final newline."""
    if not text.endswith("\n"):
        text += "\n"
    return save_bytes(path, text.encode("utf-8"))


def midi_bytes(mid: mido.MidiFile) -> bytes:
    buffer = io.BytesIO()
    mid.save(file=buffer)
    return buffer.getvalue()


def save_midi(path: str | Path, mid: mido.MidiFile) -> Path:
    return save_bytes(path, midi_bytes(mid))
