"""The multi-line message box: Enter sends, Ctrl+J (everywhere) or Alt/Shift+Enter add a line.

Most terminals send the same byte for Enter and Shift+Enter, and Alt+Enter only arrives as its
own key under the kitty keyboard protocol, so Ctrl+J (a plain line feed, which every terminal
sends) is the newline key that always works.
"""

from __future__ import annotations

from textual import events
from textual.message import Message

from tui.widgets.safe_fields import SafeTextArea

NEWLINE_KEYS = frozenset({"ctrl+j", "alt+enter", "shift+enter", "ctrl+enter"})


class PromptInput(SafeTextArea):
    """Grows with its text up to a limit; posts :class:`Submitted` on Enter."""

    DEFAULT_CSS = """
    PromptInput {
        height: auto;
        min-height: 3;
        max-height: 12;
        border: tall $border-blurred;
    }
    PromptInput:focus { border: tall $border; }
    """

    class Submitted(Message):
        def __init__(self, prompt: "PromptInput", text: str) -> None:
            super().__init__()
            self.prompt = prompt
            self.text = text

        @property
        def control(self) -> "PromptInput":
            return self.prompt

    class EditLastRequested(Message):
        """Up was pressed on an empty prompt: the user wants their last message back."""

    def __init__(self, *, id: str | None = None, placeholder: str = "") -> None:
        super().__init__(
            id=id, soft_wrap=True, show_line_numbers=False, tab_behavior="focus",
            highlight_cursor_line=False, placeholder=placeholder,
        )

    async def _on_key(self, event: events.Key) -> None:
        if self.read_only:
            return
        if event.key == "enter":
            event.stop()
            event.prevent_default()
            self.post_message(self.Submitted(self, self.text))
            return
        if event.key in NEWLINE_KEYS:
            event.stop()
            event.prevent_default()
            start, end = self.selection
            self._replace_via_keyboard("\n", start, end)
            return
        if event.key == "up" and not self.text:
            event.stop()
            event.prevent_default()
            self.post_message(self.EditLastRequested())
            return
        await super()._on_key(event)

    def set_text(self, text: str) -> None:
        """Replace the content and put the cursor at the end."""
        self.load_text(text)
        self.move_cursor(self.document.end)
