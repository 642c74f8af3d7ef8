"""MusicSettings: typed text is checked with the engine's rules before it can reach the engine."""

from __future__ import annotations

import pytest

from engine.music import generate as music_generate
from tui.music_settings import MusicSettings


def test_defaults_are_the_chatrwkv_music_recipe_and_valid() -> None:
    s = MusicSettings().validate()
    assert (s.temperature, s.top_p, s.top_k) == (1.0, 0.8, 8)
    assert s.budget == music_generate.MidiSettings.max_tokens
    assert MusicSettings(mode="abc").budget == music_generate.AbcSettings.max_tokens


@pytest.mark.parametrize(("name", "text", "expected"), [
    ("temperature", " 0.7 ", 0.7), ("top_k", "0", 0), ("seed", "", None), ("seed", "42", 42),
    ("max_tokens", "default", None), ("max_tokens", "300", 300), ("piano_only", True, True),
    ("controls", "S:2 B:8 E:5 B:8", "S:2 B:8 E:5 B:8"), ("key", "Ador", "Ador"), ("mode", "abc", "abc"),
])
def test_typed_values_are_coerced(name: str, text: object, expected: object) -> None:
    assert getattr(MusicSettings().with_field(name, text), name) == expected


@pytest.mark.parametrize(("name", "text", "fragment"), [
    ("temperature", "hot", "expected a number"),
    ("temperature", "-1", "temperature"),
    ("top_p", "1.5", "top_p"),
    ("top_k", "2.5", "whole number"),
    ("max_tokens", "0", "max_tokens"),
    ("length_target", "0", "≥ 1"),
    ("controls", "B:8", "B: before S:"),
    ("controls", "S:9", "S: must be 1–8"),
    ("key", "D\u00e9", "ASCII"),
    ("tune_start", "caf\u00e9", "ASCII"),
    ("lufs", "5", "between"),
    ("mode", "wav", "must be one of"),
    ("piano_only", "yes", "true or false"),
])
def test_bad_values_are_one_line_errors(name: str, text: object, fragment: str) -> None:
    with pytest.raises(ValueError) as info:
        MusicSettings().with_field(name, text)
    message = str(info.value)
    assert fragment in message and "\n" not in message


def test_engine_objects_carry_the_settings() -> None:
    s = MusicSettings().with_field("piano_only", True).with_field("seed", "5").with_field("length_target", "300")
    midi = s.midi_settings()
    assert midi.piano_only and midi.seed == 5 and midi.length_target == 300 and midi.max_tokens == 4096
    a = MusicSettings(mode="abc", controls="S:1 B:4", meter="6/8", key="D", tune_start="|:d\\nef")
    assert a.abc_prompt() == "S:1\nB:4\nM:6/8\nK:D\n|:d\nef"
    assert a.abc_settings().max_tokens == 1024


def test_config_round_trip_keeps_good_fields_and_reports_bad_ones() -> None:
    s = MusicSettings(mode="abc", temperature=0.9, seed=3, continue_from="/tmp/x.mid")
    data = s.to_dict()
    assert "continue_from" not in data
    back, problems = MusicSettings.from_dict(data)
    assert back == MusicSettings(mode="abc", temperature=0.9, seed=3) and problems == []
    back, problems = MusicSettings.from_dict({"top_k": "lots", "temperature": 0.5, "bogus": 1})
    assert back.temperature == 0.5 and back.top_k == 8
    assert len(problems) == 2 and all("\n" not in p for p in problems)


def test_the_music_section_reports_unknown_keys_and_keeps_them() -> None:
    """Unknown keys of the config file's music section were ignored without a word, then deleted
    by the next save; they are now reported like every other unknown key and saved back."""
    from engine.music.ports import PortChoice
    from tui.music_settings import MusicSection

    raw = {
        "settings": {"top_k": 5, "swing": 0.6}, "port": "port:JACK:fluid", "tempo": 1.5, "volume": 0.5,
        "metronome": True,
    }
    section, problems = MusicSection.parse(raw, "config.json: music")
    assert section.settings.top_k == 5 and section.port == PortChoice("JACK", "fluid")
    assert (section.tempo, section.volume) == (1.5, 0.5)
    assert len(problems) == 2 and all("\n" not in p for p in problems)
    assert any("'metronome'" in p for p in problems) and any("'swing'" in p for p in problems)
    changed = MusicSection(MusicSettings(top_k=3), None, 1.0, 1.0, unused=section.unused,
                           unused_settings=section.unused_settings)
    saved = changed.to_dict()
    assert saved["metronome"] is True and saved["settings"]["swing"] == 0.6 and saved["settings"]["top_k"] == 3
    assert saved["port"] is None and saved["tempo"] == 1.0
    assert MusicSection.parse(saved, "again")[1] == [p.replace("config.json: music", "again") for p in problems]


@pytest.mark.parametrize(("raw", "fragment"), [
    ({"tempo": "fast"}, "music.tempo"),
    ({"tempo": 0}, "music.tempo"),
    ({"volume": 9}, "music.volume"),
    ({"volume": 10**400}, "music.volume"),
    ({"port": 5}, "port"),
    ({"settings": [1]}, "'settings' must be an object"),
    ([1, 2], "must be an object"),
])
def test_a_bad_music_section_entry_is_one_line_and_its_default(raw: object, fragment: str) -> None:
    from tui.music_settings import MusicSection

    section, problems = MusicSection.parse(raw, "config.json: music")
    assert len(problems) == 1 and fragment in problems[0] and "\n" not in problems[0] and len(problems[0]) < 200
    assert section.settings == MusicSettings()
    assert 0.25 <= section.tempo <= 4 and 0 <= section.volume <= 2
