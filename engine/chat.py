"""A chat conversation carried as an RNN state, with a snapshot before every turn.

RWKV needs no growing prompt: each turn feeds only the new ``User: …\\n\\nAssistant:`` text to
the state the previous turn left. Because a state is small and fixed-size, the conversation
keeps the state from before every turn, which makes regenerate, edit-and-resend, rewind and
fork instant — none of them re-feeds history.
"""

from __future__ import annotations

import enum
import json
import re
import time
from dataclasses import dataclass, field, replace

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

    @property
    def reply(self) -> str:
        """The assistant text as displayed (prefix included, leading space trimmed)."""
        return (self.assistant_prefix + self.assistant).lstrip(" ")

    @property
    def can_rewind(self) -> bool:
        return self.state_before is not None


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
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.params = (params or SamplingParams()).validate()
        self.system = system
        self.think = think
        self.snapshot_budget = snapshot_budget
        self.initial_state = initial_state.clone() if initial_state is not None else model.zero_state()
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
        if self._active is not None and self._active.result is None and not self._active.cancelled:
            raise RuntimeError("a reply is still being generated")
        if not clean_message(user_text):
            raise ValueError("message is empty")
        turn = Turn(
            user=clean_message(user_text),
            assistant_prefix=self.think.assistant_prefix,
            state_before=self.state,
            logits_before=self.logits,
            separator_before=self._needs_separator,
        )
        prompt = self.prompt_for(user_text, first=not self.turns, separator=self._needs_separator)
        self.turns.append(turn)
        self._enforce_budget()
        return self._start(turn, self.tokenizer.encode(prompt), self.state, params)

    def regenerate(self, params: SamplingParams | None = None) -> Generation:
        """Replace the last reply: back to the state before that turn, same user text."""
        if not self.turns:
            raise ValueError("nothing to regenerate")
        return self.edit(len(self.turns) - 1, self.turns[-1].user, params)

    def edit(self, index: int, user_text: str, params: SamplingParams | None = None) -> Generation:
        """Resend turn ``index`` with new text, dropping it and every later turn."""
        self.rewind(index)
        return self.send(user_text, params)

    def rewind(self, index: int) -> None:
        """Return to the moment before turn ``index`` (which is removed, with all later turns)."""
        if not 0 <= index < len(self.turns):
            raise IndexError(f"no turn {index}")
        turn = self.turns[index]
        if turn.state_before is None:
            raise ValueError(f"turn {index + 1} is older than the snapshot memory budget keeps")
        self.state = turn.state_before
        self.logits = turn.logits_before
        self._needs_separator = turn.separator_before
        del self.turns[index:]

    def fork(self, index: int | None = None) -> "Conversation":
        """A new conversation sharing turns up to and including ``index`` (default: all).

        States are immutable values, so the branches share snapshots without copying them.
        """
        keep = len(self.turns) if index is None else index + 1
        other = Conversation(
            self.model, self.tokenizer, self.params, system=self.system, think=self.think,
            initial_state=self.initial_state, snapshot_budget=self.snapshot_budget,
        )
        other.turns = [replace(t) for t in self.turns[:keep]]
        if keep == len(self.turns):
            other.state, other.logits, other._needs_separator = self.state, self.logits, self._needs_separator
        else:
            nxt = self.turns[keep]
            if nxt.state_before is None:
                raise ValueError(f"turn {keep + 1} is older than the snapshot memory budget keeps")
            other.state, other.logits, other._needs_separator = nxt.state_before, nxt.logits_before, nxt.separator_before
        return other

    def reset(self, initial_state: State | None = None) -> None:
        """Forget everything (optionally starting from another state)."""
        if initial_state is not None:
            self.initial_state = initial_state.clone()
        self.state = self.initial_state
        self.logits = None
        self.turns = []
        self._needs_separator = False

    @property
    def generating(self) -> bool:
        return self._active is not None and self._active.result is None

    # ------------------------------------------------------------------ internals

    def _start(
        self, turn: Turn, prompt: list[int], state: State, params: SamplingParams | None
    ) -> Generation:
        p = (params or self.params).validate()
        turn_seed = None if p.seed is None else (p.seed * 1_000_003 + len(self.turns) - 1) % (2**63)
        bans = tuple(sorted(set(p.ban_tokens) | ({self.tokenizer.end_token} if self.tokenizer.end_token is not None else set())))
        sampler = Sampler(p.with_(seed=turn_seed, ban_tokens=bans), self.model.config.vocab)

        def finished(result: GenerationResult) -> None:
            turn.assistant = result.text
            turn.stats = result.stats
            turn.stop_reason = result.stop_reason
            turn.finished = True
            self.state = result.state
            self.logits = result.logits if result.logits.numel() else None
            self._needs_separator = result.stop_reason != StopReason.STOP_STRING

        generation = Generation(
            self.model, self.tokenizer, sampler, prompt=prompt, state=state,
            stop_strings=(TURN_SEPARATOR,), max_tokens=p.max_tokens, on_finish=finished,
        )
        self._active = generation
        return generation

    def _enforce_budget(self) -> None:
        """Drop the oldest snapshots once they exceed the memory budget (newest always kept)."""
        per_state = self.state.nbytes
        kept = [t for t in self.turns if t.state_before is not None]
        while len(kept) > 1 and len(kept) * per_state > self.snapshot_budget:
            oldest = kept.pop(0)
            oldest.state_before = None
            oldest.logits_before = None

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

