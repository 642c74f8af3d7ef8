"""``rwkv-tui quantize``: save a model in a quantized format once, so later loads skip that step.

The file it writes (safetensors, see engine/model_file.py) is accepted wherever a model path
is, and runs in its own format unless ``--dtype`` asks for another.
"""

from __future__ import annotations

import argparse
import time

from engine.model_file import quantize_checkpoint
from engine.quant import FORMATS

NAME = "quantize"
HELP = "save a model with int8 or q4 weights (a .safetensors file any --model accepts)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", metavar="PATH", required=True,
                        help="the RWKV-7 model to quantize (.pth, safetensors or rwkv7 GGUF)")
    parser.add_argument("--dtype", choices=FORMATS, required=True, help="int8 (8.5 bits per weight) or q4 (4.5)")
    parser.add_argument("--out", metavar="PATH",
                        help="where to write (default: beside the model, NAME-DTYPE.safetensors)")


def run(args: argparse.Namespace) -> int:
    started = time.monotonic()
    written = quantize_checkpoint(args.model, args.dtype, args.out)
    size = written.stat().st_size / 1e6
    print(f"wrote {written} ({args.dtype}, {size:.1f} MB) in {time.monotonic() - started:.1f} s")
    return 0
