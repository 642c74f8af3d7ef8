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


def no_hang(call, *args, limit_s: float = 120.0, **kwargs):
    """Run ``call`` and return its result, raising what it raised; fail if it never returns.

    The limit is a generous safety net against infinite loops, far above any honest run on a
    loaded machine, not a timing window: a slow machine makes the test slower, never red.
    """
    import threading

    outcome: dict[str, object] = {}

    def run() -> None:
        try:
            outcome["value"] = call(*args, **kwargs)
        except BaseException as error:  # re-raised below, on the test's thread
            outcome["error"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(limit_s)
    if thread.is_alive():
        raise AssertionError(f"{getattr(call, '__name__', call)} did not return within {limit_s:.0f} s")
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome.get("value")
