"""Argument helpers shared by the subcommands: loading a model and reading sampling flags."""

from __future__ import annotations

import argparse

from engine import Model, SamplingParams, Tokenizer, load_model, tokenizer_for_model
from engine.catalog import resolve_model_path
from engine.demo_models import demo_model_path


def load_model_from_args(args: argparse.Namespace, default_kind: str = "chat") -> tuple[Model, Tokenizer]:
    """The model named by --model, a path or a catalog name (or the built-in demo of
    ``default_kind``), and its tokenizer."""
    path = resolve_model_path(args.model) if args.model else demo_model_path(default_kind)
    model = load_model(path, device=args.device, dtype=args.dtype)
    return model, tokenizer_for_model(model, args.tokenizer)


def add_sampling_arguments(parser: argparse.ArgumentParser, defaults: SamplingParams | None = None) -> None:
    d = defaults or SamplingParams()
    group = parser.add_argument_group("sampling")
    group.add_argument("--temperature", type=float, default=d.temperature, help=f"(default {d.temperature})")
    group.add_argument("--top-p", type=float, default=d.top_p, help=f"(default {d.top_p})")
    group.add_argument("--top-k", type=int, default=d.top_k, help=f"0 disables (default {d.top_k})")
    group.add_argument("--presence-penalty", type=float, default=d.presence_penalty, help=f"(default {d.presence_penalty})")
    group.add_argument("--frequency-penalty", type=float, default=d.frequency_penalty, help=f"(default {d.frequency_penalty})")
    group.add_argument("--penalty-decay", type=float, default=d.penalty_decay, help=f"(default {d.penalty_decay})")
    group.add_argument("--max-tokens", type=int, default=d.max_tokens, help=f"(default {d.max_tokens})")
    group.add_argument("--seed", type=int, default=d.seed, help="fix the random seed to repeat a run exactly")


def sampling_from_args(args: argparse.Namespace) -> SamplingParams:
    return SamplingParams(
        temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
        presence_penalty=args.presence_penalty, frequency_penalty=args.frequency_penalty,
        penalty_decay=args.penalty_decay, max_tokens=args.max_tokens, seed=args.seed,
    ).validate()
