"""Ctrl+O: pick a model. Downloaded catalog models first, then the rest of the catalog, then
"a file…" (the path dialog).

Enter on a model that is not here downloads it on a thread of its own: the chat goes on
meanwhile, a progress bar shows under the panes (and in this dialog while it is open), and
closing the dialog does not stop it. If the dialog is still open when the file is in and
verified, the model is loaded into its pane (chat models into Chat, music models into Music);
otherwise a notification says it is ready. Widgets are only ever touched on the UI thread: the
download thread writes its progress into a :class:`DownloadJob`, and a UI timer reads it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from weakref import WeakKeyDictionary

from rich.text import Text
from textual import on
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.css.query import NoMatches
from textual.screen import ModalScreen
from textual.timer import Timer
from textual.widgets import Label, OptionList, ProgressBar, Static
from textual.widgets.option_list import Option
from textual.worker import get_current_worker

from engine.catalog import (
    CatalogEntry, CatalogError, is_downloaded, load_catalog, local_path, partial_bytes,
)
from engine.downloads import SOURCE_LABELS, DownloadStopped, Progress, pull
from engine.errors import EngineError
from engine.fit import MemoryBudget, memory_budget, needed_bytes, verdict
from engine.units import human_bytes
from tui.failures import report_failure
from tui.protocol import Role
from tui.widgets.progress_line import ProgressLine

#: Seconds between progress refreshes on the UI thread.
REFRESH = 0.2
FILE_OPTION = "file"
_SOURCES = ("huggingface", "modelscope")


@dataclass(frozen=True)
class ModelChoice:
    """What the picker was closed with: a file to load into ``role``, or ``path`` None for
    "let me type a path"."""

    role: Role
    path: str | None


# ---------------------------------------------------------------------------- downloads


@dataclass
class DownloadJob:
    """One download. The thread sets progress/state/message/path; the UI thread only reads them."""

    entry: CatalogEntry
    source: str
    stop: threading.Event = field(default_factory=threading.Event)
    progress: Progress | None = None
    state: Literal["running", "done", "failed", "stopped"] = "running"
    message: str = ""
    path: Path | None = None

    @property
    def fraction(self) -> float:
        return self.progress.fraction if self.progress is not None else 0.0


class DownloadBar(ProgressLine):
    """One line under the panes while downloads run: which model, how far, how fast."""

    def __init__(self) -> None:
        super().__init__(label_id="download-label", bar_id="download-bar")

    def show_jobs(self, jobs: list[DownloadJob]) -> None:
        if not jobs:
            self.hide()
            return
        job = jobs[0]
        more = f" (+{len(jobs) - 1} more)" if len(jobs) > 1 else ""
        self.show(Text(f"Downloading {job.entry.name}{more}: {_describe(job)}"), job.fraction)


class ModelDownloads:
    """The downloads of one app. Started from the picker, they outlive it."""

    _of: "WeakKeyDictionary[App, ModelDownloads]" = WeakKeyDictionary()

    @classmethod
    def of(cls, app: App) -> "ModelDownloads":
        if app not in cls._of:
            cls._of[app] = cls(app)
        return cls._of[app]

    def __init__(self, app: App) -> None:
        self.app = app
        self.jobs: dict[str, DownloadJob] = {}
        #: The picker waiting to load a model when its download is done (name → screen).
        self.waiting: dict[str, ModelPicker] = {}
        self._timer: Timer | None = None

    def running(self) -> list[DownloadJob]:
        return [job for job in self.jobs.values() if job.state == "running"]

    def job(self, name: str) -> DownloadJob | None:
        job = self.jobs.get(name)
        return job if job is not None and job.state == "running" else None

    def start(self, entry: CatalogEntry, source: str) -> DownloadJob:
        running = self.job(entry.name)
        if running is not None:
            return running
        job = DownloadJob(entry, source)
        self.jobs[entry.name] = job
        self.app.run_worker(lambda: self._download(job), thread=True, group="model-download",
                            name=f"download {entry.name}", exit_on_error=False)
        if self._timer is None:
            self._timer = self.app.set_interval(REFRESH, self._tick, name="model-downloads")
        self._tick()
        return job

    def stop(self, name: str) -> None:
        job = self.job(name)
        if job is not None:
            job.stop.set()

    def _download(self, job: DownloadJob) -> None:
        """On the worker thread: no widget is touched here."""
        worker = get_current_worker()

        def report(progress: Progress) -> None:
            job.progress = progress

        try:
            job.path = pull(job.entry, job.source, progress=report,  # type: ignore[arg-type]
                            should_stop=lambda: job.stop.is_set() or worker.is_cancelled)
            job.state = "done"
        except DownloadStopped as exc:
            job.message, job.state = str(exc), "stopped"
        except EngineError as exc:
            job.message, job.state = str(exc), "failed"
        except Exception as exc:  # a bug must reach the user as one line, not kill the app
            job.message, job.state = report_failure(exc, "download failure", None), "failed"

    def _tick(self) -> None:
        """On the UI thread: show progress, and finish the downloads that ended."""
        running = self.running()
        self._bar().show_jobs(running)
        for name, job in list(self.jobs.items()):
            if job.state == "running":
                continue
            del self.jobs[name]
            self._finished(job)
        if not running and not self.jobs and self._timer is not None:
            self._timer.stop()
            self._timer = None

    def _finished(self, job: DownloadJob) -> None:
        picker = self.waiting.pop(job.entry.name, None)
        name = job.entry.name
        if job.state == "done":
            if picker is not None and picker.is_current and picker.load_downloaded(job.entry):
                return
            self.app.notify(f"{name} is downloaded and verified ({human_bytes(job.entry.size)}): "
                            f"Ctrl+O loads it.", title="Download complete", timeout=8)
        elif job.state == "stopped":
            self.app.notify(job.message, title="Download stopped", timeout=6)
        else:
            self.app.notify(job.message, title=f"Could not download {name}", severity="error", timeout=12)
        if picker is not None and picker.is_current:
            picker.refresh_entries()

    def _bar(self) -> DownloadBar:
        base = self.app.screen_stack[0]
        try:
            return base.query_one(DownloadBar)
        except NoMatches:
            bar = DownloadBar()
            footers = base.query("Footer")
            base.mount(bar, before=footers.first() if footers else None)
            return bar


def _describe(job: DownloadJob) -> str:
    p = job.progress
    if p is None:
        return "starting"
    if p.stage == "checking":
        return f"checking the {human_bytes(p.total)} kept so far, {p.fraction * 100:.0f} %"
    if p.stage == "verifying":
        return "verifying the checksum"
    speed = f", {human_bytes(int(p.speed))}/s" if p.speed else ""
    return f"{p.fraction * 100:.0f} % of {human_bytes(p.total)}{speed}"


# ---------------------------------------------------------------------------- the dialog


class ModelPicker(ModalScreen[ModelChoice | None]):
    """Dismisses with a :class:`ModelChoice`, or None when closed."""

    BINDINGS = [
        Binding("escape", "close", "Close", id="dialog.cancel"),
        Binding("s", "toggle_source", "Source", id="picker.source"),
        Binding("x", "stop_download", "Stop download", id="picker.stop"),
    ]

    DEFAULT_CSS = """
    ModelPicker { align: center middle; }
    ModelPicker > Vertical {
        width: 110;
        max-width: 95%;
        height: auto;
        max-height: 90%;
        padding: 1 2;
        border: thick $primary 70%;
        background: $surface;
    }
    ModelPicker .dialog-title { text-style: bold; margin-bottom: 1; }
    ModelPicker OptionList { height: auto; max-height: 24; }
    ModelPicker #picker-detail { margin-top: 1; height: auto; }
    ModelPicker #picker-progress { height: 1; display: none; }
    ModelPicker #picker-progress.-active { display: block; }
    ModelPicker #picker-progress > Label { width: auto; margin-right: 2; }
    ModelPicker #picker-progress > ProgressBar { width: 1fr; }
    ModelPicker #picker-note { color: $text-muted; height: auto; margin-top: 1; }
    """

    def __init__(self, role: Role, *, device: str = "auto", dtype: str | None = None, note: str = "") -> None:
        super().__init__()
        self.role = role
        self.device = device
        self.dtype = dtype
        self.note = note
        self.source = "huggingface"
        self.entries: dict[str, CatalogEntry] = {}
        self.catalog_problem = ""
        self.budget: MemoryBudget | None = None
        self._name_width = 0

    # -------------------------------------------------------------- layout

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static("Load a model", classes="dialog-title")
            yield OptionList(id="models")
            yield Static("", id="picker-detail")
            with Horizontal(id="picker-progress"):
                yield Label("", id="picker-progress-label")
                yield ProgressBar(total=100, show_eta=False, id="picker-progress-bar")
            yield Static("", id="picker-note")

    def on_mount(self) -> None:
        try:
            self.budget = memory_budget(self.device, self.dtype)
        except EngineError as exc:  # a bad --device/--dtype: the load will say so too
            self.catalog_problem = str(exc)
        self.refresh_entries(initial=True)
        self.set_interval(REFRESH, self._refresh_progress, name="picker-progress")
        self.query_one(OptionList).focus()

    @property
    def downloads(self) -> ModelDownloads:
        return ModelDownloads.of(self.app)

    def refresh_entries(self, initial: bool = False) -> None:
        """(Re)build the list: what is downloaded, what is not, and the file option."""
        try:
            catalog = load_catalog()
            entries = [e for e in catalog.entries if e.kind in ("chat", "music")]
        except CatalogError as exc:
            entries, self.catalog_problem = [], str(exc)
        self.entries = {e.name: e for e in entries}
        self._name_width = max((len(e.name) for e in entries), default=0)
        here = [e for e in entries if is_downloaded(e)]
        missing = [e for e in entries if not is_downloaded(e)]
        options: list[Option | None] = []
        if here:
            options.append(Option(Text("Downloaded", style="bold"), disabled=True))
            options += [Option(self._prompt(e), id=f"model:{e.name}") for e in here]
        if missing:
            options.append(Option(Text("Catalog (Enter downloads)", style="bold"), disabled=True))
            options += [Option(self._prompt(e), id=f"model:{e.name}") for e in missing]
        options.append(Option(Text("A file…  (type the path of a .pth)"), id=FILE_OPTION))
        listing = self.query_one(OptionList)
        previous = listing.highlighted_option.id if listing.highlighted_option is not None else None
        listing.set_options(options)
        target = previous if not initial else self._first_of_role(here + missing)
        if target is not None:
            try:
                listing.highlighted = listing.get_option_index(target)
            except Exception:  # the option went away
                listing.highlighted = None
        if listing.highlighted is None:
            listing.action_first()
        self._update_note()
        self._show_detail()

    def _first_of_role(self, entries: list[CatalogEntry]) -> str:
        for entry in entries:
            if entry.kind == self.role:
                return f"model:{entry.name}"
        return FILE_OPTION

    def _prompt(self, entry: CatalogEntry) -> Text:
        text = Text()
        text.append(entry.name.ljust(self._name_width), style="bold")
        text.append(f"  {entry.kind:<5}  {human_bytes(entry.size):>8}", style="dim")
        job = self.downloads.job(entry.name)
        if job is not None:
            text.append(f"  downloading {job.fraction * 100:.0f} %", style="bold")
        elif not is_downloaded(entry) and partial_bytes(entry):
            text.append(f"  {partial_bytes(entry) * 100 // entry.size} % kept, Enter resumes")
        if not entry.runnable:
            text.append(f"  {entry.architecture_label}: not runnable yet", style="italic")
        elif self.budget is not None:
            fit = verdict(entry, self.budget)
            if fit != "fits":
                text.append(f"  {fit} for {self.budget.kind}", style="italic")
        return text

    def _update_note(self) -> None:
        lines = []
        if self.catalog_problem:
            lines.append(self.catalog_problem)
        if self.note:
            lines.append(self.note)
        lines.append(f"Enter loads or downloads · s: download from {SOURCE_LABELS[self.source]} "
                     f"· x stops a download · Esc closes (downloads go on)")
        self.query_one("#picker-note", Static).update(Text("\n".join(lines)))

    def _highlighted_entry(self) -> CatalogEntry | None:
        option = self.query_one(OptionList).highlighted_option
        if option is None or option.id is None or not option.id.startswith("model:"):
            return None
        return self.entries.get(option.id.removeprefix("model:"))

    @on(OptionList.OptionHighlighted)
    def _show_detail(self) -> None:
        entry = self._highlighted_entry()
        detail = self.query_one("#picker-detail", Static)
        if entry is None:
            detail.update(Text("Open any RWKV-7 .pth file" if self._is_file_highlighted() else ""))
            return
        lines = [entry.description]
        if self.budget is not None and entry.runnable:
            need = needed_bytes(entry, self.budget.dtype)
            lines.append(f"Needs about {human_bytes(need)} of {human_bytes(self.budget.total)} {self.budget.kind} "
                         f"({human_bytes(self.budget.available)} free) in {self.budget.dtype}: "
                         f"{verdict(entry, self.budget)}")
        lines.append(str(local_path(entry)) if is_downloaded(entry)
                     else f"{entry.file} from {self._source_for(entry)}")
        detail.update(Text("\n".join(lines)))

    def _is_file_highlighted(self) -> bool:
        option = self.query_one(OptionList).highlighted_option
        return option is not None and option.id == FILE_OPTION

    def _source_for(self, entry: CatalogEntry) -> str:
        mirror = entry.mirror(self.source)  # type: ignore[arg-type]
        if mirror is None:
            return f"{SOURCE_LABELS[self.source]}: no copy in the catalog (s switches the source)"
        return f"{SOURCE_LABELS[self.source]} ({mirror.repo})"

    def _refresh_progress(self) -> None:
        """Progress of the highlighted model's download (or the first one running), and the list's
        per-model percentages."""
        entry = self._highlighted_entry()
        job = (self.downloads.job(entry.name) if entry is not None else None) or next(
            iter(self.downloads.running()), None)
        row = self.query_one("#picker-progress", Horizontal)
        if job is None:
            row.remove_class("-active")
        else:
            row.add_class("-active")
            self.query_one("#picker-progress-label", Label).update(Text(f"{job.entry.name}: {_describe(job)}"))
            self.query_one("#picker-progress-bar", ProgressBar).update(total=100, progress=round(job.fraction * 100, 1))
        listing = self.query_one(OptionList)
        for job in self.downloads.running():
            option_id = f"model:{job.entry.name}"
            try:
                listing.replace_option_prompt(option_id, self._prompt(job.entry))
            except Exception:  # not listed (another catalog)
                continue

    # -------------------------------------------------------------- actions

    @on(OptionList.OptionSelected)
    def _selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        if event.option_id == FILE_OPTION:
            self.dismiss(ModelChoice(self.role, None))
            return
        entry = self.entries.get((event.option_id or "").removeprefix("model:"))
        if entry is None:
            return
        if is_downloaded(entry):
            self.dismiss(ModelChoice(_role_of(entry), str(local_path(entry))))
            return
        if entry.mirror(self.source) is None:  # type: ignore[arg-type]
            self.notify(f"The catalog knows no {SOURCE_LABELS[self.source]} copy of {entry.name}: "
                        f"s switches the source.", severity="warning", timeout=5)
            return
        self.downloads.start(entry, self.source)
        self.downloads.waiting[entry.name] = self
        self.refresh_entries()

    def load_downloaded(self, entry: CatalogEntry) -> bool:
        """A download this dialog started is done while it is still open: load the model."""
        if not is_downloaded(entry):
            return False
        self.dismiss(ModelChoice(_role_of(entry), str(local_path(entry))))
        return True

    def action_toggle_source(self) -> None:
        self.source = _SOURCES[(_SOURCES.index(self.source) + 1) % len(_SOURCES)]
        self._update_note()
        self._show_detail()

    def action_stop_download(self) -> None:
        entry = self._highlighted_entry()
        if entry is not None and self.downloads.job(entry.name) is not None:
            self.downloads.stop(entry.name)
            self.downloads.waiting.pop(entry.name, None)

    def action_close(self) -> None:
        for name, picker in list(self.downloads.waiting.items()):
            if picker is self:
                del self.downloads.waiting[name]
        self.dismiss(None)


def _role_of(entry: CatalogEntry) -> Role:
    return "music" if entry.kind == "music" else "chat"
