"""``rwkv-tui state``: inspect, convert, compare, probe and prime RNN state files from scripts.

Reads rwkv-tui state files (``*.state.safetensors``) and RWKV state-tuning files
(``blocks.N.att.time_state`` in ``.pth`` or safetensors). Nothing here needs a terminal UI.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import EngineError, StateError, StateModelMismatchError
from engine.state import State
from engine.state_io import StateFileInfo, is_state_file, load_state_file, save_state
from engine.state_stats import StateStats, state_diff, state_stats
from engine.time_state import (
    DEFAULT_ORIENTATION, Orientation, check_time_state_fits, export_time_state, probe_orientation,
    read_time_state_file, state_from_time_states, token_shift_magnitude,
)

NAME = "state"
HELP = "inspect, convert (rwkv-tui ↔ time_state .pth), diff, probe or prime RNN state files"

_ORIENTATIONS = [o.value for o in Orientation]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from tui.cli import add_model_arguments

    sub = parser.add_subparsers(dest="state_command", metavar="ACTION", required=True)

    inspect = sub.add_parser("inspect", help="describe a state file: header, sizes and norms per layer")
    inspect.add_argument("file", type=Path)
    inspect.add_argument("--heads", action="store_true", help="print the layer × head WKV norm grid")
    inspect.add_argument("--json", action="store_true", help="machine-readable output")
    _orientation_argument(inspect)
    add_model_arguments(inspect)
    inspect.set_defaults(state_run=_inspect)

    convert = sub.add_parser(
        "convert",
        help="convert between rwkv-tui state files and state-tuning .pth files (by OUTPUT's name)",
        description="OUTPUT ending in .pth is written as a state-tuning file (WKV only); any other "
        "name is written as an rwkv-tui state file. --model binds the result to a model.",
    )
    convert.add_argument("input", type=Path)
    convert.add_argument("output", type=Path)
    _orientation_argument(convert)
    convert.add_argument("--save-dtype", choices=["fp32", "bf16", "fp16"], default="fp32",
                         help="storage dtype of the output (default fp32: lossless)")
    convert.add_argument("--allow-other-model", action="store_true",
                         help="accept a state file saved from other weights of the same shape")
    add_model_arguments(convert)
    convert.set_defaults(state_run=_convert)

    diff = sub.add_parser("diff", help="compare two states of the same model")
    diff.add_argument("a", type=Path)
    diff.add_argument("b", type=Path)
    diff.add_argument("--top", type=int, default=5, help="how many most-changed heads to list (default 5)")
    diff.add_argument("--json", action="store_true", help="machine-readable output")
    _orientation_argument(diff)
    diff.set_defaults(state_run=_diff)

    probe = sub.add_parser(
        "probe",
        help="measure which orientation of a state-tuning file predicts sample text better",
    )
    probe.add_argument("file", type=Path)
    _text_arguments(probe)
    add_model_arguments(probe)
    probe.set_defaults(state_run=_probe)

    prime = sub.add_parser("prime", help="feed text into a fresh state and save it (a reusable prompt)")
    prime.add_argument("output", type=Path)
    _text_arguments(prime)
    prime.add_argument("--from-state", type=Path, metavar="FILE", help="start from this state instead of zeros")
    add_model_arguments(prime)
    prime.set_defaults(state_run=_prime)


def _orientation_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--orientation", choices=_ORIENTATIONS, default=DEFAULT_ORIENTATION.value,
        help="how time_state matrices map to [value][key]: as-stored (RWKV-PEFT x070, default) "
        "or transposed (ChatRWKV-style loaders)",
    )


def _text_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--text", help="the text ('-' reads standard input)")
    group.add_argument("--text-file", type=Path, help="read the text from this file")


def run(args: argparse.Namespace) -> int:
    return int(args.state_run(args))


# ---------------------------------------------------------------------------------- loading


@dataclass
class _Loaded:
    state: State
    kind: str  # "rwkv-tui state", "rwkv-tui session" or "time_state"
    info: StateFileInfo | None


def _load_any(path: Path, orientation: str, model: Any = None, allow_other_model: bool = False) -> _Loaded:
    """Our state files by their header, anything else as a state-tuning file."""
    if is_state_file(path):
        loaded = load_state_file(path, model, allow_other_model=allow_other_model)
        return _Loaded(loaded.state, f"rwkv-tui {loaded.info.kind}", loaded.info)
    stacked = read_time_state_file(path)
    if model is not None:
        check_time_state_fits(stacked, model, str(path))
    state = state_from_time_states(stacked, orientation)
    state.meta["imported_from"] = path.name
    return _Loaded(state, "time_state", None)


def _model_from(args: argparse.Namespace, required: bool):
    if not required and not args.model:
        return None, None
    from tui.commands.common import load_model_from_args

    return load_model_from_args(args)


def _read_text(args: argparse.Namespace) -> str:
    if args.text_file is not None:
        try:
            return args.text_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise EngineError(f"{args.text_file}: cannot read text ({exc})") from None
    return sys.stdin.read() if args.text == "-" else args.text


# ---------------------------------------------------------------------------------- actions


def _inspect(args: argparse.Namespace) -> int:
    model, _ = _model_from(args, required=False)
    loaded = _load_any(args.file, args.orientation)
    stats = state_stats(loaded.state)
    fits = None
    if model is not None:
        from engine.state_io import check_fits

        try:
            if loaded.info is not None:
                check_fits(loaded.info, model)
            else:
                check_time_state_fits(loaded.state.wkv, model, str(args.file))
            fits = "yes"
        except StateModelMismatchError:
            fits = "same shapes, other weights (state convert accepts it with --allow-other-model)"
        except StateError as exc:
            fits = f"no: {str(exc).split(': ', 1)[-1]}"

    if args.json:
        print(json.dumps(_inspect_json(args.file, loaded, stats, fits), indent=2, ensure_ascii=False))
        return 0
    info = loaded.info
    print(f"{args.file}: {loaded.kind}")
    rows = [
        ("shape", f"{stats.n_layer} layers × {loaded.state.att_x.shape[1]} "
                  f"({stats.n_head} heads of {loaded.state.wkv.shape[2]})"),
        ("size", f"{_bytes(stats.nbytes)} as fp32"
                 + (f", file {_bytes(info.file_bytes)} ({info.dtype})" if info else "")),
        ("tokens consumed", str(info.tokens_seen if info else 0)),
    ]
    if info is not None:
        rows += [
            ("model", f"{info.model_name or '?'} (fingerprint {info.fingerprint})" if info.fingerprint
             else "not bound to a model (loads into any model of this shape)"),
            ("created", f"{info.created} by rwkv-tui {info.app_version}"),
            ("token history", f"{info.history_tokens} tokens" if info.history_tokens else "none"),
            ("transcript", "yes" if info.has_transcript else "none"),
        ]
        if info.snapshots:
            rows.append(("snapshots", ", ".join(f"turn {i}" for i in info.snapshots)))
        for key, value in sorted(info.meta.items()):
            rows.append((key, value))
    else:
        rows.append(("orientation", args.orientation))
    if fits is not None:
        rows.append(("fits --model", fits))
    rows.append(("WKV norm", f"{stats.wkv_total_norm:.4g} (max |entry| {stats.wkv_max_abs:.4g})"))
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"  {key:<{width}}  {value}")
    print()
    print(f"  {'layer':>5}  {'WKV norm':>10}  {'top head':>12}  {'att shift':>10}  {'ffn shift':>10}")
    for layer in range(stats.n_layer):
        norms = stats.wkv_norms[layer]
        top = int(norms.argmax())
        layer_norm = float(norms.double().pow(2).sum().sqrt())
        print(f"  {layer:>5}  {layer_norm:>10.4g}  {f'h{top} {float(norms[top]):.3g}':>12}  "
              f"{float(stats.att_x_norms[layer]):>10.4g}  {float(stats.ffn_x_norms[layer]):>10.4g}")
    if args.heads:
        print()
        print("  WKV norm per head (rows: layers, columns: heads)")
        for layer in range(stats.n_layer):
            cells = " ".join(f"{float(v):8.3g}" for v in stats.wkv_norms[layer])
            print(f"  {layer:>5}  {cells}")
    return 0


def _inspect_json(path: Path, loaded: _Loaded, stats: StateStats, fits: str | None) -> dict[str, Any]:
    info = loaded.info
    out: dict[str, Any] = {
        "file": str(path),
        "kind": loaded.kind,
        "n_layer": stats.n_layer,
        "n_embd": int(loaded.state.att_x.shape[1]),
        "n_head": stats.n_head,
        "head_size": int(loaded.state.wkv.shape[2]),
        "state_bytes": stats.nbytes,
        "tokens_seen": info.tokens_seen if info else 0,
        "wkv_total_norm": stats.wkv_total_norm,
        "wkv_max_abs": stats.wkv_max_abs,
        "wkv_norms": stats.wkv_norms.tolist(),
        "att_x_norms": stats.att_x_norms.tolist(),
        "ffn_x_norms": stats.ffn_x_norms.tolist(),
    }
    if info is not None:
        out.update(
            format_version=info.format_version, fingerprint=info.fingerprint, model_name=info.model_name,
            file_dtype=info.dtype, file_bytes=info.file_bytes, created=info.created,
            app_version=info.app_version, history_tokens=info.history_tokens,
            has_transcript=info.has_transcript, snapshots=list(info.snapshots), meta=info.meta,
        )
    if fits is not None:
        out["fits_model"] = fits
    return out


def _convert(args: argparse.Namespace) -> int:
    model, _ = _model_from(args, required=False)
    try:
        loaded = _load_any(args.input, args.orientation, model, allow_other_model=args.allow_other_model)
    except StateModelMismatchError as exc:  # convert is the command that has the flag
        raise StateModelMismatchError(
            f"{exc} (convert it anyway with --allow-other-model)", exc.file_fingerprint, exc.model_fingerprint,
        ) from None
    if args.output.resolve() == args.input.resolve():
        raise StateError(f"{args.output}: refusing to overwrite the input; choose another output name")
    if args.output.suffix.lower() == ".pth":
        shift = token_shift_magnitude(loaded.state)
        export_time_state(args.output, loaded.state, orientation=args.orientation, dtype=args.save_dtype)
        print(f"wrote {args.output}: time_state for {loaded.state.n_layer} layers "
              f"({args.orientation}, {args.save_dtype})")
        if shift > 0:
            print("note: the time_state format has no token-shift vectors; this state's "
                  f"(largest entry {shift:.3g}) were dropped", file=sys.stderr)
        return 0
    source = loaded.info
    # Re-encoding one of our files keeps its binding unless --model says otherwise.
    bind: Any = model if model is not None else (source if source is not None and source.fingerprint else None)
    tokens = load_state_file(args.input).tokens if source is not None and source.history_tokens else None
    state = loaded.state
    if source is None:
        state.meta.setdefault("orientation", args.orientation)
    save_state(args.output, state, bind, tokens=tokens, dtype=args.save_dtype)
    bound = f"bound to {getattr(bind, 'info', bind).name}" if bind is not None else "not bound to a model"
    print(f"wrote {args.output}: rwkv-tui state, {state.n_layer} layers, {args.save_dtype}, {bound}")
    return 0


def _diff(args: argparse.Namespace) -> int:
    a = _load_any(args.a, args.orientation)
    b = _load_any(args.b, args.orientation)
    if a.info is not None and b.info is not None and a.info.fingerprint and b.info.fingerprint \
            and a.info.fingerprint != b.info.fingerprint:
        print("note: the two states come from different weights", file=sys.stderr)
    diff = state_diff(a.state, b.state)
    top = [entry for entry in diff.most_changed(args.top) if entry[2] > 0] if args.top > 0 else []
    if args.json:
        print(json.dumps({
            "identical": diff.identical, "relative": diff.relative, "max_abs": diff.max_abs,
            "tokens": [diff.tokens_a, diff.tokens_b],
            "wkv": diff.wkv.tolist(), "wkv_relative": diff.wkv_relative.tolist(),
            "wkv_cosine": diff.wkv_cosine.tolist(),
            "att_x": diff.att_x.tolist(), "ffn_x": diff.ffn_x.tolist(),
            "most_changed": [{"layer": l, "head": h, "relative": r} for l, h, r in top],
        }, indent=2))
        return 0
    if diff.identical:
        print(f"{args.a} and {args.b}: identical states")
        return 0
    print(f"{args.a} vs {args.b}")
    print(f"  WKV: relative difference {diff.relative:.4g}, largest entry difference {diff.max_abs:.4g}")
    print(f"  token shift: att Δ {float(diff.att_x.norm()):.4g}, ffn Δ {float(diff.ffn_x.norm()):.4g}"
          f"; tokens consumed {diff.tokens_a} vs {diff.tokens_b}")
    print()
    print(f"  {'layer':>5}  {'WKV Δ':>10}  {'rel. Δ':>8}  {'min cos':>8}  {'att Δ':>9}  {'ffn Δ':>9}")
    for layer in range(diff.wkv.shape[0]):
        wkv_layer = float(diff.wkv[layer].double().pow(2).sum().sqrt())
        print(f"  {layer:>5}  {wkv_layer:>10.4g}  {float(diff.wkv_relative[layer].max()):>8.3g}  "
              f"{float(diff.wkv_cosine[layer].min()):>8.3f}  {float(diff.att_x[layer]):>9.4g}  "
              f"{float(diff.ffn_x[layer]):>9.4g}")
    if top:
        print()
        print("  most changed heads: " + ", ".join(f"L{l}.h{h} ({r:.3g})" for l, h, r in top))
    return 0


def _probe(args: argparse.Namespace) -> int:
    model, tokenizer = _model_from(args, required=True)
    stacked = read_time_state_file(args.file)
    tokens = tokenizer.encode(_read_text(args))
    scores = probe_orientation(model, stacked, tokens)
    best = min(scores, key=lambda o: scores[o])
    print(f"{args.file} on {model.info.name}, {len(tokens)} tokens of sample text:")
    for orientation, nll in scores.items():
        mark = "  ← better" if orientation is best else ""
        print(f"  {orientation.value:<11} {nll:.4f} nats/token{mark}")
    other = next(o for o in scores if o is not best)
    margin = scores[other] - scores[best]
    if margin < 0.01:
        print("  the difference is too small to tell; use more (and more typical) sample text")
    else:
        print(f"  use --orientation {best.value}")
    return 0


def _prime(args: argparse.Namespace) -> int:
    model, tokenizer = _model_from(args, required=True)
    text = _read_text(args)
    tokens = tokenizer.encode(text)
    if not tokens:
        raise StateError("nothing to feed: the text is empty")
    start = None
    history: list[int] = []
    if args.from_state is not None:
        loaded = load_state_file(args.from_state, model)
        start = loaded.state
        history = loaded.tokens or []
    _, state = model.forward(tokens, start)
    save_state(args.output, state.to("cpu"), model, tokens=history + tokens)
    print(f"wrote {args.output}: {len(tokens)} tokens fed, {state.tokens_seen} in total, "
          f"bound to {model.info.name}")
    return 0


def _bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"
