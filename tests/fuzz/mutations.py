"""Byte-level mutations of a valid file, the way a damaged download or a hostile author makes them."""

from __future__ import annotations

import hashlib
from pathlib import Path

from hypothesis import strategies as st


@st.composite
def mutated(draw: st.DrawFn, seed: bytes, max_edits: int = 4) -> bytes:
    """``seed`` with a few edits: bit flips, overwritten runs, truncation, insertion and splicing.

    Edits that keep most of the file intact reach deep into a parser; pure random bytes would
    be refused by the first magic-number check and test nothing else.
    """
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, max_edits))):
        kind = draw(st.sampled_from(["flip", "overwrite", "truncate", "insert", "delete", "splice"]))
        position = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "flip" and data:
            data[position] ^= 1 << draw(st.integers(0, 7))
        elif kind == "overwrite" and data:
            run = draw(st.binary(min_size=1, max_size=16))
            data[position:position + len(run)] = run
        elif kind == "truncate":
            del data[position:]
        elif kind == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=64))
        elif kind == "delete":
            del data[position:position + draw(st.integers(1, 64))]
        elif kind == "splice" and data:
            start = draw(st.integers(0, len(data) - 1))
            data[position:position] = data[start:start + draw(st.integers(1, 256))]
    return bytes(data)


def digest(path: Path) -> str:
    """Content hash, to prove that a file that was only read is unchanged afterwards."""
    return hashlib.sha256(path.read_bytes()).hexdigest()
