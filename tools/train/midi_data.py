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
import shutil
import subprocess
import tempfile
from pathlib import Path

from engine.music import midi_vocab
from tools.train.abc_data import Tune, load_tunes, split_tunes

SEPARATOR = midi_vocab.PAD_ID
_SKIPPED_WORDS = {midi_vocab.START, midi_vocab.END}


def tune_to_ids(tune: Tune, workdir: Path) -> list[int] | None:
    """Token ids of one tune (one piece), or None if abc2midi or the encoder yields nothing."""
    from engine.music.midi_codec import EncodeOptions, encode_midi

    abc2midi = shutil.which("abc2midi")
    if abc2midi is None:
        raise FileNotFoundError("abc2midi is not installed (Debian package abcmidi)")
    source, target = workdir / "tune.abc", workdir / "tune.mid"
    target.unlink(missing_ok=True)
    source.write_text(tune.abc_document(), encoding="utf-8")
    subprocess.run([abc2midi, str(source), "-o", str(target), "-silent"], capture_output=True, timeout=60)
    if not target.is_file() or target.stat().st_size == 0:
        return None
    result = encode_midi(target, EncodeOptions(piece_split_ms=None, min_piece_ms=None))
    if len(result.pieces) != 1:
        return None
    words = [w for w in result.pieces[0].tokens if w not in _SKIPPED_WORDS]
    table = {w: i for i, w in enumerate(midi_vocab.vocabulary())}
    return [table[w] for w in words] if words else None


def build_dataset(out_dir: Path, seed: int = 0, max_tokens: int = 2000, max_chars: int = 1200) -> dict[str, object]:
    from tools.train.dataset import TokenSplit, write_dataset

    tunes, dropped = load_tunes(max_chars)
    train, val = split_tunes(tunes, seed)
    counts = {"no_midi": 0, "too_long": 0}
    pieces: dict[str, list[list[int]]] = {"train": [], "val": []}
    with tempfile.TemporaryDirectory() as tmp:
        for name, group in (("train", train), ("val", val)):
            for tune in group:
                ids = tune_to_ids(tune, Path(tmp))
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
