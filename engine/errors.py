"""Exceptions raised by the engine.

Every message is a single line a user can act on: the UI and the CLI show ``str(error)``
as it is, so messages name the file and say what was found, never dump a traceback.
"""

from __future__ import annotations


class EngineError(Exception):
    """Base class for every error the engine reports to a user."""


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
