"""Folk tunes from music21's corpus, cleaned and prefixed with control codes, for the ABC model.

Sources (all shipped inside the music21 wheel): O'Neill's Music of Ireland (1850 tunes,
``oneills1850``), Aird's Airs (``airdsAirs``) and Ryan's Mammoth Collection
(``ryansMammoth``). Left out: the Essen collection (its licence allows non-commercial use
only) and ``miscFolk`` (no licence statement of its own, and most of its tunes are
multi-voice arrangements with an appended duplicate set).

Each tune becomes::

    S:2            control codes (tools.train.abc_controls)
    B:8
    E:6
    B:8
    L:1/8          the header fields that shape the music: L, M, K (K last, as ABC requires)
    M:6/8
    K:D
    ...music...

Titles, composers, sources, notes and other text fields are removed (as in TunesFormer), and
so are things that are not music: quoted annotations (fingerings, "SEGUE", tempo words),
!decorations!, bowing marks (u, v), comments and layout backslashes. A tune is [2] + its
characters + [3] (BOS/EOS of the "abc" tokenizer).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path

from tools.train.abc_controls import compute_controls

SOURCES = ("oneills1850", "airdsAirs", "ryansMammoth")
EXCLUDED = {"essenFolksong": "licence: non-commercial use only", "miscFolk": "no licence statement; multi-voice"}
BOS, EOS = 2, 3
VOCAB = 128

_FIELD = re.compile(r"^([A-Za-z]):(.*)$")
_KEEP_HEADER = ("L", "M", "K")
_DECORATION = re.compile(r"![^!\n]*!")
_QUOTED = re.compile(r"\"[^\"\n]*\"")
_BOWING = re.compile(r"[uv](?![^\[]*\])")  # u/v outside inline fields
_SPACES = re.compile(r"[ \t]+")


@dataclass(frozen=True)
class Tune:
    source: str  # e.g. "oneills1850/0001-0050.abc#3"
    text: str  # control codes + header + body, ending in "\n"

    def ids(self) -> list[int]:
        return [BOS] + [ord(c) for c in self.text] + [EOS]

    def abc_document(self) -> str:
        """A file abc2midi accepts (it needs an X: line first)."""
        return "X:1\n" + self.text


def corpus_dir() -> Path:
    import music21

    return Path(music21.__file__).resolve().parent / "corpus"


def _split_tunes(text: str) -> list[str]:
    """Raw tunes of a multi-tune file: each starts at an X: line."""
    tunes, current = [], None
    for line in text.splitlines():
        if re.match(r"^X:", line):
            if current is not None:
                tunes.append("\n".join(current))
            current = [line]
        elif current is not None:
            current.append(line)
    if current is not None:
        tunes.append("\n".join(current))
    return tunes


def clean_tune(raw: str) -> tuple[dict[str, str], str] | None:
    """(header fields L/M/K, cleaned body) or None when the tune is unusable."""
    header: dict[str, str] = {}
    body_lines: list[str] = []
    in_body = False
    for line in raw.splitlines():
        line = line.split("%", 1)[0].rstrip()  # comments (and %% directives)
        if not line.strip():
            continue
        field = _FIELD.match(line)
        if field and not (in_body and field.group(2).startswith(("|", ":"))):
            name, value = field.group(1), field.group(2).strip()
            if name == "V":
                return None  # multi-voice
            if not in_body:
                if name in _KEEP_HEADER:
                    header[name] = value
                if name == "K":
                    in_body = True
                continue
            if name in ("K", "M", "L"):
                body_lines.append(f"{name}:{value}")
            continue  # other fields in the body (P:, W:, N: …) are not music
        if not in_body:
            continue
        body_lines.append(_clean_music_line(line))
    body_lines = [b for b in body_lines if b.strip()]
    if "K" not in header or not body_lines:
        return None
    header.setdefault("L", "1/8")
    header.setdefault("M", "4/4")
    body = "\n".join(body_lines) + "\n"
    if any(ord(c) >= VOCAB or (ord(c) < 32 and c != "\n") for c in body + "".join(header.values())):
        return None
    return header, body


def _clean_music_line(line: str) -> str:
    line = _QUOTED.sub("", line)
    line = _DECORATION.sub("", line)
    line = line.replace("`", "").replace("\\", " ")
    line = _BOWING.sub("", line)
    return _SPACES.sub(" ", line).strip()


def load_tunes(max_chars: int = 1200) -> tuple[list[Tune], dict[str, int]]:
    """All usable tunes of the licensed collections, and counts of what was dropped."""
    root = corpus_dir()
    tunes: list[Tune] = []
    dropped = {"unparseable": 0, "control_limits": 0, "too_long": 0, "duplicate": 0}
    seen: set[str] = set()
    for source in SOURCES:
        for path in sorted((root / source).rglob("*.abc")):
            text = path.read_text(encoding="latin-1")
            for index, raw in enumerate(_split_tunes(text)):
                cleaned = clean_tune(raw)
                if cleaned is None:
                    dropped["unparseable"] += 1
                    continue
                header, body = cleaned
                controls = compute_controls(body)
                if controls is None:
                    dropped["control_limits"] += 1
                    continue
                full = controls.text() + "".join(f"{k}:{header[k]}\n" for k in _KEEP_HEADER) + body
                if len(full) > max_chars:
                    dropped["too_long"] += 1
                    continue
                if body in seen:
                    dropped["duplicate"] += 1
                    continue
                seen.add(body)
                tunes.append(Tune(f"{source}/{path.relative_to(root / source)}#{index}", full))
    return tunes, dropped


def split_tunes(tunes: list[Tune], seed: int, val_fraction: float = 0.05) -> tuple[list[Tune], list[Tune]]:
    """A fixed random train/validation split by tune (the MIDI data set reuses it)."""
    order = list(range(len(tunes)))
    random.Random(seed).shuffle(order)
    n_val = max(1, round(len(tunes) * val_fraction))
    val = sorted(order[:n_val])
    train = sorted(order[n_val:])
    return [tunes[i] for i in train], [tunes[i] for i in val]


def build_dataset(out_dir: Path, seed: int = 0, max_chars: int = 1200) -> dict[str, object]:
    from tools.train.dataset import TokenSplit, write_dataset

    tunes, dropped = load_tunes(max_chars)
    train, val = split_tunes(tunes, seed)
    rng = random.Random(seed)
    rng.shuffle(train)
    meta = {
        "kind": "abc", "tokenizer": "abc", "vocab": VOCAB, "seed": seed, "max_chars": max_chars,
        "sources": list(SOURCES), "excluded": EXCLUDED, "tunes": len(tunes),
        "train_tunes": len(train), "val_tunes": len(val), "dropped": dropped,
        "source": "music21 corpus (music21 wheel), cleaned by tools/train/abc_data.py",
    }
    write_dataset(Path(out_dir), TokenSplit.from_documents(t.ids() for t in train),
                  TokenSplit.from_documents(t.ids() for t in val), meta)
    (Path(out_dir) / "val_tunes.abc").write_text("\n".join(t.abc_document() for t in val), encoding="utf-8")
    return meta
