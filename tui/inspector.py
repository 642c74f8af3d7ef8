"""The engine thread's half of the state inspector: live numbers, diffs, branches, state files.

The :class:`~tui.worker.EngineWorker` owns one :class:`EngineInspector` and hands it the
commands in :data:`tui.protocol.STATE_COMMANDS`. It runs on the engine thread only, like the
conversation it works on, and answers with events in the worker's outbox.

Live numbers while generating: a :class:`~engine.state_stats.LiveStateFeed` is attached to the
running generation (its ``on_token``); it records the per-token change of the state and, at most
every :data:`LIVE_STATS_INTERVAL` seconds, a layer × head summary. The worker calls
:meth:`EngineInspector.publish` at its statistics rate, so the UI hears about the state a few
times a second however fast tokens come, and the outbox merges what the UI has not drained yet.

Nothing here imports Textual.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from engine import Conversation, EngineError, Generation, State
from engine.errors import StateError
from engine.state_stats import LiveStateFeed, state_diff, state_stats
from tui.protocol import (
    BranchesInfo, Command, DiffStates, Event, ExportTimeState, Fork, ImportTimeState,
    InspectorUpdate, Notice, ResumeSession, SessionAvailable, StateDiffReady, StateRef, SwitchBranch,
    TranscriptReplaced,
)

if TYPE_CHECKING:
    from tui.worker import EngineWorker

#: Seconds between layer × head summaries while generating (the heat map's refresh rate).
LIVE_STATS_INTERVAL = 0.25


@dataclass
class Branch:
    conversation: Conversation
    name: str


class EngineInspector:
    """State-related work on the engine thread; see the module docstring."""

    def __init__(self, worker: "EngineWorker", emit: Callable[[Event], None]) -> None:
        self._worker = worker
        self._emit = emit
        self.feed = LiveStateFeed(stats_interval=LIVE_STATS_INTERVAL)
        #: The state the feed's history ends with; another one at the next publish means a jump.
        self._line_end: State | None = None
        #: Whether the UI shows the live numbers (the state pane is visible). Set from the UI
        #: thread; while False no per-token work is done, so generation pays nothing for them.
        self.watching = False
        self._stale = False
        self.branches: list[Branch] = []
        self.current_branch = 0
        self._forks = 0

    # ------------------------------------------------------------------ live numbers

    def attach(self, generation: Generation, start: State | None) -> None:
        """Watch ``generation`` token by token (before iterating it)."""
        if start is not None and start is not self._line_end:
            self.feed.reset()
            self._emit(InspectorUpdate(None, (), reset=True))
        generation.on_token = self._observe

    def _observe(self, token: int, state: State) -> None:
        """Per token (engine thread): measured only while someone looks."""
        if self.watching:
            if self._stale:
                self.feed.tracker.reset()  # a change across unwatched tokens is not per token
                self._stale = False
            self.feed.observe(token, state)
        else:
            self._stale = True

    def publish(self) -> None:
        """Pass on what the feed gathered (called at the worker's statistics rate)."""
        update = self.feed.drain()
        if update.stats is not None or update.changes:
            self._emit(InspectorUpdate(update.stats, tuple(update.changes)))

    def finish(self, state: State) -> None:
        """A reply ended: pass on its last changes (the summary follows with :meth:`after_change`)."""
        self._line_end = state
        self.publish()

    def after_change(self, conversation: Conversation) -> None:
        """The conversation changed (turn, rewind, load, fork…): show its live state."""
        self._track(conversation)
        state = conversation.state
        reset = state is not self._line_end
        if reset:
            self.feed.reset()
        self._line_end = state
        self._emit(InspectorUpdate(state_stats(state), (), reset=reset))

    # ------------------------------------------------------------------ commands

    def handle(self, command: Command) -> None:
        conversation = self._worker._require_conversation()
        self._track(conversation)
        if isinstance(command, DiffStates):
            a = self._resolve(conversation, command.a)
            b = self._resolve(conversation, command.b)
            self._emit(StateDiffReady(state_diff(a, b), command.a.label(), command.b.label()))
        elif isinstance(command, Fork):
            self._fork(conversation, command.index)
        elif isinstance(command, SwitchBranch):
            self._switch(command.index)
        elif isinstance(command, ImportTimeState):
            self._import(conversation, command)
        elif isinstance(command, ExportTimeState):
            self._export(conversation, command)
        elif isinstance(command, ResumeSession):
            self._resume(conversation, command.path, command.allow_other_model)

    def _resolve(self, conversation: Conversation, ref: StateRef) -> State:
        if ref.kind == "live":
            return conversation.state
        if ref.kind == "turn":
            if not 0 <= ref.turn < len(conversation.turns):
                raise EngineError(f"there is no turn {ref.turn + 1} to compare")
            turn = conversation.turns[ref.turn]
            if turn.state_before is not None:
                return turn.state_before
            # Evicted by the memory budget (never the first turn's): a branch that ends just before
            # the turn is rebuilt exactly by replaying the recorded tokens.
            return conversation.fork(ref.turn - 1, replay=True).state
        from engine.session import load_start_state

        return load_start_state(Path(ref.path).expanduser(), conversation.model, orientation=ref.orientation,
                                allow_other_model=ref.allow_other_model)

    # ------------------------------------------------------------------ branches

    def _track(self, conversation: Conversation) -> None:
        """Keep the branch list in step with the worker's conversation (a new model, a resume)."""
        if self.branches and self.branches[self.current_branch].conversation is conversation:
            return
        for i, branch in enumerate(self.branches):
            if branch.conversation is conversation:
                self.current_branch = i
                return
        same_model = [b for b in self.branches if b.conversation.model is conversation.model]
        if not same_model:
            self._forks = 0
            self.branches = [Branch(conversation, "main")]
            self.current_branch = 0
        else:
            # Replaced in place (a resumed session): it takes the current branch's place.
            self.branches[self.current_branch] = Branch(conversation, self.branches[self.current_branch].name)
        self._publish_branches()

    def _publish_branches(self) -> None:
        self._emit(BranchesInfo(tuple(b.name for b in self.branches), self.current_branch))

    def _fork(self, conversation: Conversation, index: int) -> None:
        if not 0 <= index < len(conversation.turns):
            raise EngineError(f"there is no turn {index + 1} to fork from")
        try:
            branch = conversation.fork(index, replay=True)
        except (RuntimeError, ValueError) as exc:
            raise EngineError(f"cannot fork: {exc}") from None
        self._forks += 1
        name = f"fork {self._forks} (turn {index + 1} of {self.branches[self.current_branch].name})"
        self.branches.append(Branch(branch, name))
        self.current_branch = len(self.branches) - 1
        self._activate(branch)
        self._emit(Notice(
            "information",
            f"New branch “{name}”: {index + 1} turn{'s' if index else ''} kept; the previous branch is "
            "kept too (switch with b in the state pane)",
        ))

    def _switch(self, index: int) -> None:
        if not 0 <= index < len(self.branches):
            raise EngineError(f"there is no branch {index + 1}")
        self.current_branch = index
        self._activate(self.branches[index].conversation)
        self._emit(Notice("information", f"Now on branch “{self.branches[index].name}”"))

    def _activate(self, conversation: Conversation) -> None:
        """Make ``conversation`` the chat's: the transcript, the snapshot list and the inspector follow."""
        worker = self._worker
        worker.conversation = conversation
        self._emit(TranscriptReplaced(worker._turn_views(conversation)))
        self._publish_branches()
        worker._publish_conversation(conversation)

    # ------------------------------------------------------------------ state files

    def _import(self, conversation: Conversation, command: ImportTimeState) -> None:
        from engine.session import load_start_state

        # Checked against the model before anything changes; on error the chat is untouched.
        state = load_start_state(Path(command.path).expanduser(), conversation.model, orientation=command.orientation)
        conversation.reset(initial_state=state)
        self._emit(TranscriptReplaced(()))
        self._worker._publish_conversation(conversation)
        self._emit(Notice(
            "information",
            f"Imported {Path(command.path).name} ({command.orientation}): a new conversation starts from it",
        ))

    def _export(self, conversation: Conversation, command: ExportTimeState) -> None:
        from engine.time_state import export_time_state, token_shift_magnitude

        written = export_time_state(Path(command.path).expanduser(), conversation.state, orientation=command.orientation)
        lost = token_shift_magnitude(conversation.state)
        note = " (token-shift vectors are not part of the format and were left out)" if lost > 0 else ""
        self._emit(Notice("information", f"Exported the WKV state as time_state ({command.orientation}) to {written}{note}"))

    def offer_resume(self, model: object) -> None:
        """After a chat model loads: say so if this model has an autosaved session."""
        from engine.session import find_autosave

        summary = find_autosave(model)
        if summary is not None:
            self._emit(SessionAvailable(str(summary.path), summary.describe()))

    def _resume(self, conversation: Conversation, path: str, allow_other_model: bool = False) -> None:
        from engine.session import autosave_path, load_session

        if not path:
            if not autosave_path(conversation.model).is_file():
                raise EngineError(f"no conversation with {conversation.model.info.name} was autosaved yet")
            path = str(autosave_path(conversation.model))
        if conversation.generating:
            raise EngineError("stop the reply being generated first")
        try:
            resumed = load_session(Path(path).expanduser(), conversation.model, conversation.tokenizer,
                                   allow_other_model=allow_other_model)
        except StateError:
            raise
        except (OSError, ValueError) as exc:
            raise StateError(f"{path}: cannot resume ({exc})") from None
        self._worker.conversation = resumed
        self._track(resumed)
        self._emit(TranscriptReplaced(self._worker._turn_views(resumed)))
        self._worker._publish_conversation(resumed)
        self._emit(Notice(
            "information", f"Resumed {len(resumed.turns)} turn{'s' if len(resumed.turns) != 1 else ''} "
            f"({resumed.state.tokens_seen:,} tokens) from {Path(path).name}",
        ))
