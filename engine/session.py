"""Saving a whole conversation — live state, transcript, snapshots — and resuming it later.

A session file is a state file (``engine.state_io``) of kind ``session``: its main tensors are
the live state, so ``rwkv-tui --state FILE`` can continue from it like from any state, and its
``transcript`` metadata holds the turns with the exact tokens each one fed. Because of those
tokens a session does not need to store every snapshot: snapshots left out of the file (to
keep autosaves small) are rebuilt bit-exactly by replay when the user rewinds that far.

The app autosaves one session per model (keyed by the model's fingerprint) after every change
to the conversation and on exit, and on start offers to resume it: :func:`autosave_path`,
:func:`find_autosave`, :func:`save_session`, :func:`load_session`. To save without holding up
the thread that owns the conversation, :func:`capture_session` takes a cheap picture of it and
:func:`write_session` / :func:`write_autosave` write that picture on any other thread.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import platformdirs
import torch

from engine.atomic import remove_stale_temps
from engine.chat import DEFAULT_SNAPSHOT_BUDGET, Conversation, ThinkMode, Turn
from engine.errors import EngineError, StateError
from engine.generate import GenerationStats, StopReason
from engine.paths import APP_NAME
from engine.sampling import SamplingParams
from engine.state import State
from engine.state_io import (
    SUFFIX, StateFileInfo, is_state_file, load_state_file, read_state_info, read_transcript, same_weights, save_state,
)
from engine.tokenizers import Tokenizer

SESSION_VERSION = 1
#: Bytes of snapshots (besides a non-zero initial state) written into a session file, newest
#: first; older ones are rebuilt by replay if ever needed.
DEFAULT_FILE_SNAPSHOT_BUDGET = 128 * 1024 * 1024
#: The same for autosaves, which are written after every turn: serialising holds Python's lock
#: for about 0.5 ms per MB (a pause in a reply that streams meanwhile), so they stay smaller.
AUTOSAVE_SNAPSHOT_BUDGET = 32 * 1024 * 1024


@dataclass(frozen=True)
class SessionSummary:
    """What the app shows when offering to resume a session."""

    path: Path
    model_name: str
    turns: int
    tokens_seen: int
    created: str
    #: The last thing the user said, shortened for a one-line prompt.
    last_user: str

    def describe(self) -> str:
        when = self.created.replace("T", " ").replace("+00:00", " UTC")
        text = f"{self.turns} turn{'s' if self.turns != 1 else ''}, {self.tokens_seen} tokens, saved {when}"
        return text + (f" — last: “{self.last_user}”" if self.last_user else "")


# ---------------------------------------------------------------------------------- saving


@dataclass(frozen=True)
class SessionCapture:
    """A conversation as it was at one moment, ready to be written by any thread.

    States are immutable values, so holding references to them is enough; everything mutable
    (turns, token lists) is copied. The app captures on the engine thread, which owns the
    conversation, and writes on a background thread while the conversation moves on.
    """

    model: Any
    live: State
    logits: torch.Tensor | None
    history: list[int]
    transcript: dict[str, Any]
    snapshots: dict[int, tuple[State, torch.Tensor | None]]


def capture_session(
    conversation: Conversation, *, snapshot_budget: int = DEFAULT_FILE_SNAPSHOT_BUDGET
) -> SessionCapture:
    """Take what :func:`write_session` needs from ``conversation``; cheap (no tensor is copied
    for a CPU model). Raises RuntimeError while a reply is being generated (its state is not
    final yet).

    Snapshots go in newest first while they fit ``snapshot_budget`` bytes; a non-zero initial
    state is always included because nothing could rebuild it.
    """
    if conversation._busy():
        raise RuntimeError("cannot save a conversation while a reply is being generated")
    initial_is_zero = _is_zero(conversation.initial_state)
    snapshots: dict[int, tuple[State, torch.Tensor | None]] = {}
    if conversation.turns and not initial_is_zero:
        snapshots[0] = (conversation.initial_state, None)
    used = 0
    for index in range(len(conversation.turns) - 1, 0, -1):
        turn = conversation.turns[index]
        if turn.state_before is None or turn.state_before is conversation.initial_state:
            continue
        size = turn.state_before.nbytes + (
            turn.logits_before.numel() * 4 if turn.logits_before is not None else 0
        )
        if used + size > snapshot_budget:
            break
        used += size
        snapshots[index] = (turn.state_before, turn.logits_before)

    transcript = {
        "session_version": SESSION_VERSION,
        "system": conversation.system,
        "think": conversation.think.value,
        "sampling": conversation.params.to_dict(),
        "needs_separator": conversation._needs_separator,
        "initial_state": "zero" if initial_is_zero else ("snapshot" if conversation.turns else "live"),
        "snapshot_budget": conversation.snapshot_budget,
        "turns": [_turn_to_dict(t) for t in conversation.turns],
    }
    logits = conversation.logits
    return SessionCapture(
        model=conversation.model,
        live=conversation.state.to("cpu"),
        logits=logits.to("cpu") if logits is not None else None,
        history=[token for turn in conversation.turns for token in turn.fed_tokens],
        transcript=transcript,
        snapshots=snapshots,
    )


def write_session(path: str | Path, capture: SessionCapture, *, dtype: str = "fp32") -> Path:
    """Write a captured conversation to ``path`` atomically (safe on any thread)."""
    live, logits, snapshots = _unshared(capture.live, capture.logits, capture.snapshots)
    return save_state(
        path, live, capture.model, tokens=capture.history, logits=logits,
        transcript=capture.transcript, snapshots=snapshots, kind="session", dtype=dtype,
    )


def save_session(
    path: str | Path,
    conversation: Conversation,
    *,
    snapshot_budget: int = DEFAULT_FILE_SNAPSHOT_BUDGET,
    dtype: str = "fp32",
) -> Path:
    """Write ``conversation`` to ``path`` atomically (see :func:`capture_session`)."""
    return write_session(path, capture_session(conversation, snapshot_budget=snapshot_budget), dtype=dtype)


def _unshared(
    live: State, logits: torch.Tensor | None, snapshots: dict[int, tuple[State, torch.Tensor | None]]
) -> tuple[State, torch.Tensor | None, dict[int, tuple[State, torch.Tensor | None]]]:
    """The same states and logits, with a copy wherever one shares memory with another.

    A conversation shares one State between the live state and its snapshots whenever a turn
    changed nothing (stopped before its first token) and between branches; that is by design,
    but a file stores every tensor on its own and safetensors refuses aliased ones.
    """
    seen: set[int] = set()

    def own(tensor: torch.Tensor) -> torch.Tensor:
        key = tensor.untyped_storage().data_ptr()
        if not tensor.numel():
            return tensor
        if key in seen:
            return tensor.clone()
        seen.add(key)
        return tensor

    def own_state(state: State) -> State:
        parts = [own(state.att_x), own(state.wkv), own(state.ffn_x)]
        if all(a is b for a, b in zip(parts, (state.att_x, state.wkv, state.ffn_x))):
            return state
        return State(*parts, tokens_seen=state.tokens_seen, meta=dict(state.meta))

    def own_logits(tensor: torch.Tensor | None) -> torch.Tensor | None:
        return None if tensor is None else own(tensor)

    live = own_state(live)
    logits = own_logits(logits)
    out = {index: (own_state(state), own_logits(snap_logits)) for index, (state, snap_logits) in snapshots.items()}
    return live, logits, out


def _turn_to_dict(turn: Turn) -> dict[str, Any]:
    stats = None
    if turn.stats is not None:
        s = turn.stats
        stats = {
            "prompt_tokens": s.prompt_tokens, "generated_tokens": s.generated_tokens,
            "prefill_seconds": s.prefill_seconds, "decode_seconds": s.decode_seconds,
            "time_to_first_token": s.time_to_first_token,
        }
    return {
        "user": turn.user,
        "assistant": turn.assistant,
        "assistant_prefix": turn.assistant_prefix,
        "separator_before": turn.separator_before,
        "stop_reason": turn.stop_reason.value if turn.stop_reason else None,
        "finished": turn.finished,
        "created": turn.created,
        "tokens_before": turn.tokens_before,
        "prompt_tokens": list(turn.prompt_tokens),
        "prompt_tokens_fed": turn.prompt_tokens_fed,
        "reply_tokens": list(turn.reply_tokens),
        "stats": stats,
    }


def _is_zero(state: State) -> bool:
    return not (state.att_x.any() or state.wkv.any() or state.ffn_x.any())


# ---------------------------------------------------------------------------------- loading


def load_session(
    path: str | Path,
    model: Any,
    tokenizer: Tokenizer,
    *,
    allow_other_model: bool = False,
    snapshot_budget: int | None = None,
) -> Conversation:
    """A Conversation restored from ``path``, ready to continue, rewind or fork.

    Validates everything (see ``engine.state_io.load_state_file``) before building anything;
    on error the caller's current conversation is untouched. A plain state file (kind
    ``state``) gives a new conversation that starts from that state.
    """
    loaded = load_state_file(path, model, allow_other_model=allow_other_model)
    path = Path(path).expanduser()
    budget = DEFAULT_SNAPSHOT_BUDGET if snapshot_budget is None else snapshot_budget
    if loaded.info.kind != "session" or loaded.transcript is None:
        return Conversation(model, tokenizer, initial_state=loaded.state, snapshot_budget=budget)
    data = loaded.transcript
    try:
        return _conversation_from(
            path, loaded.state, loaded.logits, loaded.snapshots, data, model, tokenizer, budget
        )
    except StateError:
        raise
    except EngineError as exc:
        raise StateError(f"{path}: session settings are invalid ({exc})") from None
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise StateError(f"{path}: session transcript is corrupt ({type(exc).__name__}: {exc})") from None


def _conversation_from(
    path: Path,
    live: State,
    logits: torch.Tensor | None,
    snapshots: dict[int, tuple[State, torch.Tensor | None]],
    data: dict[str, Any],
    model: Any,
    tokenizer: Tokenizer,
    budget: int,
) -> Conversation:
    version = data.get("session_version")
    if not isinstance(version, int) or version > SESSION_VERSION:
        raise StateError(f"{path}: session format {version!r} is not supported by this version")
    turns_data = data["turns"]
    if not isinstance(turns_data, list):
        raise StateError(f"{path}: session transcript is corrupt (turns is not a list)")
    if any(index >= len(turns_data) for index in snapshots):
        raise StateError(f"{path}: session has snapshots for turns it does not contain")
    initial_kind = data.get("initial_state")
    if initial_kind == "zero":
        initial = model.zero_state()
    elif initial_kind == "snapshot" and 0 in snapshots:
        initial = snapshots[0][0]
    elif initial_kind == "live" and not turns_data:
        initial = live
    else:
        raise StateError(f"{path}: session lacks its initial state ({initial_kind!r})")

    vocab = model.config.vocab if hasattr(model, "config") else tokenizer.vocab_size
    conversation = Conversation(
        model, tokenizer, SamplingParams.from_dict(dict(data["sampling"])),
        system=_optional_str(data.get("system")), think=ThinkMode(data.get("think", "off")),
        snapshot_budget=budget,
    )
    conversation.initial_state = initial
    turns = []
    for index, item in enumerate(turns_data):
        turn = _turn_from_dict(item, vocab)
        if index == 0:
            turn.state_before, turn.logits_before = initial, None
        elif index in snapshots:
            turn.state_before, turn.logits_before = snapshots[index]
        turns.append(turn)
    conversation.turns = turns
    conversation.state = live if turns else initial
    conversation.logits = logits if turns else None
    conversation._needs_separator = bool(data.get("needs_separator", False))
    conversation._enforce_budget()
    return conversation


def _turn_from_dict(item: dict[str, Any], vocab: int) -> Turn:
    def tokens(key: str) -> list[int]:
        values = item[key]
        if not isinstance(values, list) or not all(
            isinstance(t, int) and not isinstance(t, bool) and 0 <= t < vocab for t in values
        ):
            raise ValueError(f"{key} must be a list of token ids below {vocab}")
        return values

    prompt = tokens("prompt_tokens")
    fed = item["prompt_tokens_fed"]
    if not isinstance(fed, int) or not 0 <= fed <= len(prompt):
        raise ValueError("prompt_tokens_fed is out of range")
    stats = None
    if item.get("stats") is not None:
        s = item["stats"]
        stats = GenerationStats(
            prompt_tokens=int(s["prompt_tokens"]), generated_tokens=int(s["generated_tokens"]),
            prefill_seconds=float(s["prefill_seconds"]), decode_seconds=float(s["decode_seconds"]),
            time_to_first_token=None if s.get("time_to_first_token") is None else float(s["time_to_first_token"]),
        )
    stop = item.get("stop_reason")
    return Turn(
        user=str(item["user"]),
        assistant=str(item["assistant"]),
        assistant_prefix=str(item.get("assistant_prefix", "")),
        separator_before=bool(item.get("separator_before", False)),
        stats=stats,
        stop_reason=StopReason(stop) if stop is not None else None,
        finished=bool(item.get("finished", True)),
        created=float(item.get("created", time.time())),
        prompt_tokens=prompt,
        prompt_tokens_fed=fed,
        reply_tokens=tokens("reply_tokens"),
        tokens_before=int(item.get("tokens_before", 0)),
    )


def _optional_str(value: object) -> str | None:
    return None if value is None else str(value)


def load_start_state(
    path: str | Path,
    model: Any,
    *,
    orientation: str = "as-stored",
    allow_other_model: bool = False,
) -> State:
    """The state to start a chat from, for ``rwkv-tui --state FILE``: any state file a user has.

    rwkv-tui state and session files give their (live) state; anything else is read as a
    state-tuning file (``blocks.N.att.time_state``, .pth or safetensors) in ``orientation``.
    Everything is checked against ``model`` first.
    """
    from engine.time_state import import_time_state

    if is_state_file(path):
        return load_state_file(path, model, allow_other_model=allow_other_model).state
    return import_time_state(path, model, orientation=orientation)


# ---------------------------------------------------------------------------------- autosave


def sessions_dir() -> Path:
    """Where autosaved sessions live (XDG state directory)."""
    return Path(platformdirs.user_state_dir(APP_NAME)) / "sessions"


def states_dir() -> Path:
    """Default folder for states the user saves by hand (XDG data directory)."""
    return Path(platformdirs.user_data_dir(APP_NAME)) / "states"


def autosave_path(model: Any) -> Path:
    """The autosave file for this model: one per set of weights, so resuming never mismatches."""
    info = getattr(model, "info", model)
    return sessions_dir() / f"autosave-{info.fingerprint}{SUFFIX}"


def autosave(conversation: Conversation) -> Path:
    """Save ``conversation`` as this model's autosave (creating the folder if needed)."""
    return write_autosave(capture_autosave(conversation))


def capture_autosave(conversation: Conversation) -> SessionCapture:
    """:func:`capture_session` with the autosave's snapshot budget."""
    return capture_session(conversation, snapshot_budget=AUTOSAVE_SNAPSHOT_BUDGET)


def write_autosave(capture: SessionCapture) -> Path:
    """Write a captured conversation as its model's autosave (safe on any thread)."""
    path = autosave_path(capture.model)
    _private_folder(path.parent)
    return write_session(path, capture)


def remove_stale_autosave_temps() -> list[Path]:
    """Delete what autosaves killed mid-write left in the sessions folder (see
    ``engine.atomic.remove_stale_temps``: saves other running instances are making are kept)."""
    return remove_stale_temps(sessions_dir())


def _private_folder(folder: Path) -> None:
    """Create ``folder`` readable by the user alone (autosaves hold whole conversations), and
    tighten one that earlier versions left readable by others."""
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        if folder.stat().st_mode & 0o077:
            folder.chmod(0o700)
    except OSError as exc:
        raise StateError(f"cannot create {folder}: {exc.strerror or exc}") from None


def find_autosave(model: Any) -> SessionSummary | None:
    """The resumable autosave for this model, or None (missing, empty, unreadable or foreign).

    Earlier versions named the autosave by the older fingerprint; it is still found there.
    """
    path = autosave_path(model)
    legacy = getattr(getattr(model, "info", model), "legacy_fingerprint", "")
    if not path.is_file() and legacy:
        path = sessions_dir() / f"autosave-{legacy}{SUFFIX}"
    if not path.is_file():
        return None
    try:
        info = read_state_info(path)
        transcript = read_transcript(path) or {}
    except StateError:
        return None
    if info.kind != "session" or not same_weights(info, model):
        return None
    turns = transcript.get("turns") if isinstance(transcript, dict) else None
    if not isinstance(turns, list) or not turns:
        return None
    last = turns[-1].get("user", "") if isinstance(turns[-1], dict) else ""
    last = " ".join(str(last).split())
    return SessionSummary(
        path=path, model_name=info.model_name, turns=len(turns), tokens_seen=info.tokens_seen,
        created=info.created, last_user=last if len(last) <= 60 else last[:59] + "…",
    )


def summarize(info: StateFileInfo) -> str:
    """One line describing a state file, for lists and confirmations."""
    bound = f"model {info.model_name or info.fingerprint}" if info.fingerprint else "any model of this shape"
    return f"{info.kind}, {info.shape_text()}, {info.tokens_seen} tokens, {bound}"
