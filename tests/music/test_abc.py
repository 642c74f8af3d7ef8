"""ABC prompts with control codes, and the abc2midi bridge with its quirks."""

from __future__ import annotations

import pytest

from engine.music import abc
from engine.music.errors import AbcError
from tests.helpers import require_tool

TUNE = 'L:1/8\nM:3/4\nK:D\n"D"d2 cB A2 | FE D2 z2 |]\n'


def test_control_codes_follow_the_training_order() -> None:
    controls = abc.AbcControls(3, (8, 8, 4), ((9,), (4, 3)))
    assert controls.lines() == ["S:3", "B:8", "E:9", "B:8", "E:4", "E:3", "B:4"]
    assert abc.AbcControls.parse("S:3 B:8 E:9 B:8 E:4 E:3 B:4") == controls
    assert abc.AbcControls.parse("S:3\nB:8\nE:9\nB:8\nE:4\nE:3\nB:4") == controls


def test_a_prefix_of_the_codes_is_a_valid_prompt() -> None:
    assert abc.AbcControls(2).lines() == ["S:2"]
    assert abc.AbcControls.parse("S:3, B:8, E:9, B:8, E:4").lines() == ["S:3", "B:8", "E:9", "B:8", "E:4"]
    assert abc.AbcControls.uniform(3, 8, 5).lines() == ["S:3", "B:8", "E:5", "B:8", "E:5", "E:5", "B:8"]
    assert abc.AbcControls.uniform(3, 8).lines() == ["S:3", "B:8"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("S:9", "S: must be 1–8"),
        ("S:2 B:40", "B: must be 1–32"),
        ("S:2 B:8 E:11", "E: must be 0–10"),
        ("B:8", "B: before S:"),
        ("S:2 B:8 B:8", "needs 1 E: value"),
        ("S:2 E:3", "E: before the first B:"),
        ("S:2 B:8 E:3 E:4", "too many E: values"),
        ("S:1 S:2", "S: given twice"),
        ("S:two", "cannot read"),
    ],
)
def test_bad_control_codes_give_one_line_errors(text: str, message: str) -> None:
    with pytest.raises(AbcError, match=message) as info:
        abc.AbcControls.parse(text)
    assert "\n" not in str(info.value)


def test_prompt_has_codes_then_header_then_tune_start() -> None:
    prompt = abc.build_prompt(abc.AbcControls(2, (8,)), abc.AbcHeader(unit="1/8", meter="6/8", key="G"), "|:GAB")
    assert prompt == "S:2\nB:8\nL:1/8\nM:6/8\nK:G\n|:GAB"
    ids = abc.prompt_ids(prompt)
    assert ids[0] == abc.BOS and ids[1:] == [ord(c) for c in prompt]
    assert abc.build_prompt() == ""


def test_prompt_rejects_what_the_model_cannot_read() -> None:
    with pytest.raises(AbcError, match="plain ASCII"):
        abc.build_prompt(tune_start="|: é")
    with pytest.raises(AbcError, match="header field K"):
        abc.build_prompt(header=abc.AbcHeader(key="D\nX:2"))


def test_reference_number_is_added_only_when_missing() -> None:
    assert abc.with_reference_number(TUNE) == "X:1\n" + TUNE
    assert abc.with_reference_number("X:7\n" + TUNE) == "X:7\n" + TUNE
    assert abc.with_reference_number("\x02S:1\n" + TUNE + "\x03").startswith("X:1\nS:1\nL:1/8")


@pytest.mark.system_tools
def test_abc2midi_converts_model_style_text_without_x_line() -> None:
    require_tool("abc2midi")
    result = abc.abc_to_midi("S:2\nB:4\n" + TUNE)
    notes = [m for t in result.midi.tracks for m in t if m.type == "note_on" and m.velocity > 0]
    melody = [m.note for m in notes if m.channel == 0]
    assert melody == [74, 73, 71, 69, 66, 64, 62]  # d c B A F E D in D major
    assert any(m.channel != 0 for m in notes)  # the "D" chord symbol became accompaniment
    no_chords = abc.abc_to_midi("S:2\nB:4\n" + TUNE, chords=False)
    assert all(m.channel == 0 for t in no_chords.midi.tracks for m in t if m.type == "note_on")


@pytest.mark.system_tools
def test_garbage_abc_gives_a_one_line_error() -> None:
    require_tool("abc2midi")
    with pytest.raises(AbcError, match=r"abc2midi could not convert the ABC: No valid K: field") as info:
        abc.abc_to_midi("zzz qqq ###\n")
    assert "\n" not in str(info.value)
    with pytest.raises(AbcError, match="no notes"):
        abc.abc_to_midi("L:1/8\nK:C\n")


@pytest.mark.system_tools
def test_partial_errors_are_reported_but_the_music_kept() -> None:
    require_tool("abc2midi")
    result = abc.abc_to_midi("L:1/8\nM:4/4\nK:G\nab(c d!!e| f[g a ^^^ z8 |]\n")
    assert result.errors and all("\n" not in e for e in result.errors)
    assert "line 4" in result.errors[0]  # numbered as the user's text, not abc2midi's temp file


def test_missing_abc2midi_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(AbcError, match="abc2midi is not installed"):
        abc.abc_to_midi(TUNE)
