"""``rwkv-tui models``: list the catalog of official models, download one, delete one.

``list`` shows every catalog entry, whether it is here, its size and whether it fits this
machine's memory (VRAM when a CUDA GPU would be used, else RAM) in the dtype the app would use.
``pull NAME`` downloads with a progress bar on stderr and resumes an interrupted download;
``rm NAME`` deletes the file. NAME is a catalog name, an alias (``g1-1.5b``) or the file name.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from typing import TextIO

from engine.catalog import SOURCES, is_downloaded, load_catalog, local_path, models_dir, partial_bytes
from engine.units import human_bytes

NAME = "models"
HELP = "list, download (pull) and delete official RWKV models"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="models_command", metavar="ACTION", required=True)

    listing = sub.add_parser("list", help="the catalog: what is downloaded, sizes, what fits this machine")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    listing.add_argument("--device", default="auto", help="judge the fit for auto, cpu or cuda (default: auto)")
    listing.add_argument("--dtype", default=None, help="judge the fit in fp32, bf16 or fp16 (default: the app's)")
    listing.set_defaults(models_run=_list)

    pull = sub.add_parser("pull", help="download a model (resumes an interrupted download)")
    pull.add_argument("name", metavar="NAME", help="catalog name, alias or file name (see `models list`)")
    pull.add_argument("--source", choices=SOURCES, default="huggingface",
                      help="huggingface (honours HF_ENDPOINT, e.g. https://hf-mirror.com) or modelscope "
                           "(default: huggingface)")
    pull.set_defaults(models_run=_pull)

    rm = sub.add_parser("rm", help="delete a downloaded model (and any partial download)")
    rm.add_argument("name", metavar="NAME")
    rm.set_defaults(models_run=_rm)


def run(args: argparse.Namespace) -> int:
    return int(args.models_run(args))


# ---------------------------------------------------------------------------- list


def _list(args: argparse.Namespace) -> int:
    from engine.fit import memory_budget, needed_bytes, verdict

    catalog = load_catalog()
    budget = memory_budget(args.device, args.dtype)
    rows = []
    for entry in catalog.entries:
        rows.append({
            "name": entry.name, "aliases": list(entry.aliases), "kind": entry.kind,
            "architecture": entry.architecture_label, "runnable": entry.runnable, "file": entry.file,
            "size": entry.size, "downloaded": is_downloaded(entry), "partial_bytes": partial_bytes(entry),
            "path": str(local_path(entry)), "needs_bytes": needed_bytes(entry, budget.dtype),
            "fit": verdict(entry, budget), "description": entry.description,
        })
    if args.json:
        json.dump({
            "models_dir": str(models_dir()), "catalog": str(catalog.path),
            "memory": {"kind": budget.kind, "device": budget.device, "dtype": budget.dtype,
                       "total": budget.total, "available": budget.available, "name": budget.name},
            "models": rows,
        }, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    where = f" on {budget.name}" if budget.name else ""
    print(f"Models folder: {models_dir()}  (RWKV_TUI_MODELS_DIR changes it)")
    print(f"Memory: {human_bytes(budget.total)} {budget.kind}{where}, {human_bytes(budget.available)} free now; "
          f"the app would load models in {budget.dtype} on the {budget.device.upper()}")
    table = [("NAME", "ALIAS", "KIND", "ARCH", "SIZE", "HERE", f"FITS ({budget.kind}, {budget.dtype})")]
    for row in rows:
        here = "yes" if row["downloaded"] else (
            f"{row['partial_bytes'] * 100 // row['size']} %" if row["partial_bytes"] else "-")
        fit = {"fits": "yes", "tight": "tight", "too big": "no", "unknown": "?"}[row["fit"]]
        fit += f" ({human_bytes(row['needs_bytes'])})"
        arch = row["architecture"] + ("" if row["runnable"] else " (not yet)")
        table.append((row["name"], ",".join(row["aliases"]) or "-", row["kind"], arch,
                      human_bytes(row["size"]), here, fit))
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    for line in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip())
    print("HERE: downloaded, or how much of a partial download is kept. FITS: tight = only after freeing memory.")
    if any(not row["runnable"] for row in rows):
        print("ARCH (not yet): this version runs RWKV-7 only; the file can be downloaded for later.")
    print("`rwkv-tui models pull NAME` downloads one; `--model NAME` then loads it.")
    return 0


# ---------------------------------------------------------------------------- pull


def _pull(args: argparse.Namespace) -> int:
    from engine.downloads import SOURCE_LABELS, pull

    catalog = load_catalog()
    entry = catalog.get(args.name)
    if is_downloaded(entry):
        print(f"{entry.name} is already downloaded: {local_path(entry)}", file=sys.stderr)
        return 0
    resume = partial_bytes(entry)
    note = f", resuming at {human_bytes(resume)}" if resume else ""
    print(f"Downloading {entry.name} ({human_bytes(entry.size)}) from {SOURCE_LABELS[args.source]}{note}",
          file=sys.stderr)
    if not entry.runnable:
        print(f"note: this version of rwkv-tui cannot run {entry.architecture_label} models yet", file=sys.stderr)
    bar = ProgressBar(sys.stderr)
    try:
        path = pull(entry, args.source, progress=bar.update)
    except KeyboardInterrupt:
        bar.finish()
        print(f"rwkv-tui: stopped; `rwkv-tui models pull {entry.name}` resumes the download", file=sys.stderr)
        return 130
    finally:
        bar.finish()
    print(f"{entry.name}: verified, saved as {path}", file=sys.stderr)
    print(f"Use it with: rwkv-tui {'--music-model' if entry.kind == 'music' else '--model'} {entry.name}",
          file=sys.stderr)
    return 0


class ProgressBar:
    """A one-line progress bar redrawn in place on a terminal; plain lines every 10 % otherwise."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.drawn = False
        self.last_tenth = -1
        self.last_stage = ""

    def update(self, progress) -> None:  # noqa: ANN001 (engine.downloads.Progress)
        if self.tty:
            self._draw(progress)
            return
        tenth = int(progress.fraction * 10)
        if progress.stage != self.last_stage or tenth != self.last_tenth:
            self.last_stage, self.last_tenth = progress.stage, tenth
            print(f"{progress.stage} {progress.fraction * 100:3.0f} %  {human_bytes(progress.done)} of "
                  f"{human_bytes(progress.total)}", file=self.stream, flush=True)

    def _draw(self, progress) -> None:  # noqa: ANN001
        width = shutil.get_terminal_size((80, 20)).columns
        speed = f"  {human_bytes(int(progress.speed))}/s" if progress.speed else ""
        eta = ""
        if progress.speed and progress.stage == "downloading":
            seconds = int((progress.total - progress.done) / progress.speed)
            eta = f"  {time.strftime('%H:%M:%S', time.gmtime(seconds))} left"
        text = (f" {progress.fraction * 100:3.0f} %  {human_bytes(progress.done)} / {human_bytes(progress.total)}"
                f"{speed}{eta}  {progress.stage}")
        room = max(width - len(text) - 3, 10)
        filled = int(room * progress.fraction)
        line = f"[{'#' * filled}{'.' * (room - filled)}]{text}"
        self.stream.write("\r" + line[: width - 1])
        self.stream.flush()
        self.drawn = True

    def finish(self) -> None:
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()
            self.drawn = False


# ---------------------------------------------------------------------------- rm


def _rm(args: argparse.Namespace) -> int:
    from engine.downloads import remove

    entry = load_catalog().get(args.name)
    removed = remove(entry)
    if not removed:
        print(f"{entry.name} is not downloaded; nothing to delete", file=sys.stderr)
        return 0
    for path in removed:
        print(f"deleted {path}", file=sys.stderr)
    return 0
