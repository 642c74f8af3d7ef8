"""Tokenizers: reference ids, streaming without broken characters, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine import TokenizerError, get_tokenizer, tokenizer_name_for
from engine.music import midi_vocab

# Reference vectors shared by the rwkv package, pyrwkv-tokenizer and rwkv-tokenizer (rwkv7-engine.md §6).
WORLD_VECTORS = {
    "User: hi\n\nAssistant:": [24281, 59, 4571, 261, 5585, 41693, 59],
    "\n\n": [261],
    "Assistant: <think": [5585, 41693, 59, 295, 35762],
    "</think>": [754, 35762, 63],
    "The Eiffel tower is in the city of": [6699, 304, 25740, 109, 39990, 4600, 4596, 22590, 30449, 4706],
    "Hello\x00world": [33155, 1, 36017],
    '"in': [35, 1950],
}


@pytest.mark.parametrize("text", list(WORLD_VECTORS))
def test_world_encode_matches_reference_ids(text: str) -> None:
    world = get_tokenizer("world")
    assert world.encode(text) == WORLD_VECTORS[text]
    assert world.decode(WORLD_VECTORS[text]) == text


def test_world_matches_reference_tokenizer_on_mixed_text() -> None:
    from rwkv.rwkv_tokenizer import TRIE_TOKENIZER
    import rwkv

    vocab = Path(rwkv.__file__).with_name("rwkv_vocab_v20230424.txt")
    reference = TRIE_TOKENIZER(str(vocab))
    world = get_tokenizer("world")
    text = "Ünïcödé ♪ 音楽 🎵\ttabs  and   spaces\r\nMIDI note 60 = C4; 120 BPM → 500 ms/beat."
    assert world.encode(text) == reference.encode(text)
    assert world.decode(reference.encode(text)) == text


def test_world_decodes_every_token_to_the_reference_bytes() -> None:
    """The byte table is read with a fast path for plain literals; every id must still agree."""
    from rwkv.rwkv_tokenizer import TRIE_TOKENIZER
    import rwkv

    reference = TRIE_TOKENIZER(str(Path(rwkv.__file__).with_name("rwkv_vocab_v20230424.txt")))
    world = get_tokenizer("world")
    mismatched = [i for i in range(1, 65536) if world.token_bytes(i) != reference.idx2token.get(i, b"")]
    assert mismatched == []


def test_world_stream_never_splits_characters() -> None:
    world = get_tokenizer("world")
    text = "héllo 世界 🎵 done"
    ids = world.encode(text)
    decoder = world.stream_decoder()
    pieces = [decoder.feed(t) for t in ids] + [decoder.flush()]
    assert "".join(pieces) == text
    assert all("\ufffd" not in piece for piece in pieces)


def test_world_unknown_and_end_ids_decode_to_nothing() -> None:
    world = get_tokenizer("world")
    assert world.decode([0, 65535, 65530]) == ""
    assert world.end_token == 0


def test_bytes_tokenizer_roundtrip_and_streaming() -> None:
    tok = get_tokenizer("bytes")
    text = "Tempo ♩=120"
    ids = tok.encode(text)
    assert ids == list(text.encode("utf-8"))
    decoder = tok.stream_decoder()
    assert "".join(decoder.feed(i) for i in ids) + decoder.flush() == text


def test_abc_tokenizer_ids_and_errors() -> None:
    abc = get_tokenizer("abc")
    assert abc.encode("K:D\n") == [75, 58, 68, 10]
    assert abc.decode([2, 75, 58, 68, 3]) == "K:D"
    with pytest.raises(TokenizerError, match="not in the ABC vocabulary"):
        abc.encode("K:D ♯")


def test_midi_ids_follow_the_published_rule() -> None:
    midi = get_tokenizer("midi")
    assert midi.vocab_size == 20096
    assert midi.encode("<pad> <start> <end> t1 t125") == [0, 1, 2, 3, 127]
    assert midi.encode("pi:3c:a") == [128 + 1536 * 8 + 12 * 0x3C + 10]
    assert midi.encode("pa:7f:b") == [20095]
    assert midi.encode("p:0:0") == [128]


def test_midi_is_case_insensitive_and_maps_unknown_words_to_pad() -> None:
    midi = get_tokenizer("midi")
    assert midi.encode("PI:3C:A") == midi.encode("pi:3c:a")
    assert midi.encode("foo t126 t0 pi:3c:c") == [0, 0, 0, 0]


def test_midi_vocabulary_is_consistent_with_id_formula() -> None:
    words = midi_vocab.vocabulary()
    for b in midi_vocab.INSTRUMENT_BINS:
        for note in (0, 9, 60, 127):
            for vel in (0, 5, 11):
                assert words[midi_vocab.note_id(b.index, note, vel)] == midi_vocab.note_token(b.index, note, vel)
    assert words[midi_vocab.wait_id(62)] == "t62"


def test_midi_stream_decoder_joins_words() -> None:
    midi = get_tokenizer("midi")
    ids = midi.encode("<start> pi:3c:a t62 pi:3c:0")
    decoder = midi.stream_decoder()
    assert "".join(decoder.feed(i) for i in ids) == "<start> pi:3c:a t62 pi:3c:0"


def test_unknown_tokenizer_name() -> None:
    with pytest.raises(TokenizerError, match="unknown tokenizer"):
        get_tokenizer("klingon")


def test_tokenizer_choice(tmp_path: Path) -> None:
    assert tokenizer_name_for("RWKV-5-ABC-82M-v1.pth", 65536) == "abc"
    assert tokenizer_name_for("RWKV-4-MIDI-120M.pth", 65536) == "midi"
    assert tokenizer_name_for("rwkv7-g1-0.1b.pth", 65536) == "world"
    assert tokenizer_name_for("x.pth", 20096) == "midi"
    assert tokenizer_name_for("x.pth", 256) == "bytes"
    assert tokenizer_name_for("x.pth", 128) == "abc"
    model = tmp_path / "custom.pth"
    model.touch()
    model.with_suffix(".json").write_text(json.dumps({"tokenizer": "bytes"}))
    assert tokenizer_name_for(model, 65536) == "bytes"
