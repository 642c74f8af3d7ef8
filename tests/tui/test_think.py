"""Splitting G1 <think> reasoning from the answer, whatever way the text is cut into deltas."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from tui.think import ThinkSplitter, split_reply

CASES = [
    ("<think>\nsteps here\n</think>\nThe answer.", "\nsteps here\n", "The answer."),
    ("<think\nno closing bracket</think> done", "\nno closing bracket", "done"),
    ("<think></think>\nDirect answer", "", "Direct answer"),
    ("Plain reply without thinking", "", "Plain reply without thinking"),
    ("<b>bold-ish</b> html is an answer", "", "<b>bold-ish</b> html is an answer"),
    ("<think>still thinking when cut off", "still thinking when cut off", ""),
    ("<thi", "", "<thi"),
    ("  <think>x</think>y", "x", "y"),
    ("<think>a</thinkish> b</think>c", "a</thinkish> b", "c"),
]


@pytest.mark.parametrize(("text", "think", "answer"), CASES)
def test_whole_replies(text: str, think: str, answer: str) -> None:
    assert split_reply(text) == (think, answer)


@given(st.sampled_from(CASES), st.lists(st.integers(min_value=0, max_value=60), max_size=12))
def test_any_delta_boundaries_give_the_same_split(case, cuts) -> None:
    text, think, answer = case
    bounds = sorted({0, len(text), *(c % (len(text) + 1) for c in cuts)})
    splitter = ThinkSplitter()
    pieces = []
    for start, end in zip(bounds, bounds[1:]):
        pieces += splitter.feed(text[start:end])
    pieces += splitter.finish()
    assert "".join(t for s, t in pieces if s == "think") == think
    assert "".join(t for s, t in pieces if s == "answer") == answer


def test_think_text_streams_before_the_tag_closes() -> None:
    splitter = ThinkSplitter()
    assert splitter.feed("<think>") == []
    assert splitter.feed("first idea ") == [("think", "first idea ")]
    assert splitter.in_think
    assert splitter.feed("</thi") == []  # could be the closing tag: held
    assert splitter.feed("nk>Answer") == [("answer", "Answer")]
