"""The options of the benchmarks that time a random-weight model of a chosen shape.

Defaults are the 0.1B shape (12 layers, n_embd 768, the World vocabulary), so every script
measures the same model unless asked otherwise.
"""

from __future__ import annotations

import argparse


def add_model_arguments(parser: argparse.ArgumentParser, tokens: int) -> None:
    """--layers, --embd, --vocab, --tokens (``tokens`` by default), --device and --dtype."""
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--embd", type=int, default=768)
    parser.add_argument("--vocab", type=int, default=65536)
    parser.add_argument("--tokens", type=int, default=tokens)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default=None)


def tokenizer_for(vocab: int) -> str:
    """The tokenizer a random model of this vocabulary is read with."""
    return "bytes" if vocab == 256 else "world"
