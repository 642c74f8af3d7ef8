"""The chat pane: the message list, the prompt and the settings panel.

The pane turns user intent into engine commands (posted up as :class:`EngineRequest`) and renders
the engine's events, which the app hands it through the ``on_*`` methods below. It never waits for
the engine: sending clears the prompt at once, and the reply appears as the events arrive.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Static

from engine import ThinkMode
from tui.actions import bindings_for
from tui.messages import (
    EditRequested, EngineRequest, RegenerateRequested, SettingsChanged, StopGeneration,
)
from tui.protocol import (
    ChatSettings, Edit, Export, NewConversation, PromptRejected, Regenerate, ReplyDelta, ReplyFailed,
    ReplyFinished, Send, TranscriptReplaced, TranscriptTruncated, TurnStarted, TurnView,
)
from tui.screens.path_prompt import PathPrompt
from tui.widgets.earlier_messages import EarlierMessages
from tui.widgets.message_view import MessageView
from tui.widgets.prompt_input import PromptInput
from tui.widgets.settings_panel import SettingsPanel

THINK_CYCLE = (ThinkMode.OFF, ThinkMode.THINK, ThinkMode.SKIP)

WELCOME = (
    "[b]Chat[/b]\n\n"
    "Type a message below. [b]Enter[/b] sends · [b]Ctrl+J[/b] new line · [b]Esc[/b] stops a reply\n"
    "[b]Ctrl+R[/b] regenerates · [b]Ctrl+G[/b] edits your last message · [b]F5[/b] settings · "
    "[b]F1[/b] all keys · [b]Ctrl+P[/b] commands\n\n"
    "RWKV keeps the conversation in a fixed-size state with a snapshot before every turn, so "
    "regenerating and editing never re-read the history."
)


#: Messages kept displayed in a long chat; older ones wait behind an "earlier messages" line.
SHOWN_MESSAGES = 30


class MessageList(VerticalScroll):
    """Scrolls with the reply while it streams, unless the user scrolls away (anchor)."""

    DEFAULT_CSS = """
    MessageList { height: 1fr; padding: 1 1 0 1; }
    MessageList > #welcome { color: $text-muted; padding: 0 1 1 1; }
    MessageList.-has-messages > #welcome { display: none; }
    """

    def compose(self) -> ComposeResult:
        yield Static(WELCOME, id="welcome")
        yield EarlierMessages(id="earlier")

    def on_mount(self) -> None:
        self.anchor()


class ChatPane(Horizontal):
    BINDINGS = bindings_for("chat")

    DEFAULT_CSS = """
    ChatPane { height: 1fr; }
    ChatPane > #chat-main { width: 1fr; }
    ChatPane #edit-banner { display: none; width: 1fr; height: auto; padding: 0 1; background: $warning 20%; color: $text; }
    ChatPane.-editing #edit-banner { display: block; }
    ChatPane > SettingsPanel { display: none; }
    ChatPane.-settings-open > SettingsPanel { display: block; }
    """

    def __init__(self, settings: ChatSettings, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.settings = settings
        self.generating = False
        self.has_model = False
        self.editing_index: int | None = None
        self._turns: dict[int, TurnView] = {}
        #: Whether the user asked to see a long chat's earlier messages.
        self._show_earlier = False

    def compose(self) -> ComposeResult:
        with Vertical(id="chat-main"):
            yield MessageList(id="messages")
            yield Static("", id="edit-banner")
            yield PromptInput(id="prompt", placeholder="Message the model — Enter sends, Ctrl+J adds a line")
        yield SettingsPanel(self.settings, id="settings")

    # ------------------------------------------------------------------ helpers

    @property
    def prompt(self) -> PromptInput:
        return self.query_one("#prompt", PromptInput)

    @property
    def messages(self) -> MessageList:
        return self.query_one("#messages", MessageList)

    def views(self) -> list[MessageView]:
        # The list's own children, not a query: a query walks every Markdown block of every
        # message, and this runs on every streamed update (it made a long chat crawl).
        return [child for child in self.messages.children if isinstance(child, MessageView)]

    def view_for(self, index: int, role: str) -> MessageView | None:
        for view in reversed(self.views()):  # nearly always the newest
            if view.index == index and view.role == role:
                return view
        return None

    @property
    def turn_count(self) -> int:
        return 1 + max((v.index for v in self.views()), default=-1)

    def _hidden_count(self, messages: int) -> int:
        """How many of a chat's oldest messages wait behind the "earlier messages" line."""
        return 0 if self._show_earlier else max(0, messages - SHOWN_MESSAGES)

    def _set_has_messages(self, has_messages: bool) -> None:
        if self.messages.has_class("-has-messages") != has_messages:
            # Only an empty ↔ non-empty chat changes which chat keys apply; refreshing bindings
            # rebuilds the footer, which is too costly to do for every reply.
            self.messages.set_class(has_messages, "-has-messages")
            self.refresh_bindings()

    def _mark_last(self) -> None:
        """After messages come or go: mark the last one, window a long chat, update the keys."""
        views = self.views()
        for view in views:
            view.is_last = False
        if views:
            views[-1].is_last = True
        hidden = self._hidden_count(len(views))
        for position, view in enumerate(views):
            view.display = position >= hidden
            if view.display and view.deferred:
                self.call_later(view.reveal)
        self.query_one("#earlier", EarlierMessages).show_count(hidden)
        self._set_has_messages(bool(views))

    def _warn_busy(self) -> None:
        self.notify("A reply is being generated: press Esc to stop it first.", severity="warning", timeout=3)

    # ------------------------------------------------------------------ user intent

    @on(PromptInput.Submitted)
    def _submitted(self, event: PromptInput.Submitted) -> None:
        event.stop()
        text = event.text
        if not text.strip():
            return
        if self.generating:
            self._warn_busy()
            return
        if self.editing_index is not None:
            command: Edit | Send = Edit(self.editing_index, text, self.settings)
            self._end_edit(restore_prompt=False)
        else:
            command = Send(text, self.settings)
        self.generating = True
        self.prompt.clear()
        self.post_message(EngineRequest(command))

    @on(PromptInput.EditLastRequested)
    def _edit_last_from_prompt(self, event: PromptInput.EditLastRequested) -> None:
        event.stop()
        self.action_edit_last()

    @on(EditRequested)
    def _edit_requested(self, event: EditRequested) -> None:
        event.stop()
        self.start_edit(event.index)

    @on(RegenerateRequested)
    def _regenerate_requested(self, event: RegenerateRequested) -> None:
        event.stop()
        self.action_regenerate()

    @on(SettingsChanged)
    def _settings_changed(self, event: SettingsChanged) -> None:
        # Let it bubble on to the app, which saves it.
        self.settings = event.settings

    def start_edit(self, index: int) -> None:
        if self.generating:
            self._warn_busy()
            return
        view = self.view_for(index, "user")
        if view is None:
            return
        if self.editing_index is not None:
            self._end_edit(restore_prompt=False)
        self.editing_index = index
        self.add_class("-editing")
        view.add_class("-editing")
        later = self.turn_count - index - 1
        tail = f" and the {later} later turn{'s' if later != 1 else ''}" if later else ""
        self.query_one("#edit-banner", Static).update(
            f"Editing message {index + 1}: Enter resends it from the state saved before it, replacing it{tail} "
            "(nothing is re-read) · Esc cancels"
        )
        self._saved_prompt = self.prompt.text
        self.prompt.set_text(view.text)
        self.prompt.focus()

    def _end_edit(self, restore_prompt: bool) -> None:
        for view in self.views():
            view.remove_class("-editing")
        self.editing_index = None
        self.remove_class("-editing")
        if restore_prompt:
            self.prompt.set_text(getattr(self, "_saved_prompt", ""))

    # ------------------------------------------------------------------ actions (key bindings, palette)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("regenerate", "edit_last", "copy_last", "export"):
            return self.turn_count > 0
        return True

    def action_stop(self) -> None:
        if self.generating:
            self.post_message(StopGeneration())
        elif self.editing_index is not None:
            self._end_edit(restore_prompt=True)

    def action_regenerate(self) -> None:
        if self.generating:
            self._warn_busy()
            return
        if not self.turn_count:
            self.notify("Nothing to regenerate yet.", severity="warning", timeout=3)
            return
        self.generating = True
        self.post_message(EngineRequest(Regenerate(self.settings)))

    def action_edit_last(self) -> None:
        if not self.turn_count:
            self.notify("No message to edit yet.", severity="warning", timeout=3)
            return
        self.start_edit(self.turn_count - 1)

    def action_copy_last(self) -> None:
        replies = [v for v in self.views() if v.role == "assistant"]
        if not replies:
            self.notify("No reply to copy yet.", severity="warning", timeout=3)
            return
        replies[-1].action_copy()

    def action_toggle_settings(self) -> None:
        self.toggle_class("-settings-open")
        if self.has_class("-settings-open"):
            self.query_one(SettingsPanel).query_one("#system-prompt").focus()
        else:
            self.prompt.focus()

    def action_cycle_think(self) -> None:
        current = THINK_CYCLE.index(self.settings.think)
        mode = THINK_CYCLE[(current + 1) % len(THINK_CYCLE)]
        self.apply_settings(replace(self.settings, think=mode))
        self.post_message(SettingsChanged(self.settings))
        self.notify(f"Think mode: {mode.value}", timeout=2)

    def action_new_conversation(self) -> None:
        if self.generating:
            self._warn_busy()
            return
        self._end_edit(restore_prompt=False)
        self.post_message(EngineRequest(NewConversation(self.settings.system)))

    def action_export(self, format: str = "markdown") -> None:
        if not self.turn_count:
            self.notify("Nothing to export: the conversation is empty.", severity="warning", timeout=3)
            return
        kind = "json" if format == "json" else "markdown"
        suffix = ".json" if kind == "json" else ".md"
        default = Path.cwd() / f"rwkv-chat-{time.strftime('%Y%m%d-%H%M%S')}{suffix}"

        def chosen(path: str | None) -> None:
            if path:
                self.post_message(EngineRequest(Export(path, kind)))

        title = "Export the conversation as JSON" if kind == "json" else "Export the conversation as Markdown"
        self.app.push_screen(PathPrompt(title, str(default), mode="save"), chosen)

    def apply_settings(self, settings: ChatSettings) -> None:
        self.settings = settings
        self.query_one(SettingsPanel).show_settings(settings)

    # ------------------------------------------------------------------ engine events

    async def on_turn_started(self, event: TurnStarted) -> None:
        self.generating = True
        # A blinking cursor repaints the prompt twice a second; while a reply streams, that CPU
        # time is better left to the engine.
        self.prompt.cursor_blink = False
        messages = self.messages
        if self.view_for(event.index, "user") is None:
            await messages.mount(MessageView("user", event.index, event.user))
        await messages.mount(MessageView("assistant", event.index, streaming=True, reply_prefix=event.reply_prefix))
        self._mark_last()
        messages.anchor()

    async def on_reply_delta(self, event: ReplyDelta) -> None:
        view = self.view_for(event.index, "assistant")
        if view is not None:
            await view.append(event.text)

    def _stream_ended(self) -> None:
        self.generating = False
        self.prompt.cursor_blink = True

    async def on_reply_finished(self, event: ReplyFinished) -> None:
        self._stream_ended()
        self._turns[event.turn.index] = event.turn
        view = self.view_for(event.turn.index, "assistant")
        if view is not None:
            await view.finish(event.turn)
        self._mark_last()

    async def on_reply_failed(self, event: ReplyFailed) -> None:
        self._stream_ended()
        await self.on_transcript_truncated(TranscriptTruncated(event.index))
        if not self.prompt.text.strip():
            self.prompt.set_text(event.user)
        self.notify(event.message, title="Reply failed", severity="error", timeout=8)

    def on_prompt_rejected(self, event: PromptRejected) -> None:
        self._stream_ended()
        if not self.prompt.text.strip():
            self.prompt.set_text(event.text)
        self.notify(f"Not sent: {event.message}", severity="warning", timeout=5)

    async def on_transcript_truncated(self, event: TranscriptTruncated) -> None:
        doomed = [v for v in self.views() if v.index >= event.keep]
        for view in doomed:
            await view.stop_streams()
        if doomed:
            await self.messages.remove_children(doomed)
        self._turns = {i: t for i, t in self._turns.items() if i < event.keep}
        self._mark_last()

    @on(EarlierMessages.ShowRequested)
    def _show_earlier_messages(self) -> None:
        self._show_earlier = True
        self._mark_last()

    async def on_transcript_replaced(self, event: TranscriptReplaced) -> None:
        self._show_earlier = False
        self._end_edit(restore_prompt=False)
        self._stream_ended()
        for view in self.views():
            await view.stop_streams()
        await self.messages.remove_children(self.views())
        # Set before mounting: adding a class restyles the list's whole subtree.
        self._set_has_messages(bool(event.turns))
        widgets: list[MessageView] = []
        # Messages that start hidden skip parsing their Markdown until they are shown: loading
        # a long chat then costs what its visible part costs.
        hidden = self._hidden_count(2 * len(event.turns))
        for turn in event.turns:
            for role, text in (("user", turn.user), ("assistant", turn.reply)):
                widgets.append(MessageView(role, turn.index, text, deferred=len(widgets) < hidden))
        if widgets:
            await self.messages.mount_all(widgets)
            for turn in event.turns:
                view = self.view_for(turn.index, "assistant")
                if view is not None:
                    view.set_meta(turn)
        self._turns = {t.index: t for t in event.turns}
        self._mark_last()
        self.messages.anchor()
