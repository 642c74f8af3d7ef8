"""Exceptions raised by the engine.

Every message is a single line a user can act on: the UI and the CLI show ``str(error)``
as it is, so messages name the file and say what was found, never dump a traceback.
The base class enforces the "one line" half itself: whatever a message was built from (a hostile
file's key names, a list of a million missing layers), it arrives as one bounded line.
"""

from __future__ import annotations

#: The longest message an error carries; longer ones are cut and end with "…".
MAX_MESSAGE_CHARS = 1000


def one_line(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """``text`` on one line (line breaks become spaces), at most ``limit`` characters."""
    head = text[: 4 * limit]  # never split or copy megabytes only to throw them away
    lines = head.splitlines()
    flat = head if len(lines) <= 1 else " ".join(line.strip() for line in lines if line.strip())
    if len(flat) <= limit and len(head) == len(text):
        return flat
    return flat[: limit - 1] + "…"


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of another library's exception, to quote inside one of ours."""
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:limit]


class EngineError(Exception):
    """Base class for every error the engine reports to a user."""

    def __init__(self, message: object = "", *args: object) -> None:
        super().__init__(one_line(str(message)), *args)


class CheckpointError(EngineError):
    """A model file could not be used (missing, corrupt, hostile or the wrong architecture)."""


class StateError(EngineError):
    """A state file or state object does not fit the model or is damaged."""


class TokenizerError(EngineError):
    """Text or token ids that a tokenizer cannot handle."""


class BackendError(EngineError):
    """A compute backend is unavailable (no GPU, no compiler) or failed."""


class StateModelMismatchError(StateError):
    """A state file fits the model's shapes but was saved from different weights.

    Its own class so a UI can offer "load anyway" (``allow_other_model=True``): a state from
    a fine-tune of the same base model often still works, but it is the user's call.
    """

    def __init__(self, message: str, file_fingerprint: str, model_fingerprint: str) -> None:
        super().__init__(message)
        self.file_fingerprint = file_fingerprint
        self.model_fingerprint = model_fingerprint
