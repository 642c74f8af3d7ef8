"""UI overhead: tokens/s of a reply streamed into the chat pane ÷ tokens/s of the bare engine.

Both runs generate the very same reply (same random-weight model, same prompt, same seed, so the
same tokens and the same stop), and both read the engine's own decode clock, so the ratio measures
only what the app costs the engine thread: the outbox, the 30 Hz drain, Markdown streaming and
rendering competing for the GIL and the cores. Runs alternate (bare, app, bare, app, …) and the
median of each is reported, which keeps background load from favouring one side.

By default the app runs as it does for a user: a child process on a pseudo-terminal with
Textual's real driver (rendering and writing the screen included). ``--headless`` uses Textual's
test driver in this process instead (layout and rendering, no terminal output).

    python benchmarks/bench_ui_overhead.py                       # 0.1B shape (12 x 768), random weights
    python benchmarks/bench_ui_overhead.py --layers 2 --embd 128 --vocab 256 --tokens 600   # worst case
    python benchmarks/bench_ui_overhead.py --history 100      # a long conversation on screen

Aim: ratio ≥ 0.95.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tui.openmp_setup import load_engine_with_passive_openmp  # noqa: E402

load_engine_with_passive_openmp()  # as the rwkv-tui entry point does, before torch loads

from benchmarks.model_shape import add_model_arguments, tokenizer_for  # noqa: E402

PROMPT = "Tell me a long story about a lighthouse keeper."


def history(turns: int):  # noqa: ANN201 - a protocol event, imported late like the app
    """Earlier turns for the chat pane to show (display only: the engine starts fresh, so the
    bare run and the app still generate the same tokens)."""
    from tui.protocol import TranscriptReplaced, TurnView

    reply = "Here is **an answer** with a few words in it. " * 8 + "\n\n- one point\n- another point\n\nAnd a close."
    return TranscriptReplaced(tuple(
        TurnView(i, f"Question number {i} about the lighthouse?", reply, "stop token", 80, 40.0, False, None)
        for i in range(turns)
    ))


def make_model(layers: int, embd: int, vocab: int, directory: Path) -> Path:
    from engine.synthetic import random_state_dict, save_checkpoint

    return save_checkpoint(random_state_dict(layers, embd, vocab, seed=11), directory / f"bench-{layers}x{embd}-{vocab}.pth")


def bare_engine(path: Path, tokenizer: str, tokens: int, seed: int, device: str, dtype: str | None) -> dict[str, float]:
    """The same reply without any UI, on a plain thread like the app's engine thread and with the
    app's GIL switch interval, so that only the UI differs between the two runs."""
    import threading

    import engine
    from tui.app import GIL_SWITCH_INTERVAL

    model = engine.load_model(path, device=device, dtype=dtype)
    tok = engine.get_tokenizer(tokenizer)
    conversation = engine.Conversation(model, tok, engine.SamplingParams(max_tokens=tokens, seed=seed))
    generation = conversation.send(PROMPT)
    pieces: list[str] = []
    previous = sys.getswitchinterval()
    sys.setswitchinterval(GIL_SWITCH_INTERVAL)
    try:
        thread = threading.Thread(target=lambda: pieces.extend(generation))
        thread.start()
        thread.join()
    finally:
        sys.setswitchinterval(previous)
    result = generation.result
    assert result is not None
    return {"tps": result.stats.tokens_per_second, "tokens": result.stats.generated_tokens, "chars": len("".join(pieces))}


async def in_app(path: Path, tokenizer: str, tokens: int, seed: int, device: str, dtype: str | None,
                 earlier: int = 0) -> dict[str, float]:
    from engine import SamplingParams
    from tui.app import LaunchOptions, RwkvApp
    from tui.protocol import ChatSettings, Send

    config = Path(tempfile.mkdtemp()) / "config.json"
    app = RwkvApp(LaunchOptions(
        model=str(path), tokenizer=tokenizer, device=device, dtype=dtype,
        use_demo_models=False, config_path=config, autosave=False,  # no resume dialog over the chat
    ))
    async with app.run_test(size=(120, 40)) as pilot:
        while not app.chat_pane.has_model:
            await pilot.pause(0.05)
        if earlier:
            await app.chat_pane.on_transcript_replaced(history(earlier))
            await pilot.pause(1.0)
            await pilot.wait_for_scheduled_animations()
            await pilot.pause()
        settings = ChatSettings(params=SamplingParams(max_tokens=tokens, seed=seed))
        app.worker.submit(Send(PROMPT, settings))
        while app.worker.conversation is None or not app.worker.conversation.turns or not app.worker.conversation.turns[-1].finished:
            await asyncio.sleep(0.25)
        while app.chat_pane.generating:
            await asyncio.sleep(0.05)
        turn = app.worker.conversation.turns[-1]
        shown = app.chat_pane.views()[-1].text
        assert shown == turn.reply, "the chat pane must show exactly the engine's reply"
        assert turn.stats is not None
        return {"tps": turn.stats.tokens_per_second, "tokens": turn.stats.generated_tokens, "chars": len(shown)}


def pty_app(path: Path, tokenizer: str, tokens: int, seed: int, device: str, dtype: str | None,
            earlier: int = 0) -> dict[str, float]:
    """Run the app in a child process on a pseudo-terminal (real driver, real screen output)."""
    import pty
    import select
    import signal

    result_file = Path(tempfile.mkdtemp()) / "result.json"
    args = [sys.executable, __file__, "--child", str(path), "--tokenizer", tokenizer, "--tokens", str(tokens), "--seed", str(seed),
            "--device", device, "--result", str(result_file), "--history", str(earlier)] + (["--dtype", dtype] if dtype else [])
    pid, fd = pty.fork()
    if pid == 0:
        os.environ["TERM"] = "xterm-256color"
        os.environ["COLUMNS"], os.environ["LINES"] = "120", "40"
        os.execv(sys.executable, args)
    deadline = time.monotonic() + 600
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.1)
            if ready:
                try:
                    os.read(fd, 1 << 16)
                except OSError:
                    break
            finished, _ = os.waitpid(pid, os.WNOHANG)
            if finished:
                break
    finally:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    return json.loads(result_file.read_text())


def child(path: Path, tokenizer: str, tokens: int, seed: int, device: str, dtype: str | None, result_file: Path,
          earlier: int = 0) -> None:
    """Inside the pty: run the real app, send one message, write the turn's speed, quit."""
    import fcntl
    import struct
    import termios

    fcntl.ioctl(sys.stdout.fileno(), termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    from engine import SamplingParams
    from tui.app import LaunchOptions, RwkvApp
    from tui.protocol import ChatSettings, Send

    config = Path(tempfile.mkdtemp()) / "config.json"
    app = RwkvApp(LaunchOptions(
        model=str(path), tokenizer=tokenizer, device=device, dtype=dtype,
        use_demo_models=False, config_path=config, autosave=False,  # no resume dialog over the chat
    ))

    quiet: list[float] = []

    def settled() -> bool:
        """Whether the UI thread has finished showing the transcript (idle for 0.5 s): only
        streaming is measured, not loading a long chat."""
        now, cpu = time.monotonic(), time.thread_time()
        quiet.append((now, cpu))  # type: ignore[arg-type]
        window = [q for q in quiet if now - q[0] <= 0.5]  # type: ignore[index]
        quiet[:] = window
        if now - getattr(app, "_bench_history", now) < 1.0 or now - window[0][0] < 0.45:  # type: ignore[index]
            return False
        return (cpu - window[0][1]) / (now - window[0][0]) < 0.1  # type: ignore[index]

    def poll() -> None:
        conversation = app.worker.conversation
        if not getattr(app, "_bench_sent", False):
            if earlier and app.chat_pane.has_model and not getattr(app, "_bench_history", 0.0):
                app._bench_history = time.monotonic()  # type: ignore[attr-defined]
                app.call_later(app.chat_pane.on_transcript_replaced, history(earlier))
                return
            if earlier and not settled():
                return
            if app.chat_pane.has_model:
                app._bench_sent = True  # type: ignore[attr-defined]
                app.worker.submit(Send(PROMPT, ChatSettings(params=SamplingParams(max_tokens=tokens, seed=seed))))
            return
        if conversation is not None and conversation.turns and conversation.turns[-1].finished:
            turn = conversation.turns[-1]
            assert turn.stats is not None
            result_file.write_text(json.dumps({"tps": turn.stats.tokens_per_second, "tokens": turn.stats.generated_tokens, "chars": len(turn.reply)}))
            app.exit()

    app.call_later(lambda: app.set_interval(0.05, poll))
    app.run()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_arguments(parser, tokens=120)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--headless", action="store_true", help="Textual's test driver instead of a pseudo-terminal")
    parser.add_argument("--history", type=int, default=0, help="earlier turns shown in the chat before the reply")
    parser.add_argument("--tokenizer", help=argparse.SUPPRESS)
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.tokenizer, args.tokens, args.seed, args.device, args.dtype, args.result, args.history)
        return

    directory = Path(tempfile.mkdtemp())
    path = make_model(args.layers, args.embd, args.vocab, directory)
    tokenizer = tokenizer_for(args.vocab)
    bare_runs, app_runs = [], []
    for round_number in range(args.rounds):
        run = (path, tokenizer, args.tokens, args.seed, args.device, args.dtype)
        bare = bare_engine(*run)
        shown = asyncio.run(in_app(*run, args.history)) if args.headless else pty_app(*run, args.history)
        if bare["tokens"] != shown["tokens"]:
            raise SystemExit(f"runs differ: bare engine made {bare['tokens']} tokens, the app {shown['tokens']}")
        bare_runs.append(bare["tps"])
        app_runs.append(shown["tps"])
        print(f"round {round_number + 1}: bare {bare['tps']:.1f} tok/s · in app {shown['tps']:.1f} tok/s "
              f"({shown['tokens']} tokens, {shown['chars']} characters)")
    bare_median, app_median = statistics.median(bare_runs), statistics.median(app_runs)
    driver = "headless" if args.headless else "pty"
    print(f"model {args.layers}x{args.embd}, vocab {args.vocab}, {args.device}, driver {driver}, {args.history} earlier turns shown")
    print(f"bare engine: {bare_median:.1f} tok/s   streamed into the chat pane: {app_median:.1f} tok/s")
    print(f"ratio: {app_median / bare_median:.3f}   (aim ≥ 0.95)")


if __name__ == "__main__":
    main()
