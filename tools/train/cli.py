"""``python -m tools.train``: build data sets, train, run the gates, ship a model.

    python -m tools.train data chat --out build/train/data/chat
    python -m tools.train fit --data build/train/data/chat --out build/train/runs/chat --n-layer 3 ...
    python -m tools.train gate chat --model build/train/runs/chat/best.pth
    python -m tools.train export chat --run build/train/runs/chat
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

DEFAULT_ROOT = Path("build/train")


def _add_data(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="build a training data set")
    p.add_argument("kind", choices=("chat", "abc", "midi"))
    p.add_argument("--out", type=Path, help="output folder (default build/train/data/KIND)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--copies", type=int, default=4, help="chat: passes over the question pairs, each freshly worded")
    p.add_argument("--max-chars", type=int, default=1200, help="abc: skip tunes longer than this")
    p.add_argument("--max-tokens", type=int, default=2000, help="midi: skip pieces longer than this")


def _add_fit(sub: argparse._SubParsersAction) -> None:
    from tools.train.trainer import TrainConfig

    d = TrainConfig(data=Path("."), out=Path("."))
    p = sub.add_parser("fit", help="train a model")
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    for name in ("n_layer", "n_embd", "ctx", "batch", "steps", "warmup", "eval_every", "eval_windows",
                 "seed", "chunk", "threads", "stop_at"):
        p.add_argument("--" + name.replace("_", "-"), type=int, default=getattr(d, name))
    for name in ("lr", "min_lr", "weight_decay", "grad_clip", "beta1", "beta2", "max_minutes"):
        p.add_argument("--" + name.replace("_", "-"), type=float, default=getattr(d, name))
    p.add_argument("--closed-vocab", action="store_true", help="learn only the tokens the data uses (see trainer.py)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")


def _add_gate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("gate", help="measure a model against its acceptance gate")
    p.add_argument("kind", choices=("chat", "abc", "midi"))
    p.add_argument("--model", type=Path, help="checkpoint (default: the shipped demo model)")
    p.add_argument("--n", type=int, default=0, help="number of questions/samples (default: the gate's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, help="also write the result here")
    p.add_argument("--show", type=int, default=5, help="print this many failures")


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="copy a run's best model into engine/models with sidecar and card")
    p.add_argument("kind", choices=("chat", "abc", "midi"))
    p.add_argument("--run", type=Path, required=True, help="training run folder (has best.pth, summary.json)")
    p.add_argument("--gate", type=Path, help="gate result JSON to quote in the model card")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_data(sub)
    _add_fit(sub)
    _add_gate(sub)
    _add_export(sub)
    args = parser.parse_args(argv)

    if args.command == "data":
        out = args.out or DEFAULT_ROOT / "data" / args.kind
        if args.kind == "chat":
            from tools.train.chat_data import build_dataset
            meta = build_dataset(out, copies=args.copies, seed=args.seed)
        elif args.kind == "abc":
            from tools.train.abc_data import build_dataset
            meta = build_dataset(out, seed=args.seed, max_chars=args.max_chars)
        else:
            from tools.train.midi_data import build_dataset
            meta = build_dataset(out, seed=args.seed, max_tokens=args.max_tokens)
        print(json.dumps(meta, indent=2))
        return 0

    if args.command == "fit":
        from tools.train.trainer import TrainConfig, train
        fields = {k: v for k, v in vars(args).items() if k not in ("command",)}
        summary = train(TrainConfig(**fields))
        print(json.dumps({k: summary[k] for k in ("params", "steps", "train_seconds", "best_val_loss")}, indent=2))
        return 0

    if args.command == "gate":
        from tools.train import gates
        result = gates.run_gate(args.kind, model_path=args.model, n=args.n or None, seed=args.seed)
        print(result.report(show=args.show))
        if args.json:
            args.json.write_text(json.dumps(result.to_json(), indent=2) + "\n", encoding="utf-8")
        return 0 if result.passed else 1

    if args.command == "export":
        from tools.train.export import export
        paths = export(args.kind, args.run, gate_json=args.gate)
        for path in paths:
            print(path)
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
