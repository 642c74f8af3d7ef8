"""Per-turn snapshots: exact rewind/fork/regenerate, and the memory budget's eviction policy."""

from __future__ import annotations

import pytest
import torch

from engine import Conversation, SamplingParams, get_tokenizer
from engine.chat import SnapshotInfo

MESSAGES = ["hello there", "what is a state?", "and a snapshot?", "thanks", "bye now"]


@pytest.fixture(scope="module")
def tokenizer():
    return get_tokenizer("bytes")


def _params(seed: int = 11) -> SamplingParams:
    return SamplingParams(temperature=1.0, top_p=0.9, max_tokens=6, seed=seed)


def _chat(model, tokenizer, turns: int, **kwargs) -> tuple[Conversation, list[str]]:
    conversation = Conversation(model, tokenizer, _params(), **kwargs)
    replies = [conversation.send(text).run().text for text in MESSAGES[:turns]]
    return conversation, replies


def test_rewind_reproduces_the_earlier_reply_exactly(tiny_model, tokenizer):
    conversation, replies = _chat(tiny_model, tokenizer, 3)
    state_before_turn_1 = conversation.turns[1].state_before
    conversation.rewind(1)
    assert len(conversation.turns) == 1
    assert conversation.state is state_before_turn_1
    again = conversation.send(MESSAGES[1]).run()
    assert again.text == replies[1]
    assert conversation.turns[1].reply_tokens == again.tokens


def test_regenerate_starts_from_the_snapshot_without_refeeding_history(tiny_model, tokenizer):
    conversation, replies = _chat(tiny_model, tokenizer, 3)
    calls: list[int] = []
    original_forward = tiny_model.forward

    def counting_forward(tokens, state=None):
        calls.append(len(tokens))
        return original_forward(tokens, state)

    tiny_model.forward = counting_forward  # type: ignore[method-assign]
    try:
        result = conversation.regenerate().run()
    finally:
        del tiny_model.forward
    assert result.text == replies[2]
    # Only the last turn's prompt and reply were fed: no replay of turns 0 and 1.
    fed = sum(calls)
    assert fed == len(conversation.turns[2].prompt_tokens) + len(result.tokens)


def test_fork_continues_exactly_like_the_original(tiny_model, tokenizer):
    conversation, replies = _chat(tiny_model, tokenizer, 3)
    branch = conversation.fork(0)
    assert [t.user for t in branch.turns] == [MESSAGES[0]]
    assert branch.turns[0].state_before is conversation.turns[0].state_before  # shared, not copied
    assert branch.send(MESSAGES[1]).run().text == replies[1]
    # The original is untouched by the branch.
    assert len(conversation.turns) == 3 and conversation.turns[1].assistant == replies[1]


def test_eviction_drops_the_oldest_snapshots_first_and_reports_them(tiny_model, tokenizer):
    per_snapshot = tiny_model.info.state_bytes + tiny_model.config.vocab * 4
    evicted: list[list[int]] = []
    conversation = Conversation(
        tiny_model, tokenizer, _params(), snapshot_budget=2 * per_snapshot,
        on_snapshots_evicted=evicted.append,
    )
    originals = []
    for text in MESSAGES:
        conversation.send(text).run()
        originals.append(conversation.turns[-1].state_before)

    kept = [t.can_rewind for t in conversation.turns]
    # Turn 0 is the initial state (free, never evicted); the two newest fit the budget.
    assert kept == [True, False, False, True, True]
    assert evicted == [[1], [2]]
    assert conversation.snapshot_bytes == 2 * per_snapshot
    listing = conversation.snapshots()
    assert all(isinstance(s, SnapshotInfo) for s in listing)
    assert [s.nbytes for s in listing] == [0, 0, 0, per_snapshot, per_snapshot]
    assert [s.tokens_seen for s in listing] == [o.tokens_seen for o in originals]
    fed = [len(t.fed_tokens) for t in conversation.turns]
    assert [s.replay_tokens for s in listing] == [0, fed[0], fed[0] + fed[1], 0, 0]


def test_rewinding_to_an_evicted_turn_needs_consent_then_replays_bit_exactly(tiny_model, tokenizer):
    per_snapshot = tiny_model.info.state_bytes + tiny_model.config.vocab * 4
    conversation = Conversation(tiny_model, tokenizer, _params(), snapshot_budget=per_snapshot)
    originals, replies = [], []
    for text in MESSAGES[:4]:
        replies.append(conversation.send(text).run().text)
        originals.append((conversation.turns[-1].state_before, conversation.turns[-1].logits_before))
    assert not conversation.turns[2].can_rewind

    live = conversation.state
    with pytest.raises(ValueError, match="evicted"):
        conversation.rewind(2)
    assert len(conversation.turns) == 4 and conversation.state is live  # nothing changed

    conversation.rewind(2, replay=True)
    state, logits = originals[2]
    assert conversation.state.equal(state)
    assert conversation.state.tokens_seen == state.tokens_seen
    assert torch.equal(conversation.logits, logits)
    assert conversation.send(MESSAGES[2]).run().text == replies[2]


def test_lowering_the_budget_evicts_at_once_and_zero_keeps_only_the_newest(tiny_model, tokenizer):
    conversation, _ = _chat(tiny_model, tokenizer, 4)
    assert all(t.can_rewind for t in conversation.turns)
    evicted = conversation.set_snapshot_budget(0)
    assert evicted == [1, 2]
    assert [t.can_rewind for t in conversation.turns] == [True, False, False, True]
    # Regenerate still works: the newest snapshot is always kept.
    conversation.regenerate().run()
    with pytest.raises(ValueError):
        conversation.set_snapshot_budget(-1)


def test_replay_after_a_reply_cancelled_during_prefill(tiny_model, tokenizer):
    conversation = Conversation(tiny_model, tokenizer, _params(), snapshot_budget=0)
    conversation.send(MESSAGES[0]).run()
    original_chunk = tiny_model.chunk_len
    tiny_model.chunk_len = 4
    try:
        generation = conversation.send("a long message that is fed in several chunks")
        original_forward = tiny_model.forward

        def cancel_after_first_chunk(tokens, state=None):
            out = original_forward(tokens, state)
            generation.cancel()
            return out

        tiny_model.forward = cancel_after_first_chunk  # type: ignore[method-assign]
        try:
            result = generation.run()
        finally:
            del tiny_model.forward
    finally:
        tiny_model.chunk_len = original_chunk
    assert result.tokens == [] and conversation.turns[1].prompt_tokens_fed == 4
    conversation.send(MESSAGES[2]).run()
    target = conversation.turns[2].state_before  # still the newest, so kept
    conversation.send(MESSAGES[3]).run()
    assert not conversation.turns[2].can_rewind
    # Turn 0 was fed in one chunk, turn 1 in chunks of 4: the replay repeats each split.
    conversation.rewind(2, replay=True)
    assert conversation.state.equal(target)


def test_rewind_and_fork_check_their_index(tiny_model, tokenizer):
    conversation, _ = _chat(tiny_model, tokenizer, 1)
    with pytest.raises(IndexError):
        conversation.rewind(1)
    with pytest.raises(IndexError):
        conversation.fork(5)
    conversation.rewind(0)
    assert conversation.state is conversation.initial_state and conversation.turns == []


def _held_bytes(conversation: Conversation) -> int:
    """Bytes of tensor storage the snapshots keep alive, each storage counted once (a slice keeps
    its whole storage), the initial state's excluded: what the budget must really bound."""
    initial = conversation.initial_state
    free = {t.untyped_storage().data_ptr() for t in (initial.att_x, initial.wkv, initial.ffn_x)}
    seen: set[int] = set()
    total = 0
    for turn in conversation.turns:
        state = turn.state_before
        if state is None:
            continue
        for tensor in (state.att_x, state.wkv, state.ffn_x, turn.logits_before):
            if tensor is None:
                continue
            storage = tensor.untyped_storage()
            if storage.data_ptr() in free or storage.data_ptr() in seen:
                continue
            seen.add(storage.data_ptr())
            total += storage.nbytes()
    return total


def test_a_long_chat_holds_no_more_snapshot_memory_than_the_budget(tiny_model, tokenizer):
    """The budget counts the memory really held, and evicted snapshots are really released."""
    import gc
    import weakref

    per_snapshot = tiny_model.info.state_bytes + tiny_model.config.vocab * 4
    budget = 3 * per_snapshot + per_snapshot // 2
    conversation = Conversation(tiny_model, tokenizer, _params(), snapshot_budget=budget)
    released: list[weakref.ref] = []
    for turn in range(12):
        conversation.send(f"message number {turn}, a little longer than one token").run()
        assert conversation.snapshot_bytes <= budget
        assert _held_bytes(conversation) == conversation.snapshot_bytes
        released.append(weakref.ref(conversation.turns[-1].state_before.wkv))
    assert [t.can_rewind for t in conversation.turns] == [True] + [False] * 8 + [True] * 3
    gc.collect()
    # Turns 1-8 were evicted: nothing in the engine keeps their states (turn 0's is the initial state).
    assert [ref() is None for ref in released] == [False] + [True] * 8 + [False] * 3
