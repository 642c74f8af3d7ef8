"""Token streams on disk and the training windows cut from them.

A split is one long token array made of whole documents (a dialogue, a tune), plus the offset
of every document and an optional per-token loss weight. Every training window starts at a
document start, because the app always starts a chat or a tune from the zero state: the
model must learn what the first tokens look like from nothing, not only mid-stream.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch


@dataclass
class TokenSplit:
    tokens: np.ndarray  # uint16 or int32, shape (N,)
    doc_starts: np.ndarray  # int64, ascending
    weights: np.ndarray | None = None  # uint8 0/1 loss mask per token (None: every token counts)

    @classmethod
    def from_documents(cls, docs: Iterable[Sequence[int]], masks: Iterable[Sequence[int]] | None = None) -> "TokenSplit":
        docs = [list(d) for d in docs]
        starts = np.cumsum([0] + [len(d) for d in docs[:-1]]).astype(np.int64)
        flat = np.fromiter((t for d in docs for t in d), dtype=np.int64)
        dtype = np.uint16 if flat.size == 0 or flat.max() < 65536 else np.int32
        weights = None
        if masks is not None:
            weights = np.fromiter((m for mask in masks for m in mask), dtype=np.uint8)
            if weights.shape != flat.shape:
                raise ValueError("masks and documents differ in length")
        return cls(flat.astype(dtype), starts, weights)

    def save(self, path: Path) -> None:
        arrays = {"tokens": self.tokens, "doc_starts": self.doc_starts}
        if self.weights is not None:
            arrays["weights"] = self.weights
        np.savez(path, **arrays)

    @classmethod
    def load(cls, path: Path) -> "TokenSplit":
        with np.load(path) as data:
            return cls(data["tokens"], data["doc_starts"], data["weights"] if "weights" in data else None)

    @property
    def n_docs(self) -> int:
        return len(self.doc_starts)

    def window_starts(self, length: int) -> np.ndarray:
        """Document starts from which a full window of ``length`` tokens fits."""
        starts = self.doc_starts[self.doc_starts + length <= len(self.tokens)]
        if starts.size == 0:
            raise ValueError(f"no window of {length} tokens fits in a split of {len(self.tokens)} tokens")
        return starts

    def batch(self, starts: Sequence[int], length: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Inputs (B, length−1), targets (B, length−1) and target weights (or None)."""
        rows = np.stack([self.tokens[s:s + length].astype(np.int64) for s in starts])
        ids = torch.from_numpy(rows)
        weights = None
        if self.weights is not None:
            w = np.stack([self.weights[s + 1:s + length] for s in starts]).astype(np.float32)
            weights = torch.from_numpy(w)
        return ids[:, :-1], ids[:, 1:], weights


def write_dataset(
    out_dir: Path, train: TokenSplit, val: TokenSplit, meta: dict[str, object]
) -> None:
    """Write ``train.npz``, ``val.npz`` and ``meta.json`` (tokenizer, vocab, provenance)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    train.save(out_dir / "train.npz")
    val.save(out_dir / "val.npz")
    meta = dict(meta)
    meta.setdefault("train_tokens", int(len(train.tokens)))
    meta.setdefault("val_tokens", int(len(val.tokens)))
    meta.setdefault("train_docs", train.n_docs)
    meta.setdefault("val_docs", val.n_docs)
    used = np.union1d(np.unique(train.tokens), np.unique(val.tokens))
    meta.setdefault("tokens_used", int(used.size))
    (out_dir / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")


def read_meta(data_dir: Path) -> dict[str, object]:
    return json.loads((data_dir / "meta.json").read_text(encoding="utf-8"))
