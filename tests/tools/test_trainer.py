"""The training loop learns, keeps the best model in the official layout, and the closed
vocabulary pins unused tokens exactly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import engine
from tools.train.dataset import TokenSplit, write_dataset
from tools.train.trainer import UNUSED_TOKEN_LOGIT, TrainConfig, lr_at, train


def _pattern_dataset(root: Path, vocab: int, alphabet: list[int]) -> Path:
    """Documents that repeat a short cycle: easy to learn, so a working loop must learn it."""
    rng = np.random.default_rng(0)
    docs = []
    for _ in range(60):
        start = int(rng.integers(len(alphabet)))
        docs.append([alphabet[(start + i) % len(alphabet)] for i in range(40)])
    data = root / "data"
    write_dataset(data, TokenSplit.from_documents(docs[:50]), TokenSplit.from_documents(docs[50:]),
                  {"kind": "test", "tokenizer": "bytes", "vocab": vocab})
    return data


def _config(data: Path, out: Path, **changes: object) -> TrainConfig:
    base = dict(data=data, out=out, n_layer=1, n_embd=64, ctx=32, batch=4, steps=40, lr=1e-2,
                min_lr=1e-3, warmup=5, eval_every=20, eval_windows=8, threads=1, command="test")
    base.update(changes)
    return TrainConfig(**base)  # type: ignore[arg-type]


def test_training_reduces_loss_and_saves_a_loadable_best_model(tmp_path: Path) -> None:
    data = _pattern_dataset(tmp_path, 256, list(range(65, 75)))
    summary = train(_config(data, tmp_path / "run"))
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert log[-1]["val_loss"] < 0.5 * np.log(256)  # far below the uniform guess (5.5 nats)
    assert summary["best_val_loss"] == min(r["val_loss"] for r in log)
    model = engine.load_model(tmp_path / "run" / "best.pth", device="cpu", dtype="fp32")
    logits, _ = model.forward([65, 66, 67, 68])
    assert int(torch.argmax(logits)) == 69  # continues the cycle


def test_same_seed_same_weights(tmp_path: Path) -> None:
    data = _pattern_dataset(tmp_path, 256, list(range(65, 75)))
    first = train(_config(data, tmp_path / "a", steps=6, eval_every=6))
    second = train(_config(data, tmp_path / "b", steps=6, eval_every=6))
    assert first["best_val_loss"] == second["best_val_loss"]
    a = torch.load(tmp_path / "a" / "best.pth", weights_only=True)
    b = torch.load(tmp_path / "b" / "best.pth", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_run_split_into_phases_equals_the_whole_run(tmp_path: Path) -> None:
    data = _pattern_dataset(tmp_path, 256, list(range(65, 75)))
    full = train(_config(data, tmp_path / "full", steps=12, warmup=2, eval_every=6))
    first = train(_config(data, tmp_path / "part", steps=12, warmup=2, eval_every=6, stop_at=6, command="phase 1"))
    assert first["steps"] == 6
    resumed = train(_config(data, tmp_path / "part", steps=12, warmup=2, eval_every=6, resume=True, command="phase 2"))
    assert resumed["steps"] == 12
    assert resumed["final_val_loss"] == pytest.approx(full["final_val_loss"], rel=1e-5)
    assert resumed["phases"] == [
        {"command": "phase 1", "from_step": 0, "to_step": 6},
        {"command": "phase 2", "from_step": 6, "to_step": 12},
    ]


def test_closed_vocabulary_pins_unused_tokens(tmp_path: Path) -> None:
    vocab = 600
    alphabet = [3, 17, 250, 499, 512]
    data = _pattern_dataset(tmp_path, vocab, alphabet)
    train(_config(data, tmp_path / "run", closed_vocab=True))
    checkpoint = torch.load(tmp_path / "run" / "best.pth", weights_only=True)
    assert checkpoint["ln_out.weight"][0].item() == 0.0 and checkpoint["ln_out.bias"][0].item() == 1.0
    model = engine.load_model(tmp_path / "run" / "best.pth", device="cpu", dtype="fp32")
    logits, _ = model.forward([3, 17, 250])
    unused = torch.ones(vocab, dtype=torch.bool)
    unused[alphabet] = False
    assert torch.all(logits[unused] == UNUSED_TOKEN_LOGIT)
    assert int(torch.argmax(logits)) == 499
    probabilities = torch.softmax(logits, dim=-1)
    assert probabilities[unused].sum().item() < 1e-9


def test_learning_rate_schedule() -> None:
    cfg = _config(Path("."), Path("."), steps=100, warmup=10, lr=1.0, min_lr=0.1)
    assert lr_at(0, cfg) == pytest.approx(0.1)
    assert lr_at(9, cfg) == pytest.approx(1.0)
    assert lr_at(10, cfg) == pytest.approx(1.0)
    assert lr_at(55, cfg) == pytest.approx(0.55)
    assert lr_at(100, cfg) == pytest.approx(0.1)
    values = [lr_at(s, cfg) for s in range(10, 101)]
    assert all(a >= b for a, b in zip(values, values[1:]))
