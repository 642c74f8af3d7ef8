"""Resource bounds: how much the app's resident memory grows over a long reply, a long piece and a
long chat (issue 17).

Each phase runs the real app headless (Textual's test driver: every widget, the transcript, the
outboxes, the engine and music threads) in a process of its own, so one phase's leftovers never
count in another's figures. Memory is read from ``/proc/self/status`` ten times a second: VmRSS
(what ``ps`` shows), RssAnon (what the process allocated: VmRSS without file pages, such as a
memory-mapped checkpoint, which the kernel drops and reads back as it likes, so VmRSS alone can
even shrink) and the peak, also from the kernel's high-water mark (VmHWM, reset when the
measurement starts). Nothing is measured before warm-up: by then the models are loaded, the
widgets exist and every code path of the loop has run.

* **chat**: the shipped demo chat model (bytes vocabulary) writes one reply of ``--chat-tokens``
  (10,000) tokens with its own sampling (greedy). The reply cannot stop early: the chat already
  bans the end-of-text token, and the newline byte is banned too, so the turn separator "\n\n"
  never comes and the token budget ends it (so the reply is one long Markdown paragraph).
  Measured from the first ``--warmup`` (1,000) tokens shown in the status line to the end of the
  reply, once the UI has settled.
* **music**: the shipped demo MIDI model writes a ``--music-tokens`` (20,000) token piece in the
  Music pane while the player plays it live (to no port: a user without a synth). It cannot end
  early: the length target is the token budget, and ``<end>``/``<pad>`` are banned by wrapping the
  engine's MIDI logit hook (as the tests' ``endless_pieces`` fixture does).
* **snapshots**: ``--turns`` (70) short turns with a random model whose snapshot is large
  (12 × 768: 2.3 MB a turn) under a ``--budget-mb`` (32 MB) snapshot budget, then the same turns
  with budget 0 (the control: what a turn costs without snapshots, i.e. the transcript). Per turn
  it records the State pane's "Snapshots kept … of … budget" numbers and RssAnon. Pass: the kept
  bytes never exceed the budget, RSS grows < 50 MB from the turn the budget is full, and from
  then on a turn costs what it costs in the control, within a quarter of a snapshot.

    python benchmarks/bench_memory.py                          # all three phases (about 5 minutes)
    python benchmarks/bench_memory.py --phase chat --chat-tokens 3000
    python benchmarks/bench_memory.py --phase music --tracemalloc   # where Python's allocations grew

Pass: VmRSS and RssAnon each grow < ``--limit-mb`` (50 MB) after warm-up, in every phase.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MB = 1024 * 1024
#: Seconds between RSS samples while a phase runs (the app keeps running in between).
SAMPLE_INTERVAL = 0.1
#: The byte the chat reply may not write, so that it never writes the turn separator "\n\n".
NEWLINE = 10
PROMPT = "Tell me a very long story about a lighthouse keeper and the sea."
SIZE = (120, 40)


# --------------------------------------------------------------------------- resident memory


def memory() -> dict[str, int]:
    """This process's resident memory now, in bytes: ``rss`` (all resident pages, what ``ps``
    shows), ``anon`` (the part the process allocated itself, without file pages such as a
    memory-mapped checkpoint, which the kernel may drop and read back at any time) and ``hwm``
    (the kernel's high-water mark of ``rss``)."""
    wanted = {"VmRSS:": "rss", "RssAnon:": "anon", "VmHWM:": "hwm"}
    out: dict[str, int] = {}
    with open("/proc/self/status") as status:
        for line in status:
            key = line.split(maxsplit=1)[0] if line.strip() else ""
            if key in wanted:
                out[wanted[key]] = int(line.split()[1]) * 1024
    return out


def reset_peak() -> bool:
    """Restart the kernel's RSS high-water mark (VmHWM) from the current RSS; False if refused."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
        return True
    except OSError:
        return False


class RssMeter:
    """Samples resident memory while a phase runs: at warm-up, the peak after it, the end.

    With ``trace`` (``--tracemalloc``), also where Python's own allocations grew in between.
    """

    def __init__(self, trace: bool = False) -> None:
        self.trace = trace
        self._traced: Any = None
        self.start: dict[str, int] | None = None
        #: Tokens (or turns) written when the measurement began.
        self.start_tokens = 0
        self.peak = 0
        self._kernel_peak = False

    def begin(self, tokens: int = 0) -> None:
        if self.trace:
            import gc
            import tracemalloc

            gc.collect()
            self._traced = tracemalloc.take_snapshot()
        self._kernel_peak = reset_peak()
        self.start = memory()
        self.peak = self.start["rss"]
        self.start_tokens = tokens

    def sample(self) -> int:
        """RSS now (and the peak so far, once measuring)."""
        rss = memory()["rss"]
        if self.start is not None:
            self.peak = max(self.peak, rss)
        return rss

    def result(self, tokens: int, **extra: Any) -> dict[str, Any]:
        assert self.start is not None, "the phase never warmed up"
        self.sample()
        end = memory()
        peak = max(self.peak, end["hwm"] if self._kernel_peak else 0)
        if self._traced is not None:
            extra["traced"] = self._traced_growth()
        return {"tokens": tokens, "start": self.start["rss"], "end": end["rss"], "peak": peak,
                "anon_start": self.start["anon"], "anon_end": end["anon"], **extra}

    def _traced_growth(self, top: int = 12) -> list[str]:
        import gc
        import tracemalloc

        gc.collect()
        now = tracemalloc.take_snapshot()
        diff = now.compare_to(self._traced, "traceback")
        total = sum(d.size_diff for d in diff)
        lines = [f"Python allocations grew {total / MB:+.2f} MB in all; the largest growths:"]
        for d in diff[:top]:
            frames = [f"{Path(f.filename).name}:{f.lineno}" for f in d.traceback][-6:]
            lines.append(f"  {d.size_diff / 1024:+9.1f} KiB {d.count_diff:+7d} blocks  " + " < ".join(reversed(frames)))
        return lines


async def sample_until(meter: RssMeter, done: Callable[[], bool], timeout: float, what: str,
                       on_sample: Callable[[], None] | None = None) -> None:
    """Let the app run, sampling RSS, until ``done()``. asyncio.sleep, not pilot.pause: a pause
    makes the app repaint and settle, which a user's app would not do at that moment."""
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        await asyncio.sleep(SAMPLE_INTERVAL)
        meter.sample()
        if on_sample is not None:
            on_sample()


def press(pilot: Any, key: str) -> asyncio.Task[None]:
    """Press a key without waiting for the app to go idle (the pilot waits until every widget's
    queue is empty, which does not happen while a reply streams): measure while it streams."""
    return asyncio.ensure_future(pilot.press(key))


async def settle(pilot: Any, meter: RssMeter) -> None:
    """Let the UI finish what the end of a phase set off (final Markdown update, layout)."""
    for _ in range(10):
        await pilot.pause(0.1)
        meter.sample()
    await pilot.wait_for_scheduled_animations()


def private_dirs(parent: Path) -> Path:
    """Config, autosave and log folders of the app's own, so a run never touches the user's."""
    home = Path(tempfile.mkdtemp(prefix="home-", dir=parent))
    for name in ("XDG_CONFIG_HOME", "XDG_STATE_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME"):
        os.environ[name] = str(home / name.lower())
    return home


# --------------------------------------------------------------------------- phases (child side)


async def chat_phase(args: argparse.Namespace, home: Path) -> dict[str, Any]:
    from tui.app import LaunchOptions, RwkvApp
    from tui.widgets.status_line import StatusLine

    # The built-in demo models, as a fresh install starts (the music model loads too).
    app = RwkvApp(LaunchOptions(config_path=home / "config.json", autosave=False))
    meter = RssMeter(args.tracemalloc)
    async with app.run_test(size=SIZE) as pilot:
        pane = app.chat_pane
        await sample_until(meter, lambda: pane.has_model and app.music_pane.model is not None, 300, "the models")
        params = pane.settings.params  # the demo model's own sampling (greedy, no penalties)
        params = params.with_(max_tokens=args.chat_tokens, seed=args.seed,
                              ban_tokens=tuple(sorted({*params.ban_tokens, NEWLINE})))
        pane.apply_settings(replace(pane.settings, params=params))
        pane.prompt.set_text(PROMPT)
        pressing = press(pilot, "enter")
        status = app.query_one(StatusLine)

        def shown_tokens() -> int:
            return status.stats.generated_tokens if status.stats is not None else 0

        def warm() -> None:
            if meter.start is None and pane.generating and shown_tokens() >= args.warmup:
                meter.begin(shown_tokens())

        def finished() -> bool:
            conversation = app.worker.conversation
            return (conversation is not None and bool(conversation.turns) and conversation.turns[-1].finished
                    and not pane.generating and not len(app.worker.outbox))

        await sample_until(meter, finished, 3600, "the reply", on_sample=warm)
        await pressing
        await settle(pilot, meter)
        turn = app.worker.conversation.turns[-1]
        assert turn.stats is not None
        if turn.stats.generated_tokens != args.chat_tokens:
            raise SystemExit(f"the reply ended early: {turn.stats.generated_tokens} tokens ({turn.stop_reason})")
        shown = pane.views()[-1].text
        if shown != turn.reply:
            raise SystemExit("the chat pane does not show the engine's reply")
        return meter.result(
            turn.stats.generated_tokens - meter.start_tokens,
            total_tokens=turn.stats.generated_tokens, characters=len(shown),
            tokens_per_second=turn.stats.tokens_per_second,
        )


async def music_phase(args: argparse.Namespace, home: Path) -> dict[str, Any]:
    from engine.music import generate, midi_vocab
    from tui.app import LaunchOptions, RwkvApp
    from tui.music_settings import MusicSettings

    written = [0]
    original = generate.midi_logit_hook

    def endless(settings):  # noqa: ANN001, ANN202 - the hook factory's signature
        hook = original(settings)

        def ban_the_end(logits, step):  # noqa: ANN001, ANN202
            hook(logits, step)
            logits[midi_vocab.PAD_ID] = logits[midi_vocab.END_ID] = -float("inf")
            written[0] = step + 1

        return ban_the_end

    generate.midi_logit_hook = endless
    settings = (MusicSettings().with_field("max_tokens", args.music_tokens)
                .with_field("length_target", args.music_tokens).with_field("seed", args.seed))
    config = home / "config.json"
    config.write_text(json.dumps({"music": {"settings": settings.to_dict()}}))
    app = RwkvApp(LaunchOptions(config_path=config, autosave=False))
    meter = RssMeter(args.tracemalloc)
    async with app.run_test(size=SIZE) as pilot:
        pane = app.music_pane
        await sample_until(meter, lambda: pane.model is not None and app.chat_pane.has_model, 300, "the models")
        await pilot.press("f3")
        pressing = press(pilot, "g")

        def warm() -> None:
            if meter.start is None and pane.generating and written[0] >= args.warmup:
                meter.begin(written[0])

        await sample_until(meter, lambda: pane.piece is not None and not pane.generating, 3600, "the piece",
                           on_sample=warm)
        await pressing
        await settle(pilot, meter)
        piece = pane.piece
        assert piece is not None
        if piece.generated_tokens != args.music_tokens:
            raise SystemExit(f"the piece ended early: {piece.generated_tokens} tokens ({piece.stop_reason})")
        if pane.roll.note_count != piece.note_count:
            raise SystemExit("the piano roll does not show the piece's notes")
        result = meter.result(
            piece.generated_tokens - meter.start_tokens,
            total_tokens=piece.generated_tokens, notes=piece.note_count, tokens_per_second=piece.tokens_per_second,
            music_seconds=piece.end_ms / 1000,
        )
        await pilot.press("s")
        return result


async def snapshot_phase(args: argparse.Namespace, home: Path, model: Path) -> dict[str, Any]:
    from tui.app import LaunchOptions, RwkvApp

    app = RwkvApp(LaunchOptions(model=str(model), tokenizer="bytes", use_demo_models=False,
                                config_path=home / "config.json", autosave=False))
    meter = RssMeter(args.tracemalloc)
    budget = int(args.budget_mb * MB)
    rows: list[dict[str, int]] = []
    async with app.run_test(size=SIZE) as pilot:
        pane = app.chat_pane
        await sample_until(meter, lambda: pane.has_model, 300, "the model")
        conversation = app.worker.conversation
        assert conversation is not None
        conversation.set_snapshot_budget(budget)  # the engine thread is idle until the first message
        pane.apply_settings(replace(pane.settings, params=pane.settings.params.with_(
            max_tokens=args.reply_tokens, seed=args.seed)))
        for turn in range(1, args.turns + 1):
            pane.prompt.set_text(f"Message {turn}: tell me something new about the sea.")
            await pilot.press("enter")

            def answered(turn: int = turn) -> bool:
                info = app.state_pane.info
                return (app.worker.settled and not len(app.worker.outbox) and not pane.generating
                        and info is not None and len(info.turns) == turn)

            await sample_until(meter, answered, 600, f"turn {turn}")
            await pilot.pause()
            info = app.state_pane.info  # what the State pane shows: "Snapshots kept n · x of y budget"
            assert info is not None
            if meter.start is None and rows and info.snapshots_kept <= rows[-1]["kept"]:
                meter.begin(turn)  # the budget is full: from now on a turn evicts a snapshot
            meter.sample()
            rows.append({"turn": turn, "anon": memory()["anon"], "kept": info.snapshots_kept,
                         "bytes": info.snapshot_bytes, "budget": info.snapshot_budget})
        per_snapshot = conversation.model.info.state_bytes + conversation.model.config.vocab * 4
        return meter.result(args.turns - meter.start_tokens, rows=rows, per_snapshot=per_snapshot,
                            budget=budget, full_turn=meter.start_tokens)


# --------------------------------------------------------------------------- driver


def run_child(args: argparse.Namespace) -> None:
    from tui.openmp_setup import load_engine_with_passive_openmp

    home = private_dirs(args.result.parent)  # inside the parent's temporary folder
    if args.tracemalloc:
        import tracemalloc

        tracemalloc.start(12)
    load_engine_with_passive_openmp()  # as the rwkv-tui entry point does, before torch loads
    phase = {"chat": chat_phase, "music": music_phase}.get(args.child)
    if phase is not None:
        result = asyncio.run(phase(args, home))
    else:
        result = asyncio.run(snapshot_phase(args, home, args.model))
    args.result.write_text(json.dumps(result))


def run_phase(phase: str, args: argparse.Namespace, directory: Path, **overrides: Any) -> dict[str, Any]:
    """One phase in a fresh process of its own; its figures come back as JSON."""
    result = directory / f"{phase}.json"
    values = {**vars(args), **overrides}
    command = [sys.executable, __file__, "--child", phase.split("-")[0], "--result", str(result)] + [
        f"--{name.replace('_', '-')}={values[name]}"
        for name in ("chat_tokens", "music_tokens", "warmup", "seed", "turns", "reply_tokens", "budget_mb")
    ] + ([f"--model={values['model']}"] if values.get("model") else []) + (["--tracemalloc"] if args.tracemalloc else [])
    started = time.monotonic()
    subprocess.run(command, check=True)
    data = json.loads(result.read_text())
    data["seconds"] = time.monotonic() - started
    return data


def make_snapshot_model(args: argparse.Namespace, directory: Path) -> Path:
    from engine.synthetic import random_state_dict, save_checkpoint

    return save_checkpoint(random_state_dict(args.layers, args.embd, 256, seed=11),
                           directory / f"bench-memory-{args.layers}x{args.embd}.pth")


def anon_per_turn(rows: list[dict[str, int]], first: int, last: int) -> float:
    """Growth of allocated memory (RssAnon) per turn over turns ``first``..``last``: the median
    of the slopes between every two turns (Theil-Sen), which a momentary spike (a reply's states
    in flight when the turn was sampled, +20 MB now and then) does not sway as least squares would."""
    part = [r for r in rows if first <= r["turn"] <= last]
    if len(part) < 3:
        return float("nan")
    return statistics.median((b["anon"] - a["anon"]) / (b["turn"] - a["turn"])
                             for i, a in enumerate(part) for b in part[i + 1:])


def machine() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return f"{os.cpu_count()} cores"
    fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    return f"{fields.get('Model name', '?').strip()}, {os.cpu_count()} cores"


def snapshot_verdict(r: dict[str, Any], control: dict[str, Any] | None) -> tuple[bool, str]:
    """The kept bytes stay within the budget, and once the budget is full a turn costs no more
    memory than the same turn with no snapshots kept at all (the transcript's own cost), give or
    take a quarter of a snapshot: keeping one snapshot too many per turn would show as a whole one."""
    rows, full, last = r["rows"], r["full_turn"], r["rows"][-1]["turn"]
    most = max(row["bytes"] for row in rows)
    filling = anon_per_turn(rows, 1, full - 1)
    once_full = anon_per_turn(rows, full, last)
    baseline = anon_per_turn(control["rows"], full, last) if control else 0.0
    ok = most <= r["budget"] and once_full - baseline < r["per_snapshot"] / 4
    line = (f"snapshots: {r['per_snapshot'] / MB:.2f} MB each, budget {r['budget'] / MB:g} MB, full at turn {full}; "
            f"most kept {most / MB:.1f} MB ({'within' if most <= r['budget'] else 'OVER'} the budget). Memory per "
            f"turn: {filling / MB:.2f} MB while filling, {once_full / MB:.2f} MB once full"
            + (f", {baseline / MB:.2f} MB with no snapshots kept (budget 0: the transcript's own cost)"
               if control else ""))
    return ok, line


def report(results: dict[str, dict[str, Any]], limit_mb: float) -> bool:
    ok = True
    control = results.pop("snapshots-control", None)
    print(f"\nmachine: {machine()}; limit: {limit_mb:g} MB of growth after warm-up")
    print(f"{'phase':<24} {'measured':>13} {'RSS start MB':>13} {'end MB':>8} {'peak MB':>8} {'growth MB':>10} "
          f"{'anon growth MB':>15}  result")
    notes: list[str] = []
    for phase, r in results.items():
        growth, anon = (r["end"] - r["start"]) / MB, (r["anon_end"] - r["anon_start"]) / MB
        passed = growth < limit_mb and anon < limit_mb
        if phase == "snapshots":
            label, measured = f"snapshots ({len(r['rows'])} turns)", f"{r['tokens']} turns"
            fits, line = snapshot_verdict(r, control)
            passed = passed and fits
            notes.append(line)
        else:
            label, measured = f"{phase} ({r['total_tokens']:,} tokens)", f"{r['tokens']:,} tokens"
            extra = (f"{r['notes']:,} notes, {r['music_seconds']:.0f} s of music" if phase == "music"
                     else f"{r['characters']:,} characters")
            notes.append(f"{phase}: {r['tokens_per_second']:.0f} tok/s, {extra}; measured from token "
                         f"{r['total_tokens'] - r['tokens']:,}; the phase took {r['seconds']:.0f} s")
        ok = ok and passed
        print(f"{label:<24} {measured:>13} {r['start'] / MB:>13.1f} {r['end'] / MB:>8.1f} {r['peak'] / MB:>8.1f} "
              f"{growth:>10.1f} {anon:>15.1f}  {'pass' if passed else 'FAIL'}")
    for line in notes:
        print(line)
    for phase, r in results.items():
        for line in r.get("traced", ()):
            print(f"  {phase}: {line}")
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phase", choices=("all", "chat", "music", "snapshots"), default="all")
    parser.add_argument("--chat-tokens", type=int, default=10_000)
    parser.add_argument("--music-tokens", type=int, default=20_000)
    parser.add_argument("--warmup", type=int, default=1_000, help="tokens before the first measurement")
    parser.add_argument("--turns", type=int, default=70, help="turns of the snapshot phase")
    parser.add_argument("--reply-tokens", type=int, default=8, help="tokens per reply in the snapshot phase")
    parser.add_argument("--budget-mb", type=float, default=32.0, help="snapshot budget of the snapshot phase")
    parser.add_argument("--layers", type=int, default=12, help="layers of the snapshot phase's random model")
    parser.add_argument("--embd", type=int, default=768, help="n_embd of the snapshot phase's random model")
    parser.add_argument("--no-control", action="store_true",
                        help="skip the snapshot phase's second run with budget 0 (the transcript's own cost)")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--limit-mb", type=float, default=50.0)
    parser.add_argument("--tracemalloc", action="store_true",
                        help="also list where Python's allocations grew (slow, and it inflates RSS; for finding a leak)")
    parser.add_argument("--json", type=Path, help="also write every figure (the per-turn rows too) to this file")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--model", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_child(args)
        return
    phases = ["chat", "music", "snapshots"] if args.phase == "all" else [args.phase]
    if "snapshots" in phases and not args.no_control:
        phases.append("snapshots-control")
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="rwkv-bench-memory-") as folder:
        directory = Path(folder)
        model = make_snapshot_model(args, directory) if "snapshots" in phases else None
        for phase in phases:
            overrides: dict[str, Any] = {"model": model} if phase.startswith("snapshots") else {}
            if phase == "snapshots-control":
                overrides["budget_mb"] = 0
            results[phase] = run_phase(phase, args, directory, **overrides)
            print(f"{phase} done in {results[phase]['seconds']:.0f} s", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    if not report(results, args.limit_mb):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
