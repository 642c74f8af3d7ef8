"""Saving what the music features export (.mid, .abc, token text, .wav), atomically.

The atomic write itself is engine.atomic's; this module adds the music formats and reports
failures as MusicError.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import BinaryIO, Callable

import mido

from engine.atomic import atomic_write as _atomic_write
from engine.music.errors import MusicError


def atomic_write(path: str | Path, write: Callable[[BinaryIO], object]) -> Path:
    """Save through ``write`` atomically; failures are one-line MusicErrors."""
    return _atomic_write(path, write, MusicError)


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
