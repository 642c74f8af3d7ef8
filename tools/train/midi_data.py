"""The ABC model's tunes as MIDI-LLM token sequences, for the MIDI demo model.

Pipeline per tune: the cleaned ABC (tools.train.abc_data, control codes included, which
abc2midi ignores as header fields) → abc2midi (repeats expanded, 120 bpm unless the tune says
otherwise, GM piano) → engine.music.midi_codec.encode_midi with the reference rules → tokens.
Every piece is stored as ``<pad>`` + its tokens (without ``<start>``/``<end>``); the next
piece's leading ``<pad>`` ends it. RWKV MIDI models use ``<pad>`` (id 0) as the piece
separator: they are prompted with it and stop when they produce it. (A trailing ``<pad>`` per
piece as well would put "<pad> <pad>" in the stream and teach the model to end at once.)

The train/validation split is the ABC model's, so no validation tune is ever trained on.
"""

from __future__ import annotations

import random
from pathlib import Path

from engine.music import midi_vocab
from engine.music.abc import abc_to_midi
from engine.music.errors import AbcError
from tools.train.abc_data import Tune, load_tunes, split_tunes

SEPARATOR = midi_vocab.PAD_ID
_SKIPPED_WORDS = {midi_vocab.START, midi_vocab.END}


def tune_to_ids(tune: Tune) -> list[int] | None:
    """Token ids of one tune (one piece), or None if abc2midi or the encoder yields nothing.

    The conversion is the app's own (engine.music.abc.abc_to_midi), so the model learns the
    MIDI that the app itself would make from these tunes.
    """
    from engine.music.midi_codec import EncodeOptions, encode_midi, token_id

    try:
        converted = abc_to_midi(tune.abc_document())
    except AbcError:
        return None
    result = encode_midi(converted.midi, EncodeOptions(piece_split_ms=None, min_piece_ms=None))
    if len(result.pieces) != 1:
        return None
    ids = [token_id(w) for w in result.pieces[0].tokens if w not in _SKIPPED_WORDS]
    if not ids or any(i is None for i in ids):
        return None
    return ids  # type: ignore[return-value]


def build_dataset(out_dir: Path, seed: int = 0, max_tokens: int = 2000, max_chars: int = 1200) -> dict[str, object]:
    from tools.train.dataset import TokenSplit, write_dataset

    tunes, dropped = load_tunes(max_chars)
    train, val = split_tunes(tunes, seed)
    counts = {"no_midi": 0, "too_long": 0}
    pieces: dict[str, list[list[int]]] = {"train": [], "val": []}
    for name, group in (("train", train), ("val", val)):
        for tune in group:
            ids = tune_to_ids(tune)
            if ids is None:
                counts["no_midi"] += 1
                continue
            if len(ids) > max_tokens:
                counts["too_long"] += 1
                continue
            pieces[name].append([SEPARATOR] + ids)
    random.Random(seed).shuffle(pieces["train"])
    meta = {
        "kind": "midi", "tokenizer": "midi", "vocab": midi_vocab.VOCAB_SIZE, "seed": seed,
        "max_tokens": max_tokens, "train_pieces": len(pieces["train"]), "val_pieces": len(pieces["val"]),
        "skipped": counts, "abc_dropped": dropped,
        "source": "music21 corpus tunes (as the ABC model) → abc2midi → engine.music.midi_codec",
    }
    write_dataset(Path(out_dir), TokenSplit.from_documents(pieces["train"]), TokenSplit.from_documents(pieces["val"]), meta)
    return meta
