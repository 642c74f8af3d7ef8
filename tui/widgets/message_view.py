"""One chat message: a header line, an optional folded "thinking" section, and a Markdown body.

Replies stream in through :class:`~textual.widgets.markdown.MarkdownStream`, which re-parses only
the last block, so the cost per delta stays flat however long the reply gets. When the reply is
complete the body gets one full ``update`` with the final text: that works around Textual issue
#6518 (code fences left blank after streaming) and guarantees the screen shows exactly the text the
engine produced.
"""

from __future__ import annotations

from typing import Literal

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Collapsible, Label, Markdown
from textual.widgets.markdown import MarkdownStream

from engine import StopReason
from tui.actions import bindings_for
from tui.messages import CopyText, EditRequested, RegenerateRequested
from tui.protocol import TurnView
from tui.terminal_text import visible_controls
from tui.think import ThinkSplitter, split_reply

MessageRole = Literal["user", "assistant"]

#: How a turn's stop reason reads in the header; a normal end (the turn separator) says nothing.
_STOP_WORDS = {
    StopReason.STOP_TOKEN.value: "end of text",
    StopReason.MAX_TOKENS.value: "token limit reached",
    StopReason.CANCELLED.value: "stopped",
}


class MessageView(Vertical, can_focus=True):
    """A user or assistant message. Focus it (click or Tab) to copy, edit or regenerate."""

    BINDINGS = bindings_for("message")

    DEFAULT_CSS = """
    MessageView {
        height: auto;
        padding: 0 1;
        margin: 0 0 1 0;
    }
    MessageView > .message-header { width: 1fr; color: $text-muted; }
    MessageView > Markdown { margin: 0; padding: 0; background: transparent; }
    /* A type, never "*", before :last-child: Textual marks every widget a universal selector
       could match as order-dependent and restyles all its siblings' subtrees on each mount,
       which made streaming crawl once a chat had a few dozen messages. */
    MessageView Markdown > MarkdownBlock:last-child { margin-bottom: 0; }
    MessageView > Collapsible { padding: 0; margin: 0; border: none; background: transparent; }
    MessageView > Collapsible Markdown { color: $text-muted; background: transparent; padding: 0; }
    """

    def __init__(
        self,
        role: MessageRole,
        index: int,
        text: str = "",
        *,
        streaming: bool = False,
        reply_prefix: str = "",
        deferred: bool = False,
        id: str | None = None,
    ) -> None:
        super().__init__(id=id, classes=f"-{role}")
        #: Mounted hidden (an older message of a long chat): the body is parsed only when shown.
        self.deferred = deferred
        self.role: MessageRole = role
        self.index = index
        self.text = text
        self.streaming = streaming
        self.is_last = True
        self._meta = ""
        self._splitter = ThinkSplitter()
        self._reply_prefix = reply_prefix
        self._body_stream: MarkdownStream | None = None
        self._think_stream: MarkdownStream | None = None
        if role == "assistant" and not streaming:
            self._think_text, self._answer_text = split_reply(text)
        else:
            self._think_text, self._answer_text = "", text

    # ------------------------------------------------------------------ composition

    def compose(self) -> ComposeResult:
        yield Label(self._header(), classes="message-header")
        if self._think_text.strip():
            yield self._think_section()
        yield Markdown("" if self.deferred else visible_controls(self._answer_text), classes="message-body", open_links=False)

    async def reveal(self) -> None:
        """Render a deferred body (the message is about to be displayed)."""
        if self.deferred:
            self.deferred = False
            await self.query_one(".message-body", Markdown).update(visible_controls(self._answer_text))

    def _think_section(self) -> Collapsible:
        """Folded reasoning; mounted only for replies that have some (fewer widgets to lay out)."""
        return Collapsible(
            Markdown(visible_controls(self._think_text), classes="think-body", open_links=False), title="Thinking", collapsed=True,
        )

    async def _ensure_think_section(self) -> Markdown:
        if not self.query(Collapsible):
            await self.mount(self._think_section(), before=self.query_one(".message-body"))
        self.add_class("-has-think")
        return self.query_one(".think-body", Markdown)

    def on_mount(self) -> None:
        if self._think_text.strip():
            self.add_class("-has-think")
            self._set_think_title()

    @property
    def answer(self) -> str:
        """The text a copy takes: the answer without the reasoning."""
        return self._answer_text

    @property
    def think(self) -> str:
        return self._think_text

    def _header(self) -> Text:
        title = "You" if self.role == "user" else "Assistant"
        text = Text(title, style="bold")
        if self.streaming:
            text.append("  ●  writing…", style="italic")
        elif self._meta:
            text.append(f"  {self._meta}")
        return text

    def _refresh_header(self) -> None:
        self.query_one(".message-header", Label).update(self._header())

    def _set_think_title(self) -> None:
        collapsible = self.query_one(Collapsible)
        words = len(self._think_text.split())
        if self.streaming and self._splitter.in_think:
            collapsible.title = f"Thinking… ({words} words)"
        else:
            collapsible.title = f"Thought for {words} words"

    # ------------------------------------------------------------------ streaming

    async def append(self, delta: str) -> None:
        """Add streamed reply text (the prompt's reply prefix is fed before the first delta)."""
        if self._reply_prefix:
            delta, self._reply_prefix = self._reply_prefix + delta, ""
        await self._write(self._splitter.feed(delta))

    async def _write(self, pieces: list[tuple[str, str]]) -> None:
        for section, text in pieces:
            if section == "think":
                if self._think_stream is None:
                    self._think_stream = Markdown.get_stream(await self._ensure_think_section())
                self._think_text += text
                await self._think_stream.write(visible_controls(text))
            else:
                if self._body_stream is None:
                    self._body_stream = Markdown.get_stream(self.query_one(".message-body", Markdown))
                self._answer_text += text
                await self._body_stream.write(visible_controls(text))
        if self._think_text and any(section == "think" for section, _ in pieces):
            self._set_think_title()

    async def finish(self, turn: TurnView) -> None:
        """The reply is complete: show the engine's final text and the turn's numbers."""
        if self._reply_prefix:
            await self.append("")
        await self._write(self._splitter.finish())
        for stream in (self._body_stream, self._think_stream):
            if stream is not None:
                await stream.stop()
        self._body_stream = self._think_stream = None
        self.streaming = False
        self.text = turn.reply
        self._think_text, self._answer_text = split_reply(turn.reply)
        await self.query_one(".message-body", Markdown).update(visible_controls(self._answer_text))
        if self._think_text.strip():
            await (await self._ensure_think_section()).update(visible_controls(self._think_text))
            self._set_think_title()
        self.set_meta(turn)

    def set_meta(self, turn: TurnView) -> None:
        parts = []
        if turn.generated_tokens:
            parts.append(f"{turn.generated_tokens} tokens")
        if turn.tokens_per_second:
            parts.append(f"{turn.tokens_per_second:.1f} tok/s")
        reason = _STOP_WORDS.get(turn.stop_reason or "", "")
        if reason:
            parts.append(reason)
        self._meta = " · ".join(parts)
        self._refresh_header()

    async def stop_streams(self) -> None:
        """Stop background Markdown updates (before the widget is removed mid-stream)."""
        for stream in (self._body_stream, self._think_stream):
            if stream is not None:
                await stream.stop()
        self._body_stream = self._think_stream = None

    # ------------------------------------------------------------------ actions

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "edit":
            return self.role == "user"
        if action == "regenerate":
            return self.role == "assistant" and self.is_last and not self.streaming
        return True

    def action_copy(self) -> None:
        if self.role == "user":
            self.post_message(CopyText(self.text, "message"))
        else:
            self.post_message(CopyText(self._answer_text or self.text, "reply"))

    def action_edit(self) -> None:
        self.post_message(EditRequested(self.index))

    def action_regenerate(self) -> None:
        self.post_message(RegenerateRequested())
