"""A chat conversation carried as an RNN state, with a snapshot before every turn.

RWKV needs no growing prompt: each turn feeds only the new ``User: …\\n\\nAssistant:`` text to
the state the previous turn left. Because a state is small and fixed-size, the conversation
keeps the state from before every turn, which makes regenerate, edit-and-resend, rewind and
fork instant — none of them re-feeds history.

Snapshot memory policy (see ``docs/state.md``):

* Snapshots live in host RAM (a GPU model's states are copied off the device when a turn
  starts), so they never compete with the model for GPU memory.
* ``snapshot_budget`` caps the bytes they hold (state plus the logits that follow it). When a
  new turn pushes the total over the budget, the *oldest* snapshots are evicted first. The
  newest one (before the turn in progress, needed by regenerate) is always kept, and the
  snapshot before turn 0 is the conversation's initial state, which is held anyway and so
  costs nothing and is never evicted.
* Every turn records the exact tokens it fed, so an evicted snapshot is not lost: it can be
  rebuilt by replaying those tokens from the nearest earlier snapshot (``rewind(i,
  replay=True)``); ``snapshots()`` tells the UI which turns are instant and what a replay costs,
  and ``on_snapshots_evicted`` reports evictions as they happen.
"""

from __future__ import annotations

import enum
import json
import re
import time
from dataclasses import dataclass, field, replace
from typing import Callable

import torch

from engine.generate import Generation, GenerationResult, GenerationStats, StopReason
from engine.model import Model
from engine.sampling import Sampler, SamplingParams
from engine.state import State
from engine.tokenizers import Tokenizer

#: The reply ends where the model starts a new paragraph: the next line would be "User:".
TURN_SEPARATOR = "\n\n"
DEFAULT_SNAPSHOT_BUDGET = 512 * 1024 * 1024


class ThinkMode(str, enum.Enum):
    """How the assistant turn is opened for G1 reasoning models."""

    OFF = "off"  # "Assistant:" — the model decides
    THINK = "think"  # "Assistant: <think" — reason first
    SKIP = "skip"  # "Assistant: <think></think" — answer directly

    @property
    def assistant_prefix(self) -> str:
        return {"off": "", "think": " <think", "skip": " <think></think"}[self.value]


def clean_message(text: str) -> str:
    """Normalise user text as the RWKV chat templates expect: no blank lines inside a turn."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").strip()
    return re.sub(r"\n{2,}", "\n", text)


def _prompt_tokens_fed(turn: "Turn", state_before: State, result: GenerationResult) -> int:
    """How much of the prompt reached the state: all of it unless cancelled during prefill."""
    if result.stop_reason != StopReason.CANCELLED or result.tokens:
        return len(turn.prompt_tokens)
    fed = result.state.tokens_seen - state_before.tokens_seen
    return max(0, min(len(turn.prompt_tokens), fed))


@dataclass
class Turn:
    """One exchange. The snapshot lets the conversation return to just before it."""

    user: str
    assistant: str = ""
    #: Text the prompt put in the assistant's mouth (e.g. " <think"); shown before the reply.
    assistant_prefix: str = ""
    state_before: State | None = None
    logits_before: torch.Tensor | None = None
    #: Whether a separator had to be fed before this turn (previous reply was cut short).
    separator_before: bool = False
    stats: GenerationStats | None = None
    stop_reason: StopReason | None = None
    finished: bool = False
    created: float = field(default_factory=time.time)
    #: The encoded prompt of this turn (separator, system and user text, assistant opening).
    prompt_tokens: list[int] = field(default_factory=list)
    #: How many of ``prompt_tokens`` reached the state (fewer only if cancelled during prefill).
    prompt_tokens_fed: int = 0
    #: Sampled tokens that were fed to the state (the reply; a stop token is never fed).
    reply_tokens: list[int] = field(default_factory=list)
    #: Tokens the state had consumed before this turn (kept when the snapshot is evicted).
    tokens_before: int = 0
    #: Prefill chunk length the prompt was fed with; a replay uses the same split (0: unknown).
    prefill_chunk: int = 0

    @property
    def fed_tokens(self) -> list[int]:
        """Every token this turn fed, in order: replaying them reproduces its effect exactly."""
        return self.prompt_tokens[: self.prompt_tokens_fed] + self.reply_tokens

    @property
    def reply(self) -> str:
        """The assistant text as displayed (prefix included, leading space trimmed)."""
        return (self.assistant_prefix + self.assistant).lstrip(" ")

    @property
    def can_rewind(self) -> bool:
        """Whether the snapshot before this turn is in memory (rewinding is then instant)."""
        return self.state_before is not None


@dataclass(frozen=True)
class SnapshotInfo:
    """One entry of :meth:`Conversation.snapshots`: the state just before a turn."""

    #: Index of the turn this snapshot precedes.
    turn: int
    #: Tokens the state had consumed at that point.
    tokens_seen: int
    #: Host memory the snapshot holds; 0 when shared with the initial state.
    nbytes: int
    #: False once evicted by the memory budget: rewinding there needs a replay.
    kept: bool
    #: Tokens a replay must feed to rebuild it (0 when kept).
    replay_tokens: int


class Conversation:
    """Multi-turn chat on one model. Not thread-safe: drive it from one thread (the engine's)."""

    def __init__(
        self,
        model: Model,
        tokenizer: Tokenizer,
        params: SamplingParams | None = None,
        *,
        system: str | None = None,
        think: ThinkMode = ThinkMode.OFF,
        initial_state: State | None = None,
        snapshot_budget: int = DEFAULT_SNAPSHOT_BUDGET,
        on_snapshots_evicted: Callable[[list[int]], None] | None = None,
    ) -> None:
        if snapshot_budget < 0:
            raise ValueError("snapshot_budget must be ≥ 0 bytes")
        self.model = model
        self.tokenizer = tokenizer
        self.params = (params or SamplingParams()).validate()
        self.system = system
        self.think = think
        self.snapshot_budget = snapshot_budget
        #: Called (on the engine thread) with the turn indices whose snapshots were just evicted.
        self.on_snapshots_evicted = on_snapshots_evicted
        self.initial_state = (
            initial_state.clone().to("cpu") if initial_state is not None else model.zero_state()
        )
        self.state = self.initial_state
        #: Logits after ``state``: None until something has been fed.
        self.logits: torch.Tensor | None = None
        self.turns: list[Turn] = []
        self._needs_separator = False
        self._active: Generation | None = None

    # ------------------------------------------------------------------ prompts

    def prompt_for(self, user_text: str, first: bool, separator: bool) -> str:
        """The exact text fed for a user turn."""
        parts = []
        if separator:
            parts.append(TURN_SEPARATOR)
        if first and self.system and self.system.strip():
            parts.append(f"System: {clean_message(self.system)}{TURN_SEPARATOR}")
        parts.append(f"User: {clean_message(user_text)}{TURN_SEPARATOR}Assistant:{self.think.assistant_prefix}")
        return "".join(parts)

    # ------------------------------------------------------------------ turns

    def send(self, user_text: str, params: SamplingParams | None = None) -> Generation:
        """Start the assistant's reply to ``user_text``; iterate the result for text deltas."""
        if self._busy():
            raise RuntimeError("a reply is still being generated")
        if not clean_message(user_text):
            raise ValueError("message is empty")
        prompt = self.prompt_for(user_text, first=not self.turns, separator=self._needs_separator)
        prompt_tokens = self.tokenizer.encode(prompt)
        turn = Turn(
            user=clean_message(user_text),
            assistant_prefix=self.think.assistant_prefix,
            state_before=self._snapshot_of(self.state),
            logits_before=self.logits,
            separator_before=self._needs_separator,
            prompt_tokens=prompt_tokens,
            tokens_before=self.state.tokens_seen,
            prefill_chunk=self.model.chunk_len,
        )
        self.turns.append(turn)
        self._enforce_budget()
        return self._start(turn, prompt_tokens, self.state, params)

    def regenerate(self, params: SamplingParams | None = None) -> Generation:
        """Replace the last reply: back to the state before that turn, same user text."""
        if not self.turns:
            raise ValueError("nothing to regenerate")
        return self.edit(len(self.turns) - 1, self.turns[-1].user, params)

    def edit(
        self, index: int, user_text: str, params: SamplingParams | None = None, *, replay: bool = False
    ) -> Generation:
        """Resend turn ``index`` with new text, dropping it and every later turn."""
        self.rewind(index, replay=replay)
        return self.send(user_text, params)

    def rewind(self, index: int, *, replay: bool = False) -> None:
        """Return to the moment before turn ``index`` (which is removed, with all later turns).

        If that snapshot was evicted, ``replay=True`` rebuilds it by re-feeding the recorded
        tokens from the nearest earlier snapshot (bit-identical, but it costs the forward
        passes: see :meth:`snapshots`); otherwise ValueError, and nothing changes.
        """
        self._check_index(index)
        if self._busy():
            raise RuntimeError("a reply is still being generated")
        state, logits, separator = self._state_before(index, replay)
        self.state = state
        self.logits = logits
        self._needs_separator = separator
        del self.turns[index:]

    def fork(self, index: int | None = None, *, replay: bool = False) -> "Conversation":
        """A new conversation sharing turns up to and including ``index`` (default: all).

        States are immutable values, so the branches share snapshots without copying them.
        """
        keep = len(self.turns) if index is None else index + 1
        if index is not None:
            self._check_index(index)
        other = Conversation(
            self.model, self.tokenizer, self.params, system=self.system, think=self.think,
            snapshot_budget=self.snapshot_budget,
        )
        other.initial_state = self.initial_state
        other.turns = [replace(t) for t in self.turns[:keep]]
        if keep == len(self.turns):
            if self._busy():
                raise RuntimeError("a reply is still being generated")
            other.state, other.logits, other._needs_separator = self.state, self.logits, self._needs_separator
        else:
            other.state, other.logits, other._needs_separator = self._state_before(keep, replay)
        other._enforce_budget()
        return other

    # ------------------------------------------------------------------ snapshots

    def snapshots(self) -> list[SnapshotInfo]:
        """One entry per turn: where rewinding to it is instant and what a replay would cost."""
        out = []
        replay = 0
        for i, turn in enumerate(self.turns):
            if turn.state_before is not None:
                replay = 0
            out.append(
                SnapshotInfo(
                    turn=i,
                    tokens_seen=turn.tokens_before,
                    nbytes=self._snapshot_nbytes(turn),
                    kept=turn.state_before is not None,
                    replay_tokens=replay,
                )
            )
            replay += len(turn.fed_tokens)
        return out

    @property
    def snapshot_bytes(self) -> int:
        """Host memory held by snapshots (shared states counted once, the initial state not)."""
        seen: set[int] = set()
        total = 0
        for turn in self.turns:
            if turn.state_before is not None and id(turn.state_before) not in seen:
                seen.add(id(turn.state_before))
                total += self._snapshot_nbytes(turn)
        return total

    def set_snapshot_budget(self, nbytes: int) -> list[int]:
        """Change the cap; evicts at once if needed and returns the evicted turn indices."""
        if nbytes < 0:
            raise ValueError("snapshot_budget must be ≥ 0 bytes")
        self.snapshot_budget = nbytes
        return self._enforce_budget()

    def replay_tokens(self, index: int) -> int:
        """Tokens :meth:`rewind` with ``replay=True`` would feed to reach turn ``index``."""
        self._check_index(index)
        return self.snapshots()[index].replay_tokens

    def reset(self, initial_state: State | None = None) -> None:
        """Forget everything (optionally starting from another state)."""
        if self._busy():
            raise RuntimeError("a reply is still being generated")
        if initial_state is not None:
            self.initial_state = initial_state.clone().to("cpu")
        self.state = self.initial_state
        self.logits = None
        self.turns = []
        self._needs_separator = False

    @property
    def generating(self) -> bool:
        return self._active is not None and self._active.result is None

    def _busy(self) -> bool:
        """A reply is under way and has not been cancelled: the state is about to change."""
        return self.generating and not self._active.cancelled  # type: ignore[union-attr]

    # ------------------------------------------------------------------ internals

    def _start(
        self, turn: Turn, prompt: list[int], state: State, params: SamplingParams | None
    ) -> Generation:
        p = (params or self.params).validate()
        turn_seed = None if p.seed is None else (p.seed * 1_000_003 + len(self.turns) - 1) % (2**63)
        bans = tuple(sorted(set(p.ban_tokens) | ({self.tokenizer.end_token} if self.tokenizer.end_token is not None else set())))
        sampler = Sampler(p.with_(seed=turn_seed, ban_tokens=bans), self.model.config.vocab)

        def finished(result: GenerationResult) -> None:
            turn.reply_tokens = list(result.tokens)
            turn.prompt_tokens_fed = _prompt_tokens_fed(turn, state, result)
            turn.assistant = result.text
            turn.stats = result.stats
            turn.stop_reason = result.stop_reason
            turn.finished = True
            if not any(t is turn for t in self.turns):
                return  # rewound away while it was still running: its state is not ours
            self.state = result.state
            self.logits = result.logits if result.logits.numel() else None
            self._needs_separator = result.stop_reason != StopReason.STOP_STRING

        generation = Generation(
            self.model, self.tokenizer, sampler, prompt=prompt, state=state,
            stop_strings=(TURN_SEPARATOR,), max_tokens=p.max_tokens, on_finish=finished,
        )
        self._active = generation
        return generation

    def _snapshot_of(self, state: State) -> State:
        """The state as kept in a snapshot: in host RAM (a no-op for CPU models)."""
        return state.to("cpu")

    def _snapshot_nbytes(self, turn: Turn) -> int:
        if turn.state_before is None or turn.state_before is self.initial_state:
            return 0
        logits = turn.logits_before
        return turn.state_before.nbytes + (logits.numel() * logits.element_size() if logits is not None else 0)

    def _enforce_budget(self) -> list[int]:
        """Evict the oldest snapshots until they fit the budget; the newest is always kept."""
        candidates = [
            i for i, t in enumerate(self.turns[:-1])
            if t.state_before is not None and t.state_before is not self.initial_state
        ]
        evicted: list[int] = []
        total = self.snapshot_bytes
        while candidates and total > self.snapshot_budget:
            index = candidates.pop(0)
            turn = self.turns[index]
            shared = any(
                t.state_before is turn.state_before for j, t in enumerate(self.turns) if j != index
            )
            if not shared:
                total -= self._snapshot_nbytes(turn)
            turn.state_before = None
            turn.logits_before = None
            evicted.append(index)
        if evicted and self.on_snapshots_evicted is not None:
            self.on_snapshots_evicted(evicted)
        return evicted

    def _check_index(self, index: int) -> None:
        if not 0 <= index < len(self.turns):
            raise IndexError(f"no turn {index}")

    def _state_before(self, index: int, replay: bool) -> tuple[State, torch.Tensor | None, bool]:
        """State, logits and separator flag from just before turn ``index`` (``len(turns)``: now)."""
        if index == len(self.turns):
            return self.state, self.logits, self._needs_separator
        turn = self.turns[index]
        if turn.state_before is not None:
            return turn.state_before, turn.logits_before, turn.separator_before
        if not replay:
            raise ValueError(
                f"the snapshot before turn {index + 1} was evicted by the memory budget; "
                f"rewinding there replays {self.snapshots()[index].replay_tokens} tokens"
            )
        start = max(i for i in range(index + 1) if i == 0 or self.turns[i].state_before is not None)
        base = self.turns[start]
        state = base.state_before if base.state_before is not None else self.initial_state
        logits = base.logits_before if base.state_before is not None else None
        for previous in self.turns[start:index]:
            state, logits = self._replay(previous, state, logits)
        return self._snapshot_of(state), logits, turn.separator_before

    def _replay(
        self, turn: Turn, state: State, logits: torch.Tensor | None
    ) -> tuple[State, torch.Tensor | None]:
        """Feed a turn's recorded tokens with the same calls the live turn made (bit-exact)."""
        prompt = turn.prompt_tokens[: turn.prompt_tokens_fed]
        chunk = turn.prefill_chunk or self.model.chunk_len
        for offset in range(0, len(prompt), chunk):
            logits, state = self.model.forward(prompt[offset:offset + chunk], state)
        for token in turn.reply_tokens:
            logits, state = self.model.forward([token], state)
        return state, logits

    # ------------------------------------------------------------------ export

    def to_dict(self) -> dict[str, object]:
        return {
            "model": self.model.info.name,
            "system": self.system,
            "think": self.think.value,
            "sampling": self.params.to_dict(),
            "turns": [
                {
                    "user": t.user,
                    "assistant": t.reply,
                    "stop_reason": t.stop_reason.value if t.stop_reason else None,
                    "generated_tokens": t.stats.generated_tokens if t.stats else 0,
                    "tokens_per_second": round(t.stats.tokens_per_second, 2) if t.stats else 0.0,
                    "created": t.created,
                }
                for t in self.turns
            ],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, indent=2)

    def to_markdown(self) -> str:
        lines = [f"# Conversation with {self.model.info.name}", ""]
        if self.system:
            lines += ["**System:** " + self.system, ""]
        for t in self.turns:
            lines += ["## User", "", t.user, "", "## Assistant", "", t.reply, ""]
        return "\n".join(lines)

