"""``rwkv-tui generate``: stream a completion or a chat reply to stdout, for scripts."""

from __future__ import annotations

import argparse
import signal
import sys

from engine import Conversation, Generation, Sampler, ThinkMode
from tui.commands.common import add_sampling_arguments, load_model_from_args, sampling_from_args

NAME = "generate"
HELP = "generate text from a prompt and stream it to stdout"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from tui.cli import add_model_arguments

    add_model_arguments(parser)
    parser.add_argument("--prompt", required=True, help="prompt text ('-' reads standard input)")
    parser.add_argument("--chat", action="store_true", help="wrap the prompt as a chat turn (User: …\\n\\nAssistant:)")
    parser.add_argument("--system", help="system prompt for --chat")
    parser.add_argument("--think", choices=[m.value for m in ThinkMode], default="off", help="G1 think mode for --chat")
    parser.add_argument("--stop", action="append", default=[], help="stop when this text appears (repeatable)")
    parser.add_argument("--stats", action="store_true", help="print tokens/s and time to first token to stderr")
    add_sampling_arguments(parser)


def run(args: argparse.Namespace) -> int:
    prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
    params = sampling_from_args(args)
    model, tokenizer = load_model_from_args(args)
    generation: Generation
    if args.chat:
        conversation = Conversation(model, tokenizer, params, system=args.system, think=ThinkMode(args.think))
        generation = conversation.send(prompt)
        if args.stop:
            generation.stop_strings.extend(args.stop)
    else:
        if not prompt:
            print("rwkv-tui: --prompt is empty", file=sys.stderr)
            return 2
        sampler = Sampler(params, model.config.vocab)
        generation = Generation(
            model, tokenizer, sampler, prompt=tokenizer.encode(prompt),
            stop_strings=args.stop, max_tokens=params.max_tokens,
        )
    previous = signal.signal(signal.SIGINT, lambda *_: generation.cancel())
    try:
        for delta in generation:
            sys.stdout.write(delta)
            sys.stdout.flush()
    finally:
        signal.signal(signal.SIGINT, previous)
    sys.stdout.write("\n")
    result = generation.result
    if args.stats and result is not None:
        s = result.stats
        ttft = f"{s.time_to_first_token:.3f}s" if s.time_to_first_token is not None else "-"
        print(
            f"[{s.generated_tokens} tokens, {s.tokens_per_second:.1f} tok/s, prefill {s.prompt_tokens} tokens "
            f"at {s.prefill_tokens_per_second:.1f} tok/s, first token {ttft}, stop: {result.stop_reason.value}]",
            file=sys.stderr,
        )
    return 130 if result is not None and result.stop_reason.value == "cancelled" else 0
