"""The engine thread's half of the state inspector (tui.inspector), without Textual, and the
outbox's merging of inspector updates."""

from __future__ import annotations

from pathlib import Path

import torch

from engine.session import save_session
from engine.state_stats import state_stats
from tests.tui.conftest import Recorder, settings
from tui.protocol import (
    BranchesInfo, ConversationInfo, DiffStates, Fork, InspectorUpdate, LoadModel, Notice, Outbox,
    ReplyFinished, Send, StateDiffReady, StateRef, SwitchBranch, TranscriptReplaced,
)
from tui.worker import EngineWorker


def update(changes: tuple[float, ...], reset: bool = False, stats: object = None) -> InspectorUpdate:
    return InspectorUpdate(stats, changes, reset)  # type: ignore[arg-type]


def test_outbox_merges_inspector_updates_and_a_reset_drops_the_old_line() -> None:
    box = Outbox()
    box.put(update((1.0, 2.0), stats="old"))
    box.put(Notice("information", "between"))
    box.put(update((3.0,)))
    events = box.drain()
    merged = [e for e in events if isinstance(e, InspectorUpdate)]
    assert len(merged) == 1 and merged[0].changes == (1.0, 2.0, 3.0) and merged[0].stats == "old"
    box.put(update((1.0,), stats="a"))
    box.put(update((5.0,), reset=True, stats="b"))
    (only,) = box.drain()
    assert only.changes == (5.0,) and only.reset and only.stats == "b"


def test_outbox_keeps_a_bounded_history_when_the_ui_does_not_drain() -> None:
    from tui.protocol import MAX_MERGED_CHANGES

    box = Outbox()
    for i in range(3000):
        box.put(update((float(i),)))
    (only,) = box.drain()
    assert len(only.changes) == MAX_MERGED_CHANGES and only.changes[-1] == 2999.0


def send(w: EngineWorker, rec: Recorder, text: str) -> None:
    rec.clear()  # wait for this reply's events, not an earlier one's
    w.submit(Send(text, settings()))
    rec.wait_for(lambda e: isinstance(e, ReplyFinished))
    rec.wait_for(lambda e: isinstance(e, ConversationInfo))


def test_watching_feeds_per_token_changes_and_a_final_summary(worker) -> None:
    w, rec = worker
    send(w, rec, "unwatched")
    assert not any(e.changes for e in rec.of(InspectorUpdate))
    w.inspector.watching = True
    send(w, rec, "watched")
    rec.wait_for(lambda e: isinstance(e, InspectorUpdate) and e.stats is not None
                 and e.stats.tokens_seen == w.conversation.state.tokens_seen)
    updates = rec.of(InspectorUpdate)
    changes = [c for u in updates for c in u.changes]
    generated = w.conversation.turns[-1].stats.generated_tokens
    assert len(changes) == generated - 1 and all(c > 0 for c in changes)
    assert not any(u.reset for u in updates)  # the reply continued the previous state line
    final = [u for u in updates if u.stats is not None][-1].stats
    assert torch.equal(final.wkv_norms, state_stats(w.conversation.state).wkv_norms)


def test_diff_fork_and_branch_switch(worker) -> None:
    w, rec = worker
    send(w, rec, "one")
    send(w, rec, "two")
    original = w.conversation
    rec.clear()
    w.submit(DiffStates(StateRef("turn", 1), StateRef("live")))
    ready = rec.wait_for(lambda e: isinstance(e, StateDiffReady))
    assert ready.label_a == "before turn 2" and ready.label_b == "live"
    assert (ready.diff.wkv > 0).all() and ready.diff.tokens_b == original.state.tokens_seen

    w.submit(Fork(0))
    replaced = rec.wait_for(lambda e: isinstance(e, TranscriptReplaced))
    assert [t.user for t in replaced.turns] == ["one"]
    branches = rec.wait_for(lambda e: isinstance(e, BranchesInfo) and len(e.names) == 2)
    assert branches.current == 1
    assert w.conversation is not original and w.conversation.state.equal(original.turns[1].state_before)
    rec.wait_for(lambda e: isinstance(e, ConversationInfo))
    w.submit(SwitchBranch(0))
    rec.wait_for(lambda e: isinstance(e, BranchesInfo) and e.current == 0)
    rec.wait_for(lambda e: isinstance(e, ConversationInfo))
    assert w.conversation is original and len(original.turns) == 2
    rec.clear()
    w.submit(SwitchBranch(7))
    notice = rec.wait_for(lambda e: isinstance(e, Notice))
    assert notice.severity == "error" and "no branch 8" in notice.message


def test_state_flag_with_a_session_file_restores_the_transcript(tiny_checkpoint: Path, tiny_model, tmp_path: Path) -> None:
    from engine import Conversation, SamplingParams, get_tokenizer

    conversation = Conversation(tiny_model, get_tokenizer("bytes"), SamplingParams(max_tokens=8, seed=2))
    for _ in conversation.send("saved before"):
        pass
    path = save_session(tmp_path / "chat.state.safetensors", conversation)

    w = EngineWorker()
    w.start()
    rec = Recorder(w)
    try:
        w.submit(LoadModel("chat", str(tiny_checkpoint), device="cpu", dtype="fp32", tokenizer="bytes",
                           state_path=str(path)))
        replaced = rec.wait_for(lambda e: isinstance(e, TranscriptReplaced) and e.turns)
        assert [t.user for t in replaced.turns] == ["saved before"]
        rec.wait_for(lambda e: isinstance(e, ConversationInfo) and e.turns)
        assert w.conversation.state.equal(conversation.state)
    finally:
        w.close()


def test_diff_with_an_evicted_snapshot_replays_it_exactly(worker) -> None:
    from engine.state_stats import state_diff

    w, rec = worker
    for text in ("one", "two", "three"):
        send(w, rec, text)
    conversation = w.conversation
    expected = state_diff(conversation.turns[1].state_before, conversation.state)
    assert conversation.set_snapshot_budget(0) == [1]  # the engine is idle: safe from this thread
    assert conversation.turns[1].state_before is None
    rec.clear()
    w.submit(DiffStates(StateRef("turn", 1), StateRef("live")))
    ready = rec.wait_for(lambda e: isinstance(e, StateDiffReady))
    assert torch.equal(ready.diff.wkv, expected.wkv) and torch.equal(ready.diff.att_x, expected.att_x)
    assert len(conversation.turns) == 3  # comparing changed nothing
