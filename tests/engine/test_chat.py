"""Conversations: exact prompt format, history never re-fed, snapshots, export."""

from __future__ import annotations

import json

import pytest

from engine import Conversation, SamplingParams, StopReason, ThinkMode, get_tokenizer
from engine.chat import clean_message
from tests.engine.scripted import ScriptedModel

BYTES = get_tokenizer("bytes")
GREEDY = SamplingParams(temperature=0, presence_penalty=0, frequency_penalty=0, max_tokens=50)


def _conversation(reply: str, **kwargs) -> tuple[Conversation, ScriptedModel]:
    model = ScriptedModel(list(reply.encode()))
    return Conversation(model, BYTES, kwargs.pop("params", GREEDY), **kwargs), model


def _fed_text(model: ScriptedModel, call: int) -> str:
    return bytes(model.calls[call]).decode()


def test_first_turn_prompt_format_with_system() -> None:
    conv, model = _conversation("Hi!\n\n", system="Be brief.\n\n\nAlways.")
    assert conv.send("  hello\r\n\r\nthere  ").run().text == "Hi!"
    assert _fed_text(model, 0) == "System: Be brief.\nAlways.\n\nUser: hello\nthere\n\nAssistant:"


def test_second_turn_feeds_only_the_new_turn() -> None:
    conv, model = _conversation("Sure.\n\n")
    conv.send("first").run()
    calls_before = len(model.calls)
    conv.send("second").run()
    assert _fed_text(model, calls_before) == "User: second\n\nAssistant:"
    assert conv.turns[1].reply == "Sure."
    assert conv.state.tokens_seen == sum(len(c) for c in model.calls)


def test_reply_cut_short_gets_a_separator_next_turn() -> None:
    conv, model = _conversation("endless text", params=GREEDY.with_(max_tokens=4))
    result = conv.send("go").run()
    assert result.stop_reason == StopReason.MAX_TOKENS
    calls_before = len(model.calls)
    conv.send("next").run()
    assert _fed_text(model, calls_before) == "\n\nUser: next\n\nAssistant:"


@pytest.mark.parametrize(
    ("mode", "suffix", "shown"),
    [(ThinkMode.OFF, "Assistant:", "ok"), (ThinkMode.THINK, "Assistant: <think", "<think>ok"), (ThinkMode.SKIP, "Assistant: <think></think", "<think></think>ok")],
)
def test_think_modes(mode: ThinkMode, suffix: str, shown: str) -> None:
    conv, model = _conversation(">ok\n\n" if mode != ThinkMode.OFF else " ok\n\n", think=mode)
    conv.send("q").run()
    assert _fed_text(model, 0).endswith(suffix)
    assert conv.turns[0].reply == shown


def test_regenerate_restores_the_state_before_the_turn(tiny_model) -> None:
    params = SamplingParams(seed=5, max_tokens=25)
    conv = Conversation(tiny_model, BYTES, params)
    conv.send("hello").run()
    before_second = conv.state
    first = conv.send("again").run()
    second = conv.regenerate().run()
    assert second.tokens == first.tokens, "same seed, same snapshot: identical reply"
    assert len(conv.turns) == 2 and conv.turns[1].state_before is before_second


def test_edit_rewind_and_fork(tiny_model) -> None:
    conv = Conversation(tiny_model, BYTES, SamplingParams(seed=1, max_tokens=10))
    for text in ("one", "two", "three"):
        conv.send(text).run()
    branch = conv.fork(0)
    assert [t.user for t in branch.turns] == ["one"]
    assert branch.state is conv.turns[1].state_before
    conv.edit(1, "TWO").run()
    assert [t.user for t in conv.turns] == ["one", "TWO"]
    conv.rewind(0)
    assert conv.turns == [] and conv.state.tokens_seen == 0
    with pytest.raises(IndexError):
        conv.rewind(3)


def test_snapshot_budget_evicts_oldest_first(tiny_model) -> None:
    # A snapshot holds a state and the logits after it; turn 0's is the initial state, which
    # the conversation keeps anyway, so it is free and never evicted (policy: engine/chat.py).
    per_snapshot = tiny_model.zero_state().nbytes + tiny_model.config.vocab * 4
    conv = Conversation(tiny_model, BYTES, SamplingParams(seed=1, max_tokens=3), snapshot_budget=2 * per_snapshot)
    for text in ("a", "b", "c", "d"):
        conv.send(text).run()
    assert [t.can_rewind for t in conv.turns] == [True, False, True, True]
    with pytest.raises(ValueError, match="evicted by the memory budget"):
        conv.rewind(1)
    conv.rewind(2)
    assert len(conv.turns) == 2


def test_end_of_text_token_is_banned_in_chat() -> None:
    conv, _ = _conversation("\x00\x00ok\n\n")
    result = conv.send("q").run()  # the scripted model insists on token 0 twice
    assert 0 not in result.tokens
    assert result.text.endswith("ok")


def test_export_markdown_and_json() -> None:
    conv, _ = _conversation("Answer.\n\n", system="sys")
    conv.send("Question?").run()
    md = conv.to_markdown()
    assert "## User\n\nQuestion?" in md and "## Assistant\n\nAnswer." in md and "**System:** sys" in md
    data = json.loads(conv.to_json())
    assert data["turns"][0]["user"] == "Question?" and data["turns"][0]["assistant"] == "Answer."
    assert data["turns"][0]["stop_reason"] == "stop string"


def test_cannot_send_while_generating_or_empty() -> None:
    conv, _ = _conversation("abc")
    generation = conv.send("x")
    deltas = iter(generation)
    next(deltas)
    with pytest.raises(RuntimeError):
        conv.send("y")
    generation.cancel()
    list(deltas)
    with pytest.raises(ValueError):
        conv.send("   \n ")


def test_clean_message() -> None:
    assert clean_message(" a\r\nb\n\n\nc ") == "a\nb\nc"
