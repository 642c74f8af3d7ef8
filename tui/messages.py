"""Messages that travel up the widget tree to the app.

Widgets never talk to the engine thread themselves: they post one of these, and the app (which
owns the :class:`~tui.worker.EngineWorker`) acts on it. That keeps every widget testable alone
and keeps a single place where engine commands are issued.
"""

from __future__ import annotations

from textual.message import Message

from tui.protocol import ChatSettings, Command


class EngineRequest(Message):
    """Ask the app to queue a command for the engine thread."""

    def __init__(self, command: Command) -> None:
        super().__init__()
        self.command = command


class StopGeneration(Message):
    """Stop the reply being generated now (bypasses the command queue)."""


class CopyText(Message):
    """Put text on the clipboard; ``what`` names it in the confirmation ("reply", "message")."""

    def __init__(self, text: str, what: str = "text") -> None:
        super().__init__()
        self.text = text
        self.what = what


class SettingsChanged(Message):
    """The user changed the system prompt, sampling parameters or think mode (already validated)."""

    def __init__(self, settings: ChatSettings) -> None:
        super().__init__()
        self.settings = settings


class EditRequested(Message):
    """Edit-and-resend the user message of turn ``index``."""

    def __init__(self, index: int) -> None:
        super().__init__()
        self.index = index


class RegenerateRequested(Message):
    """Replace the last reply."""


class RewindRequested(Message):
    """Return the conversation to the state before turn ``index`` (from the snapshot list)."""

    def __init__(self, index: int) -> None:
        super().__init__()
        self.index = index


class EngineReady(Message):
    """The engine thread put events into an empty outbox (posted from that thread, once per batch)."""
