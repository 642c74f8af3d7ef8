"""The vocabulary between the UI and the engine thread: commands in, events out, and the buffer.

Both directions are plain frozen dataclasses (no Textual, no torch), so either side can be tested
alone. The :class:`Outbox` merges what piles up between two UI frames: consecutive text deltas of a
reply become one event, and only the newest statistics and loading progress are kept, so the UI's
cost per frame does not grow with the engine's speed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Union

from engine import SamplingParams, ThinkMode
from tui.outbox import MergingOutbox

if TYPE_CHECKING:
    from engine import Model, Tokenizer
    from engine.state_stats import StateDiff, StateStats

Role = Literal["chat", "music"]
Severity = Literal["information", "warning", "error"]


# ---------------------------------------------------------------------------- commands (UI → engine)


@dataclass(frozen=True)
class LoadModel:
    """Load a model for a role. ``path`` None means the built-in demo model ``demo_kind``."""

    role: Role
    path: str | None = None
    device: str = "auto"
    dtype: str | None = None
    tokenizer: str | None = None
    demo_kinds: tuple[str, ...] = ("chat",)
    #: A state file to start the chat from (``--state``).
    state_path: str | None = None
    #: How ``state_path`` is read when it is a state-tuning time_state file.
    state_orientation: str = "as-stored"


@dataclass(frozen=True)
class ChatSettings:
    """What the settings panel controls; sent with every generation so the latest values apply."""

    params: SamplingParams = field(default_factory=SamplingParams)
    system: str = ""
    think: ThinkMode = ThinkMode.OFF


@dataclass(frozen=True)
class Send:
    text: str
    settings: ChatSettings


@dataclass(frozen=True)
class Regenerate:
    settings: ChatSettings


@dataclass(frozen=True)
class Edit:
    index: int
    text: str
    settings: ChatSettings


@dataclass(frozen=True)
class Rewind:
    """Go back to the moment before turn ``index`` (it and every later turn are dropped)."""

    index: int


@dataclass(frozen=True)
class NewConversation:
    system: str = ""


@dataclass(frozen=True)
class Export:
    path: str
    format: Literal["markdown", "json"]


@dataclass(frozen=True)
class SaveState:
    """Write the live chat state to a state file (engine.state_io format)."""

    path: str


@dataclass(frozen=True)
class LoadState:
    """Continue the chat from a state file: a new conversation starting from that state.

    Any file a user has: an rwkv-tui state or session file, or else a state-tuning time_state
    file. Which one it is, the engine thread finds out (reading a file never blocks the UI).
    """

    path: str
    #: Accept a state saved from other weights of the same shape (e.g. a fine-tune's).
    allow_other_model: bool = False
    #: How a time_state file's matrices are read (``engine.time_state.Orientation``).
    orientation: str = "as-stored"


@dataclass(frozen=True)
class StateRef:
    """One side of a state comparison: the live state, the snapshot before a turn, or a file."""

    kind: Literal["live", "turn", "file"]
    turn: int = 0
    path: str = ""
    #: How a state-tuning file's matrices are read (``engine.time_state.Orientation``).
    orientation: str = "as-stored"
    #: Accept a file saved from other weights of the same shape.
    allow_other_model: bool = False

    def label(self) -> str:
        if self.kind == "turn":
            return f"before turn {self.turn + 1}"
        if self.kind == "file":
            return self.path.rsplit("/", 1)[-1]
        return "live"


@dataclass(frozen=True)
class DiffStates:
    """Compare two states; the answer is a :class:`StateDiffReady`."""

    a: StateRef
    b: StateRef


@dataclass(frozen=True)
class Fork:
    """Start a new branch with turns up to and including ``index``; the old branch is kept."""

    index: int


@dataclass(frozen=True)
class SwitchBranch:
    index: int


@dataclass(frozen=True)
class ImportTimeState:
    """Start a new conversation from a state-tuning file (``blocks.N.att.time_state``)."""

    path: str
    orientation: str = "as-stored"


@dataclass(frozen=True)
class ExportTimeState:
    """Write the live WKV state as a state-tuning ``.pth`` file."""

    path: str
    orientation: str = "as-stored"


@dataclass(frozen=True)
class AutosaveSession:
    """Save the conversation as this model's autosave now and wait until it is written (the final
    save, sent when the app exits; the engine also autosaves in the background after every change)."""


@dataclass(frozen=True)
class ResumeSession:
    """Replace the conversation with a saved session (state, transcript and snapshots)."""

    path: str
    allow_other_model: bool = False


@dataclass(frozen=True)
class _Shutdown:
    """Ends the engine thread (sent by ``EngineWorker.close``)."""


Command = Union[
    LoadModel, Send, Regenerate, Edit, Rewind, NewConversation, Export, SaveState, LoadState, DiffStates, Fork,
    SwitchBranch, ImportTimeState, ExportTimeState, AutosaveSession, ResumeSession, _Shutdown,
]
#: Commands the state inspector's side of the engine thread (``tui.inspector``) answers.
STATE_COMMANDS = (DiffStates, Fork, SwitchBranch, ImportTimeState, ExportTimeState, ResumeSession)
_GENERATING_COMMANDS = (Send, Regenerate, Edit)


# ---------------------------------------------------------------------------- events (engine → UI)


@dataclass(frozen=True)
class ModelSummary:
    """What the header, panes and status line show about a loaded model."""

    role: Role
    name: str
    path: str
    device: str
    dtype: str
    n_layer: int
    n_embd: int
    n_head: int
    head_size: int
    vocab: int
    n_params: int
    state_bytes: int
    tokenizer: str
    kernels: str
    demo: bool

    @classmethod
    def of(cls, role: Role, model: Model, tokenizer: Tokenizer, demo: bool) -> "ModelSummary":
        i = model.info
        return cls(
            role=role, name=i.name, path=i.path, device=i.device, dtype=i.dtype, n_layer=i.n_layer,
            n_embd=i.n_embd, n_head=i.n_head, head_size=i.head_size, vocab=i.vocab,
            n_params=i.n_params, state_bytes=i.state_bytes, tokenizer=tokenizer.name,
            kernels=i.kernels, demo=demo,
        )


@dataclass(frozen=True)
class ModelLoading:
    role: Role
    path: str
    stage: str
    #: 0..1 while the file is read, None while the model is being built (indeterminate).
    fraction: float | None
    size_bytes: int


@dataclass(frozen=True)
class ModelLoaded:
    summary: ModelSummary


@dataclass(frozen=True)
class ModelLoadFailed:
    role: Role
    message: str


@dataclass(frozen=True)
class TurnView:
    """A finished or running turn as the chat and the snapshot list show it."""

    index: int
    user: str
    reply: str
    stop_reason: str | None
    generated_tokens: int
    tokens_per_second: float
    #: Whether the state before this turn is kept in memory (rewinding there is instant).
    has_snapshot: bool
    #: Tokens the state had consumed before this turn.
    tokens_before: int | None
    #: Tokens a rewind to this turn must re-feed when its snapshot was evicted (0 when kept).
    replay_tokens: int = 0


@dataclass(frozen=True)
class TranscriptTruncated:
    """Turns from ``keep`` on are gone (regenerate, edit, rewind)."""

    keep: int


@dataclass(frozen=True)
class TranscriptReplaced:
    """The whole conversation changed (new model, new conversation)."""

    turns: tuple[TurnView, ...]


@dataclass(frozen=True)
class TurnStarted:
    index: int
    user: str
    #: Text the prompt put in the assistant's mouth (e.g. "<think"), shown before the reply.
    reply_prefix: str


@dataclass(frozen=True)
class ReplyDelta:
    index: int
    text: str


@dataclass(frozen=True)
class ReplyFinished:
    turn: TurnView


@dataclass(frozen=True)
class ReplyFailed:
    """The engine failed mid-reply: the turn was removed and its text goes back to the prompt."""

    index: int
    user: str
    message: str


@dataclass(frozen=True)
class PromptRejected:
    """A message could not be sent (no model yet, busy…): give the text back to the prompt."""

    text: str
    message: str


@dataclass(frozen=True)
class Stats:
    generating: bool
    tokens_per_second: float
    time_to_first_token: float | None
    generated_tokens: int
    prompt_tokens: int
    state_bytes: int
    tokens_seen: int


@dataclass(frozen=True)
class ConversationInfo:
    """For the state pane: the snapshot list and the numbers of the live state."""

    turns: tuple[TurnView, ...]
    tokens_seen: int
    state_bytes: int
    snapshots_kept: int
    snapshot_bytes: int
    snapshot_budget: int


@dataclass(frozen=True)
class InspectorUpdate:
    """New numbers for the state inspector, merged in the outbox until the UI drains it.

    ``stats`` summarises the newest state (None when none was taken since the last event);
    ``changes`` are per-token relative changes of the WKV state, oldest first. ``reset`` says
    the history before this event belongs to another state line (rewind, load, fork).
    The tensors inside ``stats`` are small CPU copies owned by this event.
    """

    stats: "StateStats | None"
    changes: tuple[float, ...] = ()
    reset: bool = False


@dataclass(frozen=True)
class StateDiffReady:
    diff: "StateDiff"
    label_a: str
    label_b: str


@dataclass(frozen=True)
class BranchesInfo:
    """The conversation's branches (forks); ``current`` is the one the chat shows."""

    names: tuple[str, ...]
    current: int


@dataclass(frozen=True)
class SessionAvailable:
    """An autosaved session for the loaded chat model exists: the app offers to resume it."""

    path: str
    description: str


@dataclass(frozen=True)
class Notice:
    severity: Severity
    message: str


Event = Union[
    ModelLoading, ModelLoaded, ModelLoadFailed, TranscriptTruncated, TranscriptReplaced, TurnStarted,
    ReplyDelta, ReplyFinished, ReplyFailed, PromptRejected, Stats, ConversationInfo, Notice, InspectorUpdate,
    StateDiffReady, BranchesInfo, SessionAvailable,
]


class Outbox(MergingOutbox[Event]):
    """The engine thread's outbox: reply text joined, only the newest stats and load progress.

    Finished or failed replies, rejected prompts, model loads, notices and state diffs are
    urgent (see :class:`~tui.outbox.MergingOutbox`).
    """

    _LATEST_ONLY = (Stats, ModelLoading)
    _URGENT = (ReplyFinished, ReplyFailed, PromptRejected, ModelLoaded, ModelLoadFailed, Notice, StateDiffReady)

    def merge(self, waiting: list[Event], event: Event) -> Event | None:
        if isinstance(event, ReplyDelta) and waiting:
            last = waiting[-1]
            if isinstance(last, ReplyDelta) and last.index == event.index:
                waiting[-1] = ReplyDelta(event.index, last.text + event.text)
                return None
        if isinstance(event, InspectorUpdate):
            event = _merge_inspector_update(waiting, event)
        if isinstance(event, self._LATEST_ONLY):
            # Only the newest matters; drop an older one still waiting.
            for i in range(len(waiting) - 1, -1, -1):
                if type(waiting[i]) is type(event):
                    del waiting[i]
                    break
        return event

    def urgent(self, event: Event) -> bool:
        return isinstance(event, self._URGENT)


#: Per-token changes kept while the UI does not drain (the sparkline shows fewer anyway).
MAX_MERGED_CHANGES = 1024


def _merge_inspector_update(events: list[Event], event: InspectorUpdate) -> InspectorUpdate:
    """Fold a waiting inspector update into ``event`` (removing it from ``events``)."""
    for i in range(len(events) - 1, -1, -1):
        older = events[i]
        if isinstance(older, InspectorUpdate):
            del events[i]
            if event.reset:
                return event  # what came before belongs to another state line
            return InspectorUpdate(
                event.stats if event.stats is not None else older.stats,
                (older.changes + event.changes)[-MAX_MERGED_CHANGES:], older.reset,
            )
    return event
