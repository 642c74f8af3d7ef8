"""Telling the file formats we meet apart by their content, exactly, before any parser runs.

A safetensors file starts with an 8-byte little-endian header length and then that many bytes
of JSON. The length's first bytes can be anything: 896 bytes of header start ``80 03``, which is
also how a pickle starts. Guessing from magic numbers first therefore refused our own state files
as "a Python pickle". So the safetensors reading comes first and counts only when the header is a
JSON object of exactly the declared length; magic numbers are consulted only for files that are
not safetensors, and then only to say what the file is.

Reading the start of a file is the one I/O step here; it never raises anything but the caller's
own error type.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TypeVar

from engine.errors import EngineError, first_line

E = TypeVar("E", bound=EngineError)

#: A safetensors header longer than this is not one of ours (a long transcript is a few MB).
MAX_HEADER_BYTES = 64 * 1024 * 1024

#: What each recognised format is called in messages.
DESCRIPTIONS = {
    "safetensors": "a safetensors file",
    "zip": "a PyTorch .pth archive",
    "pickle": "a Python pickle",
    "numpy": "a NumPy array file",
    "gguf": "a GGUF/GGML model file",
}


@dataclass(frozen=True)
class Sniffed:
    """What the start of a file says it is."""

    size: int
    #: The first 8 bytes (fewer in a shorter file).
    head: bytes
    #: ``safetensors`` (header parsed), one of the other ``DESCRIPTIONS`` keys, or None.
    kind: str | None
    #: The parsed safetensors header, when ``kind`` is ``safetensors``.
    header: dict[str, Any] | None = None
    #: Length in bytes of that header (the data follows at ``8 + header_length``).
    header_length: int = 0
    #: Why the file is not a usable safetensors file, when it is not one (one line).
    problem: str = ""


def sniff(path: Path, error: Callable[[str], E], what: str) -> Sniffed:
    """Read the start of ``path`` and say which format it has.

    ``what`` names the file the caller expects ("an rwkv-tui state file") in ``problem``.
    A file that cannot be opened or read raises ``error`` with the OS's reason (permission
    denied, …); everything else is described by the result.
    """
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            head = handle.read(8)
            if len(head) < 8:
                return Sniffed(size, head, _magic(head), problem=f"too short to be {what} ({size} bytes)")
            header_length = int.from_bytes(head, "little")
            if header_length > MAX_HEADER_BYTES:
                return Sniffed(size, head, _magic(head), problem=(
                    f"not {what} (header length field says {header_length} bytes; corrupt or another format)"
                ))
            raw = handle.read(header_length)
    except OSError as exc:
        raise error(f"{path}: cannot read: {exc.strerror or exc}") from None
    looks_like_json = raw.lstrip(b" ").startswith(b"{")
    if len(raw) < header_length:
        if looks_like_json:  # a safetensors file cut short, whatever its first bytes resemble
            return Sniffed(size, head, None, problem=(
                f"truncated: the header needs {8 + header_length} bytes, the file has {size}"
            ))
        return Sniffed(size, head, _magic(head), problem=f"not {what} (no safetensors header)")
    if not looks_like_json:
        return Sniffed(size, head, _magic(head), problem=f"not {what} (no safetensors header)")
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        return Sniffed(size, head, None, problem=f"corrupt header ({first_line(exc)})")
    if not isinstance(header, dict):
        return Sniffed(size, head, None, problem="corrupt header (not a JSON object)")
    return Sniffed(size, head, "safetensors", header=header, header_length=header_length)


def _magic(head: bytes) -> str | None:
    """The format a file's first bytes announce; only asked once safetensors is ruled out."""
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "pickle"
    if head.startswith(b"\x93NUMPY"):
        return "numpy"
    if head.startswith((b"GGUF", b"ggml", b"lmgg")):
        return "gguf"
    return None
