"""The ``rwkv-tui`` entry point.

With no subcommand it opens the full-screen app; subcommands (``generate``, ``music``,
``state``) run without a terminal UI, for scripts. Errors are one line on stderr and a
non-zero exit status, never a traceback.

What reaches a terminal has its control characters made visible (``␛]0;…␇``): model output,
file names and header fields read from files could otherwise set the terminal's title, clear
it or write its clipboard. Output into a pipe or a file is left exactly as written
(``rwkv-tui generate > out.txt`` keeps the model's text byte for byte). See tui.terminal_text.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from types import ModuleType
from typing import Sequence

from tui.openmp_setup import load_engine_with_passive_openmp

load_engine_with_passive_openmp()  # first: before anything below loads torch

from tui.commands import COMMAND_MODULES  # noqa: E402
from tui.terminal_text import terminal_safe_output  # noqa: E402


def _command_modules() -> list[ModuleType]:
    return [importlib.import_module(name) for name in COMMAND_MODULES]


def build_parser(commands: Sequence[ModuleType]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rwkv-tui",
        description="Chat, make music and inspect the RNN state of RWKV-7 models in your terminal.",
    )
    add_model_arguments(parser)
    parser.add_argument("--music-model", metavar="NAME|PATH",
                        help="RWKV-7 music model (ABC or MIDI tokens): a .pth file or a catalog name (models list)")
    parser.add_argument("--state", metavar="FILE",
                        help="start the chat from a state file, a session file (its transcript too) or a "
                             "state-tuning time_state .pth")
    parser.add_argument("--state-orientation", choices=("as-stored", "transposed"), default="as-stored",
                        help="how the matrices of a time_state file given to --state are read (default: as-stored)")
    parser.add_argument("--no-autosave", action="store_true",
                        help="do not autosave the conversation, and do not offer to resume one")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in commands:
        command_parser = sub.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        module.add_arguments(command_parser)
        command_parser.set_defaults(run=module.run)
    return parser


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """--model/--device/--dtype/--tokenizer/--threads, shared by the app and the subcommands."""
    parser.add_argument("--model", metavar="NAME|PATH",
                        help="RWKV-7 .pth checkpoint, a model saved by `rwkv-tui quantize`, an rwkv7 GGUF file, or a "
                             "downloaded catalog name, e.g. g1-1.5b (`rwkv-tui models list`; default: built-in demo model)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    parser.add_argument("--dtype", default=None,
                        help="weight dtype: fp32, bf16, fp16, or int8/q4 (block-quantized, CPU only) "
                             "(default: bf16 on CPU, fp16 on GPU; a quantized model file: its own format)")
    parser.add_argument("--tokenizer", default=None, help="world, midi, abc or bytes (default: detected)")
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="CPU threads for the model (default: the cores this process may use, cgroup-aware)")


def main(argv: Sequence[str] | None = None) -> int:
    with terminal_safe_output():
        return _main(argv)


def _main(argv: Sequence[str] | None) -> int:
    from engine.errors import EngineError

    commands = _command_modules()
    args = build_parser(commands).parse_args(argv)
    try:
        if getattr(args, "threads", None) is not None:
            from engine.cpu_threads import set_cpu_threads

            set_cpu_threads(args.threads)
        if getattr(args, "run", None) is not None:
            return int(args.run(args))
        from tui.app import run_app

        return int(run_app(args))
    except EngineError as exc:
        print(f"rwkv-tui: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `rwkv-tui generate ... | head`: the reader left, which is not an error of ours. Point
        # stdout at /dev/null so the interpreter's final flush does not complain a second time.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
