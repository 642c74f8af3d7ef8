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
