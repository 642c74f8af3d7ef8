"""The training loop: AdamW, warm-up plus cosine learning rate, clipping, validation, best model.

Runs are reproducible from their command line: fixed seeds for the initial weights and for
the order of training windows, and a schedule measured in steps (not wall time). A wall-time
cap exists only as a safety net on a shared machine; a run that hits it says so in its summary.

A *closed vocabulary* option serves models whose tokenizer is much larger than what the data
uses (the MIDI vocabulary has 20,096 tokens; folk tunes use a few hundred). Channel 0 of
``ln_out`` is pinned to the constant 1 (weight 0, bias 1), so column 0 of ``head`` becomes a
per-token bias; the rows of tokens that never occur get the logit −30 through that column and
zeros elsewhere. Training then only needs logits for the tokens in use, which makes the
softmax several times cheaper, and the saved model still assigns essentially zero probability
(e^−30 relative) to tokens it has never seen — instead of the arbitrary logits untrained rows
would give.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shlex
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from tools.train.dataset import TokenSplit, read_meta
from tools.train.model import RWKV7, ModelShape, init_weights

UNUSED_TOKEN_LOGIT = -30.0


@dataclass
class TrainConfig:
    data: Path
    out: Path
    n_layer: int = 3
    n_embd: int = 256
    ctx: int = 512
    batch: int = 8
    steps: int = 2000
    lr: float = 2e-3
    min_lr: float = 1e-4
    warmup: int = 100
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    beta1: float = 0.9
    beta2: float = 0.99
    eval_every: int = 100
    eval_windows: int = 64
    seed: int = 0
    chunk: int = 16
    threads: int = 2
    closed_vocab: bool = False
    max_minutes: float = 0.0  # 0: no cap
    #: Stop after this step while keeping the schedule of ``steps`` (0: run to the end). With
    #: ``--resume`` later, a run can be split into phases that reproduce exactly.
    stop_at: int = 0
    resume: bool = False
    command: str = field(default_factory=lambda: "python -m tools.train " + " ".join(shlex.quote(a) for a in sys.argv[1:]))

    def to_json(self) -> dict[str, object]:
        data = asdict(self)
        data["data"], data["out"] = str(self.data), str(self.out)
        return data


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then cosine decay from ``lr`` to ``min_lr`` at ``steps``."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = min(1.0, (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup))
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * progress))


class ClosedVocabulary:
    """Maps the tokens in use to a compact range and pins the unused ones (see module doc)."""

    def __init__(self, used: np.ndarray, vocab: int) -> None:
        self.used = torch.from_numpy(np.sort(used).astype(np.int64))
        self.index = torch.full((vocab,), -1, dtype=torch.long)
        self.index[self.used] = torch.arange(len(self.used))
        self.unused = torch.from_numpy(np.setdiff1d(np.arange(vocab), used).astype(np.int64))

    def prepare(self, model: RWKV7) -> None:
        with torch.no_grad():
            model.ln_out.weight[0] = 0.0
            model.ln_out.bias[0] = 1.0
            model.head.weight[:, 0] = 0.0
            model.head.weight[self.unused] = 0.0
            model.head.weight[self.unused, 0] = UNUSED_TOKEN_LOGIT

        def pin(grad: torch.Tensor) -> torch.Tensor:
            grad = grad.clone()
            grad[0] = 0.0
            return grad

        model.ln_out.weight.register_hook(pin)
        model.ln_out.bias.register_hook(pin)

    def pin(self, model: RWKV7) -> None:
        """Restore the exact pinned values (weight decay slowly shrinks the unused rows)."""
        with torch.no_grad():
            model.head.weight[self.unused] = 0.0
            model.head.weight[self.unused, 0] = UNUSED_TOKEN_LOGIT
            model.ln_out.weight[0] = 0.0
            model.ln_out.bias[0] = 1.0

    def logits(self, model: RWKV7, hidden: torch.Tensor) -> torch.Tensor:
        return F.linear(hidden, model.head.weight[self.used])

    def targets(self, targets: torch.Tensor) -> torch.Tensor:
        mapped = self.index[targets]
        if bool((mapped < 0).any()):
            raise ValueError("a target token is outside the closed vocabulary")
        return mapped


def _hidden(model: RWKV7, ids: torch.Tensor, chunk: int) -> torch.Tensor:
    """Final normalised hidden states (B, T, C): the model minus its head."""
    x = model.blocks[0].ln0(model.emb(ids))
    v_first = None
    for block in model.blocks:
        out, v_first = block.att(block.ln1(x), v_first, chunk=chunk)
        x = x + out
        x = x + block.ffn(block.ln2(x))
    return model.ln_out(x)


def batch_loss(
    model: RWKV7, ids: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor | None,
    closed: ClosedVocabulary | None, chunk: int,
) -> tuple[torch.Tensor, float]:
    """Mean cross-entropy over weighted targets; also returns the weight total."""
    hidden = _hidden(model, ids, chunk)
    if closed is not None:
        logits = closed.logits(model, hidden)
        targets = closed.targets(targets)
    else:
        logits = model.head(hidden)
    losses = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none")
    if weights is None:
        return losses.mean(), float(losses.numel())
    w = weights.reshape(-1)
    total = float(w.sum())
    return (losses * w).sum() / max(total, 1.0), total


@torch.no_grad()
def evaluate(model: RWKV7, split: TokenSplit, starts: np.ndarray, cfg: TrainConfig, closed: ClosedVocabulary | None) -> float:
    """Weighted mean loss (nats per token) over fixed validation windows."""
    model.eval()
    total_loss, total_weight = 0.0, 0.0
    for i in range(0, len(starts), cfg.batch):
        ids, targets, weights = split.batch(starts[i:i + cfg.batch], cfg.ctx + 1)
        loss, weight = batch_loss(model, ids, targets, weights, closed, cfg.chunk)
        total_loss += float(loss) * weight
        total_weight += weight
    model.train()
    return total_loss / max(total_weight, 1.0)


def _param_groups(model: RWKV7, weight_decay: float) -> list[dict[str, object]]:
    """Decay only the big matrices; vectors (mixes, biases, norms, decay bias) stay free."""
    decay, plain = [], []
    for name, p in model.named_parameters():
        if p.dim() >= 2 and not name.startswith("emb."):
            decay.append(p)
        else:
            plain.append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": plain, "weight_decay": 0.0}]


def _log(out: Path, record: dict[str, object]) -> None:
    with (out / "log.jsonl").open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")
    print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()), flush=True)


def _atomic_save(obj: object, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def machine_description(threads: int) -> str:
    """What the run ran on, for the model card."""
    cpu = platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    plural = "" if threads == 1 else "s"
    return (f"{cpu} CPU, {os.cpu_count()} cores shared with other jobs, {threads} torch thread{plural}, "
            f"no GPU, torch {torch.__version__}")


def train(cfg: TrainConfig) -> dict[str, object]:
    """Train, keeping ``best.pth`` (official layout, bf16) at the lowest validation loss."""
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    cfg.out.mkdir(parents=True, exist_ok=True)
    meta = read_meta(cfg.data)
    vocab = int(meta["vocab"])
    train_split = TokenSplit.load(cfg.data / "train.npz")
    val_split = TokenSplit.load(cfg.data / "val.npz")
    window = cfg.ctx + 1
    train_starts = train_split.window_starts(window)
    rng = np.random.default_rng(cfg.seed)
    val_starts = val_split.window_starts(window)
    val_starts = np.sort(np.random.default_rng(cfg.seed + 1).choice(
        val_starts, size=min(cfg.eval_windows, len(val_starts)), replace=False))

    model = RWKV7(ModelShape(cfg.n_layer, cfg.n_embd, vocab))
    init_weights(model, cfg.seed)
    closed = None
    if cfg.closed_vocab:
        used = np.union1d(np.unique(train_split.tokens), np.unique(val_split.tokens))
        closed = ClosedVocabulary(used, vocab)
        closed.prepare(model)
    optimizer = torch.optim.AdamW(
        _param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=1e-8
    )
    start_step, best, elapsed_before = 0, math.inf, 0.0
    #: Earlier phases of this run (command, first and last step), for the model card.
    history: list[dict[str, object]] = []
    resume_path = cfg.out / "last.pt"
    if cfg.resume and resume_path.exists():
        saved = torch.load(resume_path, weights_only=True)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        start_step, best, elapsed_before = saved["step"], saved["best"], saved["elapsed"]
        rng = np.random.default_rng(cfg.seed)
        rng.bit_generator.state = saved["rng"]
        history = list(saved.get("history", []))
    (cfg.out / "config.json").write_text(json.dumps(cfg.to_json(), indent=2) + "\n", encoding="utf-8")

    n_params = model.n_params()
    print(f"model: {cfg.n_layer} layers × {cfg.n_embd}, vocab {vocab}, {n_params:,} parameters; "
          f"{len(train_split.tokens):,} training tokens, {cfg.steps} steps × {cfg.batch}×{cfg.ctx}", flush=True)
    started = time.monotonic()
    tokens_done = start_step * cfg.batch * cfg.ctx
    stopped_early = False
    last_val = math.nan
    step = start_step
    recent: list[float] = []
    end_step = min(cfg.stop_at, cfg.steps) if cfg.stop_at > 0 else cfg.steps

    def phases() -> list[dict[str, object]]:
        return history + [{"command": cfg.command, "from_step": start_step, "to_step": step}]

    while step < end_step:
        lr = lr_at(step, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        starts = rng.choice(train_starts, size=cfg.batch)
        ids, targets, weights = train_split.batch(starts, window)
        loss, _ = batch_loss(model, ids, targets, weights, closed, cfg.chunk)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip))
        optimizer.step()
        step += 1
        tokens_done += cfg.batch * cfg.ctx
        recent.append(loss.item())
        elapsed = elapsed_before + time.monotonic() - started
        last_step = step == end_step
        over_time = cfg.max_minutes > 0 and elapsed > cfg.max_minutes * 60
        if step % cfg.eval_every == 0 or last_step or over_time:
            last_val = evaluate(model, val_split, val_starts, cfg, closed)
            improved = last_val < best
            if improved:
                best = last_val
                if closed is not None:
                    closed.pin(model)
                _atomic_save(model.checkpoint(torch.bfloat16), cfg.out / "best.pth")
            _log(cfg.out, {
                "step": step, "train_loss": sum(recent) / len(recent), "val_loss": last_val,
                "best": best, "lr": lr, "grad_norm": grad_norm, "tokens": tokens_done,
                "elapsed_s": round(elapsed, 1), "tok_per_s": round(tokens_done / max(elapsed, 1e-9)),
            })
            recent = []
            _atomic_save({
                "model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                "best": best, "elapsed": elapsed, "rng": rng.bit_generator.state, "history": phases(),
            }, resume_path)
        if over_time and not last_step:
            stopped_early = True
            break

    elapsed = elapsed_before + time.monotonic() - started
    summary = {
        "params": n_params,
        "shape": model.shape.to_dict(),
        "steps": step,
        "tokens": tokens_done,
        "train_seconds": round(elapsed, 1),
        "best_val_loss": best,
        "final_val_loss": last_val,
        "stopped_by_time_cap": stopped_early,
        "closed_vocab_tokens": int(len(closed.used)) if closed is not None else None,
        "machine": machine_description(cfg.threads),
        "config": cfg.to_json(),
        "phases": phases(),
        "data": meta,
    }
    (cfg.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary
