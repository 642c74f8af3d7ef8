"""Fuzz: the settings file, MIDI files to continue, ABC text for abc2midi, MIDI token text.

One invariant throughout: the reader succeeds, or raises one of our own one-line errors
(``EngineError`` and its music subclasses); it never raises anything else, never hangs
(``no_hang``) and never changes the file it reads. The settings file is held to more, as the app
is: it always loads (the defaults and one line per problem, never an exception), and the next
save of what was loaded works and reads back the same.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.errors import EngineError
from engine.music import generate as music_generate
from engine.music import midi_codec as codec
from engine.music import midi_vocab
from engine.music.abc import abc_to_midi
from tests.fuzz.conftest import FUZZ
from tests.fuzz.mutations import digest, mutated, no_hang
from tests.helpers import require_tool
from tui.actions import ACTION_IDS
from tui.config import SAMPLING_FIELDS, AppConfig, load_config, save_config
from tui.music_settings import FIELD_NAMES, MusicSection

#: Longest problem line a settings file may cause (bad values are quoted short).
MAX_LINE = 400

# --------------------------------------------------------------------------- config.json

VALID_CONFIG = json.dumps({
    "version": 1, "theme": "rwkv-light",
    "keymap": {"chat.regenerate": "ctrl+b,f6", "music.generate": "n"},
    "sampling": {"temperature": 0.8, "top_p": 0.5, "top_k": 40, "max_tokens": 300, "seed": 7},
    "system_prompt": "Answer in one sentence.", "think": "think",
    "music": {"settings": {"mode": "midi", "top_k": 5, "max_tokens": 512, "piano_only": True, "lufs": -16.0},
              "port": "port:JACK:fluidsynth", "tempo": 1.25, "volume": 0.8},
    "plugin": {"nested": [1, 2.5, None, "x"]},
}, indent=2).encode()


def one_line(message: str) -> bool:
    return "\n" not in message and "\r" not in message and 0 < len(message) <= MAX_LINE


def check_settings_file(folder: Path, data: bytes) -> None:
    path = folder / "config.json"
    path.write_bytes(data)
    before = digest(path)
    loaded = no_hang(load_config, path)  # never raises: a damaged file never stops the app
    assert isinstance(loaded.config, AppConfig)
    section, music_problems = MusicSection.parse(loaded.config.extra.get("music"), f"{path}: music")
    for problem in loaded.problems + music_problems:
        assert one_line(problem), problem
    assert digest(path) == before, "loading changed the settings file"
    # The next settings change saves what was loaded (the pane's section included) ...
    loaded.config.extra["music"] = section.to_dict()
    saved = folder / "saved.json"
    save_config(loaded.config, saved)
    # ... and it reads back as the same settings, with what could not be used still there.
    again = load_config(saved)
    assert not again.corrupt
    assert (again.config.theme, again.config.keymap, again.config.sampling, again.config.think) == (
        loaded.config.theme, loaded.config.keymap, loaded.config.sampling, loaded.config.think)
    assert again.config.unused == loaded.config.unused
    again_section, _ = MusicSection.parse(again.config.extra.get("music"), "again")
    assert again_section == section


@settings(FUZZ)
@given(data=mutated(VALID_CONFIG))
def test_damaged_settings_files_always_load(data: bytes, tmp_path: Path) -> None:
    check_settings_file(tmp_path, data)


JSON_SCALARS = (st.none() | st.booleans() | st.integers() | st.just(10**400) | st.floats()
                | st.text(max_size=30))
JSON_VALUES = st.recursive(JSON_SCALARS, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=10), inner, max_size=4), max_leaves=12)


def section(names) -> st.SearchStrategy:  # noqa: ANN001
    """An object whose keys are mostly the real ones, with values of any JSON type."""
    return st.dictionaries(st.sampled_from(sorted(names)) | st.text(max_size=12), JSON_VALUES, max_size=8) | JSON_VALUES


SETTINGS_DOCUMENTS = st.fixed_dictionaries({}, optional={
    "version": JSON_VALUES, "theme": JSON_VALUES, "system_prompt": JSON_VALUES, "think": JSON_VALUES,
    "keymap": st.dictionaries(st.sampled_from(sorted(ACTION_IDS)) | st.text(max_size=12),
                              st.sampled_from(["ctrl+r", "f1", "ctrl+q", "r", "", " , ", "s,escape"]) | JSON_VALUES,
                              max_size=6) | JSON_VALUES,
    "sampling": section(SAMPLING_FIELDS),
    "music": st.fixed_dictionaries({}, optional={
        "settings": section(FIELD_NAMES), "port": st.text(max_size=30) | JSON_VALUES,
        "tempo": JSON_VALUES, "volume": JSON_VALUES, "metronome": JSON_VALUES,
    }) | JSON_VALUES,
})


@settings(FUZZ)
@given(document=SETTINGS_DOCUMENTS)
def test_settings_of_every_shape_and_type_always_load(document: dict, tmp_path: Path) -> None:
    check_settings_file(tmp_path, json.dumps(document).encode())


# --------------------------------------------------------------------------- our own errors


def ours(call, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN201
    """The call's result, or None when it raised one of our one-line errors; anything else fails."""
    try:
        return no_hang(call, *args, **kwargs)
    except EngineError as error:
        assert one_line(str(error)), str(error)
        return None


# --------------------------------------------------------------------------- --continue: MIDI files

PIECE = ("<start> p:24:9 b:24:8 pi:3c:a pi:40:9 t31 p:24:0 v:48:8 t31 b:24:0 pi:3c:0 pi:40:0 pi:3e:a t62 "
         "pi:3e:0 v:48:0 <end>")


def midi_bytes(text: str) -> bytes:
    buffer = io.BytesIO()
    codec.decode_tokens(text).to_midi().save(file=buffer)
    return buffer.getvalue()


@settings(FUZZ)
@given(data=mutated(midi_bytes(PIECE)))
def test_damaged_midi_files_to_continue(data: bytes, tmp_path: Path) -> None:
    path = tmp_path / "theme.mid"
    path.write_bytes(data)
    before = digest(path)
    prompt = ours(music_generate.midi_prompt_from_file, str(path))
    if prompt is not None:
        assert prompt[0] == midi_vocab.START_ID and all(isinstance(t, int) for t in prompt)
    assert digest(path) == before


# --------------------------------------------------------------------------- tokens → MIDI

TOKEN_WORDS = st.sampled_from(["<start>", "<end>", "<pad>", "pi:3c:a", "pi:3c:0", "p:24:9", "v:7f:f", "t125",
                               "t1", "t0", "pi:zz:a", "pi:3c", "pi:3c:a:b", "b:80:1", "t-5", "t99999999",
                               "x", "🎵", "\x1b[2J", "\x00"])
TOKEN_TEXTS = (st.lists(TOKEN_WORDS | st.text(max_size=8), max_size=60).map(" ".join)
               | mutated(PIECE.encode()).map(lambda raw: raw.decode("utf-8", errors="replace")))


@settings(FUZZ)
@given(text=TOKEN_TEXTS)
def test_garbage_token_text_decodes_to_a_valid_midi_file(text: str) -> None:
    result = ours(codec.decode_tokens, text)
    if result is None:
        return
    assert "\n" not in result.summary()
    buffer = io.BytesIO()
    result.to_midi().save(file=buffer)  # every value it decoded fits a MIDI file
    streamed = codec.TokenDecoder()
    for word in text.split(" "):
        streamed.feed_text(word)
    prompt = ours(music_generate.midi_prompt_from_text, text)  # the --continue path for .txt
    if prompt is not None:
        assert prompt[0] == midi_vocab.START_ID


# --------------------------------------------------------------------------- ABC → abc2midi

TUNE = "X:1\nT:Fuzz\nL:1/8\nM:6/8\nK:D\n|:\"D\"dfa afd|\"G\"g2e c2A|(3ABc d2 z2:|\n"
ABC_TEXTS = (mutated(TUNE.encode()).map(lambda raw: raw.decode("utf-8", errors="replace"))
             | st.text(max_size=200))


@settings(FUZZ, max_examples=min(FUZZ.max_examples, 30))  # abc2midi is a process per example
@given(text=ABC_TEXTS)
def test_damaged_abc_goes_through_abc2midi_or_is_one_line(text: str, tmp_path: Path) -> None:
    require_tool("abc2midi")
    converted = ours(abc_to_midi, text, timeout=60.0)
    if converted is not None:
        assert any(m.type == "note_on" for track in converted.midi.tracks for m in track)
        assert all(one_line(line) for line in converted.errors + converted.warnings)

