"""The line at the top of a long chat that stands for the messages it does not show.

Textual lays out every displayed widget whenever the streaming reply grows, so a transcript of a
hundred turns made each screen update cost half a second and took that time from the engine.
The chat keeps only its most recent messages displayed; this line says how many are hidden and
brings them back on a click or Enter.
"""

from __future__ import annotations

from textual.binding import Binding
from textual.events import Click
from textual.message import Message
from textual.widgets import Static


class EarlierMessages(Static, can_focus=True):
    DEFAULT_CSS = """
    EarlierMessages { display: none; width: 1fr; color: $text-muted; padding: 0 1 1 1; }
    EarlierMessages.-hiding { display: block; }
    EarlierMessages:focus { color: $text; text-style: bold; }
    """

    BINDINGS = [Binding("enter", "show", "Show earlier messages")]

    class ShowRequested(Message):
        """The user asked to see the hidden messages."""

    def show_count(self, hidden: int) -> None:
        """Say how many messages are hidden (0 hides this line)."""
        self.set_class(hidden > 0, "-hiding")
        if hidden:
            noun = "message" if hidden == 1 else "messages"
            self.update(f"▲ {hidden} earlier {noun} hidden to keep streaming fast. Click or press Enter to show them.")

    def action_show(self) -> None:
        self.post_message(self.ShowRequested())

    def on_click(self, event: Click) -> None:
        event.stop()
        self.post_message(self.ShowRequested())
