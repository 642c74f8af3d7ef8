"""Every engine error is one bounded line, whatever a file or a caller put into it."""

from __future__ import annotations

import pickle

from engine.errors import MAX_MESSAGE_CHARS, CheckpointError, EngineError, StateError, StateModelMismatchError
from engine.music.errors import MusicError


def test_a_huge_message_is_capped_in_every_subclass() -> None:
    for kind in (EngineError, CheckpointError, StateError, MusicError):
        error = kind("layers [" + ", ".join(str(i) for i in range(200_000)) + "] are missing")
        text = str(error)
        assert len(text) <= MAX_MESSAGE_CHARS
        assert text.startswith("layers [0, 1, 2") and text.endswith("…")


def test_a_message_is_one_line() -> None:
    error = StateError("first line\nsecond line\r\nthird")
    assert str(error) == "first line second line third"


def test_short_messages_are_kept_exactly() -> None:
    assert str(CheckpointError("model.pth: no such file")) == "model.pth: no such file"
    mismatch = StateModelMismatchError("x" * (MAX_MESSAGE_CHARS * 3), "aa", "bb")
    assert len(str(mismatch)) <= MAX_MESSAGE_CHARS
    assert (mismatch.file_fingerprint, mismatch.model_fingerprint) == ("aa", "bb")


def test_capped_errors_still_pickle() -> None:
    error = StateError("y" * (MAX_MESSAGE_CHARS * 2))
    assert str(pickle.loads(pickle.dumps(error))) == str(error)
