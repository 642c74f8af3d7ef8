"""The full-screen app: header, the Chat / Music / State panes, status line and footer.

The app owns the :class:`~tui.worker.EngineWorker`. Widgets post :mod:`tui.messages` up to it; it
queues engine commands, and drains the engine's events into the panes. The engine wakes the UI with
one message when its outbox stops being empty; while a reply streams, the drains are paced (at most
30 a second, fewer when updates are costly: see :mod:`tui.pacing`), and the outbox merges the
deltas in between. So the UI's work depends on its update rate, never on how fast tokens come.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Iterable

import platformdirs
from textual import on, work
from textual.app import App, ComposeResult, SystemCommand
from textual.notifications import SeverityLevel
from textual.css.query import NoMatches
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import Footer, TabbedContent, TabPane

from engine.demo_models import suggested_sampling
from engine.errors import EngineError
from tui.actions import ACTIONS, bindings_for, effective_keys, format_keys
from tui.clipboard import copy_native
from tui.config import APP_NAME, DEFAULT_THEME, AppConfig, config_path, load_config, save_config
from tui.messages import CopyText, EngineReady, EngineRequest, RewindRequested, SettingsChanged, StopGeneration
from tui.pacing import DrainPacer
from tui.panes.chat import ChatPane
from tui.panes.music import MusicConfigChanged, MusicPane
from tui.panes.state import StatePane
from tui.protocol import (
    ChatSettings, ConversationInfo, Edit, Event, LoadModel, ModelLoaded, ModelLoadFailed, ModelLoading, ModelSummary,
    Notice, PromptRejected, Regenerate, ReplyDelta, ReplyFailed, ReplyFinished, Rewind, Role, Send, Stats,
    TranscriptReplaced, TranscriptTruncated, TurnStarted,
)
from tui.protocol import AutosaveSession, BranchesInfo, InspectorUpdate, ResumeSession, SessionAvailable, StateDiffReady
from tui.safe_text import plain_content
from tui.screens.help import HelpScreen
from tui.screens.model_picker import ModelChoice, ModelPicker
from tui.screens.path_prompt import PathPrompt
from tui.screens.resume_prompt import ResumePrompt
from tui.terminal_text import visible_controls
from tui.theming import load_themes, stylesheets
from tui.widgets.load_progress import LoadProgress
from tui.widgets.model_bar import ModelBar
from tui.widgets.status_line import StatusLine
from tui.signal_exit import SignalExit
from tui.worker import FINAL_SAVE_TIMEOUT, EngineWorker

#: Seconds between safety checks of the outbox (normally the engine's wake-up message comes first).
SAFETY_POLL = 1.0
#: GIL switch interval while the app runs. The engine thread releases the GIL many times per
#: token (every kernel call); with Python's default 5 ms, each time the UI thread holds the GIL the
#: engine may wait a full 5 ms to get it back, which cost 20-40 % of a 0.1B model's speed in
#: bench_ui_overhead.py. 0.2 ms keeps those waits negligible.
GIL_SWITCH_INTERVAL = 0.0002
#: Seconds to wait after the last settings change before writing the config file.
SAVE_DELAY = 0.5
PANES = ("chat", "music", "state")
#: Seconds the exit waits for the engine thread to take its last command (the final autosave).
ENGINE_EXIT_TIMEOUT = 10.0


@dataclass(frozen=True)
class LaunchOptions:
    """What the command line asked for. ``model`` None means the built-in demo models."""

    model: str | None = None
    music_model: str | None = None
    device: str = "auto"
    dtype: str | None = None
    tokenizer: str | None = None
    state: str | None = None
    config_path: Path | None = None
    #: Load the built-in demo models for roles without an explicit path.
    use_demo_models: bool = True
    #: Save the conversation on exit and offer to resume it next time (engine.session).
    autosave: bool = True
    #: How a time_state file given as ``state`` is read (engine.time_state.Orientation).
    state_orientation: str = "as-stored"

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "LaunchOptions":
        return cls(
            model=getattr(args, "model", None), music_model=getattr(args, "music_model", None),
            device=getattr(args, "device", "auto") or "auto", dtype=getattr(args, "dtype", None),
            tokenizer=getattr(args, "tokenizer", None), state=getattr(args, "state", None),
            autosave=not getattr(args, "no_autosave", False),
            state_orientation=getattr(args, "state_orientation", None) or "as-stored",
        )


def log_path() -> Path:
    return Path(platformdirs.user_state_dir(APP_NAME)) / "rwkv-tui.log"


class RwkvApp(App[int]):
    TITLE = "rwkv-tui"
    CSS_PATH = stylesheets()
    BINDINGS = bindings_for("app")
    NOTIFICATION_TIMEOUT = 6
    #: Start typing at once (otherwise the first focusable widget, the tab bar, gets the keys).
    AUTO_FOCUS = "#prompt"

    def __init__(self, options: LaunchOptions | None = None, *, handle_signals: bool = False) -> None:
        """``handle_signals``: end cleanly on SIGTERM and SIGHUP (the real app; tests running
        the app in-process leave the test runner's signals alone)."""
        super().__init__()
        self.options = options or LaunchOptions()
        self._signal_exit = SignalExit(
            self._request_exit_from_thread, self._save_without_ui,
            save_timeout=ENGINE_EXIT_TIMEOUT + FINAL_SAVE_TIMEOUT,
        ) if handle_signals else None
        self._loop: asyncio.AbstractEventLoop | None = None
        #: Kept at mount for the signal watchdog, which must not query the DOM from its thread.
        self._music_pane_for_shutdown: MusicPane | None = None
        #: One line each, printed on stderr once the terminal is restored (see run_app).
        self.exit_messages: list[str] = []
        self.config_file = self.options.config_path or config_path()
        loaded = load_config(self.config_file)
        self.config: AppConfig = loaded.config
        self._config_corrupt = loaded.corrupt
        self._startup_problems: list[str] = list(loaded.problems)
        self.chat_settings = ChatSettings(
            params=self.config.sampling, system=self.config.system_prompt, think=self.config.think,
        )
        themes, theme_problems = load_themes()
        self._startup_problems += theme_problems
        for theme in themes:
            self.register_theme(theme)
        if self.config.theme in self.available_themes:
            self.theme = self.config.theme
        else:
            self._startup_problems.append(f"{self.config_file}: unknown theme {self.config.theme!r}; using {DEFAULT_THEME}")
            self.theme = DEFAULT_THEME if DEFAULT_THEME in self.available_themes else "textual-dark"
        self.set_keymap(self.config.keymap)
        self.worker = EngineWorker(log_path=log_path(), autosave=self.options.autosave)
        self.worker.outbox.on_ready = self._engine_has_events
        #: At most one drain is scheduled at a time; the timer when it waits for the pacer.
        self._drain_pending = False
        self._drain_timer: Timer | None = None
        self._pacer = DrainPacer()
        self._save_timer: Timer | None = None
        #: Roles whose built-in demo model is being loaded (a missing demo is reported once).
        self._demo_roles: set[Role] = set()
        #: The chat runs with the demo model's suggested sampling (see _match_sampling_to).
        self._demo_sampling = False
        self._load_started: dict[Role, float] = {}

    # ------------------------------------------------------------------ layout

    def compose(self) -> ComposeResult:
        yield ModelBar(id="model-bar")
        with TabbedContent(id="panes", initial="chat"):
            with TabPane("Chat", id="chat"):
                yield ChatPane(self.chat_settings, id="chat-pane")
            with TabPane("Music", id="music"):
                yield MusicPane(id="music-pane")
            with TabPane("State", id="state"):
                yield StatePane(id="state-pane")
        yield LoadProgress(id="load-progress")
        yield StatusLine(id="status-line")
        yield Footer()

    @property
    def chat_pane(self) -> ChatPane:
        return self.query_one("#chat-pane", ChatPane)

    @property
    def music_pane(self) -> MusicPane:
        return self.query_one("#music-pane", MusicPane)

    @property
    def state_pane(self) -> StatePane:
        return self.query_one("#state-pane", StatePane)

    def on_mount(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._music_pane_for_shutdown = self.music_pane
        if self._signal_exit is not None:
            self._signal_exit.install()
        if self._startup_problems:
            # One notification, however many problems: the first line says what happened.
            more = len(self._startup_problems) - 1
            message = self._startup_problems[0] + (f" (+{more} more problem{'s' if more > 1 else ''})" if more else "")
            self.notify(message, title="Settings", severity="warning", timeout=10)
        self.theme_changed_signal.subscribe(self, self._theme_changed)
        self._previous_switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(GIL_SWITCH_INTERVAL)
        self.worker.start()
        self.set_interval(SAFETY_POLL, self._schedule_drain, name="engine-safety-poll")
        self._start_loads()
        self.chat_pane.prompt.focus()

    def _start_loads(self) -> None:
        o = self.options
        if o.model or o.use_demo_models:
            self._load("chat", o.model, demo_kinds=("chat",), state=o.state)
        else:
            self.query_one(ModelBar).set_status("chat", "none — Ctrl+O loads a .pth file")
        if o.music_model or o.use_demo_models:
            self._load("music", o.music_model, demo_kinds=("midi", "abc"))
        else:
            self.query_one(ModelBar).set_status("music", "none")
            self.music_pane.set_status("none loaded (Ctrl+Shift+O or --music-model PATH)")

    def _load(self, role: Role, path: str | None, demo_kinds: tuple[str, ...] = (), state: str | None = None) -> None:
        if path is None:
            self._demo_roles.add(role)
        else:
            self._demo_roles.discard(role)
        self._load_started[role] = time.perf_counter()
        self.query_one(ModelBar).set_status(role, "loading…")
        self.worker.submit(LoadModel(
            role, path, device=self.options.device, dtype=self.options.dtype,
            tokenizer=self.options.tokenizer if role == "chat" else None,
            demo_kinds=demo_kinds, state_path=state, state_orientation=self.options.state_orientation,
        ))

    async def on_unmount(self) -> None:
        if self._drain_timer is not None:
            self._drain_timer.stop()
        sys.setswitchinterval(getattr(self, "_previous_switch_interval", sys.getswitchinterval()))
        if self._save_timer is not None:
            self._save_timer.stop()
            self._save_config()
        if self._signal_exit is not None:
            self._signal_exit.unmounting()
        self._finish_engine()
        if self._signal_exit is not None:
            self._signal_exit.saved()

    def _finish_engine(self) -> None:
        """The final autosave and the engine's end; what went wrong goes to ``exit_messages``."""
        if self.options.autosave:
            # Queued behind whatever runs now (close() stops a reply first), so it saves the final state.
            self.worker.submit(AutosaveSession())
        ended = self.worker.close(timeout=ENGINE_EXIT_TIMEOUT)
        if self.options.autosave:
            problem = self.worker.autosave_problem
            if problem is not None:
                self.exit_messages.append(f"rwkv-tui: the conversation was not autosaved: {problem} "
                                          "(the previous autosave is kept)")
            elif not ended:
                self.exit_messages.append(
                    f"rwkv-tui: the engine did not stop within {ENGINE_EXIT_TIMEOUT:.0f} s, so the autosave "
                    "may miss the last moments (it holds the conversation as of its last completed change)"
                )

    # ------------------------------------------------------------------ signals (tui.signal_exit)

    def _request_exit_from_thread(self, status: int) -> None:
        """SIGTERM / SIGHUP: leave as Ctrl+Q does (called on the signal watchdog's thread)."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(partial(self.exit, None, status))

    def _save_without_ui(self) -> None:
        """The UI could not start its exit (its terminal is gone): save with the engine alone,
        silence the music, and say what went wrong where it can still be read."""
        try:
            music = self._music_pane_for_shutdown
            if music is not None:
                music.shutdown()  # threads and MIDI ports only: no widget is touched
        finally:
            self._finish_engine()
            print_exit_messages(self.exit_messages)

    # ------------------------------------------------------------------ engine → UI

    def _engine_has_events(self) -> None:
        """Called on the engine thread when its outbox stops being empty: wake the UI once."""
        self.post_message(EngineReady())

    @on(EngineReady)
    def _schedule_drain(self) -> None:
        """Drain now, or when the pacer allows while a reply streams (deltas merge meanwhile)."""
        if not len(self.worker.outbox):
            return
        busy = self.worker.busy
        if self._drain_pending:
            if busy or self._drain_timer is None:
                return
            # The reply ended while a paced drain was waiting: show the end now.
            self._drain_timer.stop()
            self._drain_timer = None
            self.call_later(self._drain_engine)
            return
        self._drain_pending = True
        delay = self._pacer.wait() if busy else 0.0
        if delay > 0:
            self._drain_timer = self.set_timer(delay, self._drain_engine, name="engine-drain")
        else:
            self.call_later(self._drain_engine)

    async def _drain_engine(self) -> None:
        self._drain_pending = False
        self._drain_timer = None
        streaming = self.worker.busy
        events = self.worker.drain()
        if not events:
            return
        try:
            with self.batch_update():
                for event in events:
                    if isinstance(event, TurnStarted):
                        self._pacer.reset()
                    await self.handle_engine_event(event)
        except NoMatches:
            return  # the app is shutting down and its widgets are gone
        if streaming:
            self._pacer.updated()

    async def handle_engine_event(self, event: Event) -> None:
        chat = self.chat_pane
        if isinstance(event, ReplyDelta):
            await chat.on_reply_delta(event)
        elif isinstance(event, Stats):
            self.query_one(StatusLine).show(event)
        elif isinstance(event, TurnStarted):
            await chat.on_turn_started(event)
        elif isinstance(event, ReplyFinished):
            await chat.on_reply_finished(event)
        elif isinstance(event, ReplyFailed):
            await chat.on_reply_failed(event)
        elif isinstance(event, PromptRejected):
            chat.on_prompt_rejected(event)
        elif isinstance(event, TranscriptTruncated):
            await chat.on_transcript_truncated(event)
        elif isinstance(event, TranscriptReplaced):
            await chat.on_transcript_replaced(event)
        elif isinstance(event, ConversationInfo):
            self.state_pane.set_conversation(event)
            if not chat.generating:
                self.query_one(StatusLine).set_state_size(event.state_bytes, event.tokens_seen)
        elif isinstance(event, ModelLoading):
            self.query_one(LoadProgress).show_loading(event)
        elif isinstance(event, ModelLoaded):
            self._model_loaded(event)
        elif isinstance(event, ModelLoadFailed):
            self._model_load_failed(event)
        elif isinstance(event, Notice):
            self.notify(event.message, severity=event.severity, timeout=8 if event.severity == "error" else 5)
        elif isinstance(event, InspectorUpdate):
            self.state_pane.on_inspector_update(event)
        elif isinstance(event, StateDiffReady):
            self.state_pane.show_diff(event)
            self.action_show_pane("state")
        elif isinstance(event, BranchesInfo):
            self.state_pane.set_branches(event)
        elif isinstance(event, SessionAvailable):
            self._offer_resume(event)

    def _offer_resume(self, event: SessionAvailable) -> None:
        """Ask once, at start, while nothing was typed or sent yet."""
        if not self.options.autosave:
            return
        if self.chat_pane.turn_count or self.chat_pane.prompt.text.strip():
            # Busy already: no dialog in the way, just say where it is.
            self.notify(f"An autosaved conversation ({event.description}) can be resumed: U in the State pane.",
                        timeout=8)
            return
        model = self.state_pane.model
        name = model.name if model is not None else "this model"

        def chosen(resume: bool | None) -> None:
            if resume:
                self.worker.submit(ResumeSession(event.path))

        self.push_screen(ResumePrompt(name, event.description), chosen)

    @on(TabbedContent.TabActivated, "#panes")
    def _pane_activated(self, event: TabbedContent.TabActivated) -> None:
        # Per-token state measurements only while someone looks at them: generation pays nothing otherwise.
        self.worker.inspector.watching = event.pane.id == "state"

    def action_state(self, what: str) -> None:
        """State actions reachable from other panes (save/load from the chat)."""
        pane = self.state_pane
        action = {"save": pane.action_save, "load": pane.action_load}.get(what)
        if action is not None:
            action()

    def _model_loaded(self, event: ModelLoaded) -> None:
        s = event.summary
        self.query_one(LoadProgress).hide()
        self.query_one(ModelBar).set_model(s)
        if s.role == "chat":
            self.chat_pane.has_model = True
            self._match_sampling_to(s)
            self.state_pane.set_model(s)
            self.query_one(StatusLine).set_state_size(s.state_bytes, 0)
        else:
            self.music_pane.set_model(s)
        seconds = time.perf_counter() - self._load_started.get(s.role, time.perf_counter())
        if not s.demo:
            self.notify(f"{s.role.capitalize()} model {s.name} loaded on {s.device} ({s.dtype}) in {seconds:.1f} s", timeout=4)

    def _match_sampling_to(self, summary: ModelSummary) -> None:
        """Use a demo model's own sampling while it is loaded, the user's defaults otherwise.

        The byte-level chat demo answers correctly only when decoded greedily without penalties
        (its sidecar says so); general chat defaults would garble it. The user's configured
        sampling is not overwritten and comes back when a real model is loaded.
        """
        params = suggested_sampling(summary.path) if summary.demo else None
        if params is None and not self._demo_sampling:
            return
        self._demo_sampling = params is not None
        settings = replace(self.chat_settings, params=params or self.config.sampling)
        if settings != self.chat_settings:
            self.chat_settings = settings
            self.chat_pane.apply_settings(settings)

    def _model_load_failed(self, event: ModelLoadFailed) -> None:
        self.query_one(LoadProgress).hide()
        bar = self.query_one(ModelBar)
        loaded = bar.chat if event.role == "chat" else bar.music
        if loaded is None:
            bar.set_status(event.role, "none — Ctrl+O loads a .pth file" if event.role == "chat" else "none")
        if event.role == "music":
            self.music_pane.set_status(f"none loaded ({event.message})")
        demo = event.role in self._demo_roles
        self._demo_roles.discard(event.role)
        if demo and event.role == "music":
            # A missing music demo shows in the header and the music pane; the one notification
            # about missing demo models comes from the chat side.
            return
        self.notify(event.message, title=f"Could not load the {event.role} model", severity="error", timeout=10)

    # ------------------------------------------------------------------ UI → engine

    @on(EngineRequest)
    def _engine_request(self, message: EngineRequest) -> None:
        if isinstance(message.command, (Send, Regenerate, Edit)):
            self._pacer.reset()  # the new reply's first words show at once
        self.worker.submit(message.command)

    @on(StopGeneration)
    def _stop_generation(self) -> None:
        self.worker.stop()

    @on(RewindRequested)
    def _rewind(self, message: RewindRequested) -> None:
        if self.chat_pane.generating:
            self.notify("Stop the reply being generated first (Esc).", severity="warning", timeout=3)
            return
        self.worker.submit(Rewind(message.index))
        self.notify(f"Rewound to the state before turn {message.index + 1}.", timeout=3)

    @on(CopyText)
    def _copy(self, message: CopyText) -> None:
        if not message.text:
            self.notify(f"The {message.what} is empty.", severity="warning", timeout=3)
            return
        self.copy_to_clipboard(message.text)  # OSC 52: reaches the terminal's clipboard, even over SSH
        self._copy_native(message.text, message.what)

    @work(thread=True, group="clipboard", exit_on_error=False)
    def _copy_native(self, text: str, what: str) -> None:
        tool = copy_native(text)
        via = f"terminal and {tool}" if tool else "terminal (OSC 52)"
        self.call_from_thread(self.notify, f"Copied the {what} ({len(text):,} characters) via the {via}.", timeout=3)

    @on(SettingsChanged)
    def _settings_changed(self, message: SettingsChanged) -> None:
        self.chat_settings = message.settings
        # Sampling edited for the demo model is kept for this session only: saving it would
        # make the demo's greedy decoding everyone's default for real models.
        sampling = self.config.sampling if self._demo_sampling else message.settings.params
        self.config = replace(
            self.config, sampling=sampling, system_prompt=message.settings.system,
            think=message.settings.think,
        )
        self._schedule_save()

    @on(MusicConfigChanged)
    def _music_config_changed(self, message: MusicConfigChanged) -> None:
        self.config.extra[message.section] = message.data
        self._schedule_save()

    def _theme_changed(self, theme: object) -> None:
        name = getattr(theme, "name", None)
        if isinstance(name, str) and name != self.config.theme:
            self.config = replace(self.config, theme=name)
            self._schedule_save()

    def _schedule_save(self) -> None:
        if self._save_timer is not None:
            self._save_timer.stop()
        self._save_timer = self.set_timer(SAVE_DELAY, self._save_config, name="save-config")

    def _save_config(self) -> None:
        self._save_timer = None
        try:
            save_config(self.config, self.config_file, keep_corrupt=self._config_corrupt)
            self._config_corrupt = False
        except OSError as exc:
            self.notify(f"{self.config_file}: settings not saved ({exc.strerror or exc})", severity="warning")
        except EngineError as exc:
            self.notify(f"settings not saved: {exc}", severity="warning")

    # ------------------------------------------------------------------ actions

    def action_help(self) -> None:
        if isinstance(self.screen, HelpScreen):
            self.screen.dismiss(None)
            return
        self.push_screen(HelpScreen(dict(self.config.keymap), str(self.config_file)))

    def action_show_pane(self, pane: str) -> None:
        if pane not in PANES:
            return
        self.query_one("#panes", TabbedContent).active = pane
        # Focus must follow: a focused widget left in a hidden pane would switch the tabs back.
        if pane == "chat":
            self.chat_pane.prompt.focus()
        elif pane == "state":
            self.state_pane.query_one("#snapshots").focus()
        else:
            focusable = [w for w in self.music_pane.query("*") if w.focusable]
            self.set_focus(focusable[0] if focusable else None)

    def action_load_model(self) -> None:
        self._ask_for_model("chat")

    def action_load_music_model(self) -> None:
        self._ask_for_model("music")

    def _ask_for_model(self, role: Role) -> None:
        note = ""
        if role == "chat" and self.chat_pane.turn_count:
            note = (
                "Loading a new chat model starts a new conversation; this one stays autosaved for its model "
                "(load that model again to resume it)." if self.options.autosave else
                "Loading a new chat model starts a new conversation (export this one first: Ctrl+S)."
            )
        start = str(Path.cwd()) + "/"

        def chosen(path: str | None, role: Role = role) -> None:
            if path:
                if role == "chat" and self.chat_pane.generating:
                    self.worker.stop()
                self._load(role, path)

        title = "Load a chat model (.pth)" if role == "chat" else "Load a music model (.pth, ABC or MIDI tokens)"

        def picked(choice: ModelChoice | None) -> None:
            if choice is not None and choice.path is None:  # "a file…"
                # .safetensors: saved by `rwkv-tui quantize` (or a plain checkpoint); .gguf: llama.cpp's rwkv7
                self.push_screen(PathPrompt(title, start, mode="open", suffixes=(".pth", ".safetensors", ".gguf"),
                                            note=note), chosen)
            elif choice is not None:
                chosen(choice.path, choice.role)

        self.push_screen(ModelPicker(role, device=self.options.device, dtype=self.options.dtype, note=note), picked)

    # ------------------------------------------------------------------ notifications

    def notify(
        self,
        message: str,
        *,
        title: str = "",
        severity: SeverityLevel = "information",
        timeout: float | None = None,
        markup: bool = True,
    ) -> None:
        """Every notification in this app is plain text, whatever ``markup`` says.

        Messages quote file names, model names, error text and the model's own words; one ``[/]``
        among them raised MarkupError and a control character reached the terminal. Widgets'
        ``notify`` always passes ``markup=True``, so the choice is made here, once.
        """
        super().notify(visible_controls(str(message)), title=visible_controls(str(title)), severity=severity,
                       timeout=timeout, markup=False)

    # ------------------------------------------------------------------ command palette

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        ours = {"Quit", "Theme", "Keys"}
        for command in super().get_system_commands(screen):
            if command.title not in ours:
                yield command
        yield SystemCommand("Theme", "Pick a colour theme (saved for next time)", self.action_change_theme)
        for spec in ACTIONS:
            if not spec.palette or spec.id == "app.theme":
                continue
            keys = format_keys(effective_keys(spec.id, self.config.keymap))
            if spec.scope == "state":
                # Shown where it acts: on the state pane's selected snapshot.
                yield SystemCommand(f"State: {spec.palette_title}", plain_content(f"{spec.help} ({keys})"),
                                    partial(self._run_in_state_pane, spec.action))
                continue
            if spec.scope == "music":
                # Music actions act on the music pane, so show it.
                yield SystemCommand(f"Music: {spec.palette_title}", plain_content(f"{spec.help} ({keys})"),
                                    partial(self._run_music_action, spec.action))
                continue
            title = spec.palette_title if spec.scope == "app" else f"Chat: {spec.palette_title}"
            target = self if spec.scope == "app" else self.chat_pane
            yield SystemCommand(title, plain_content(f"{spec.help} ({keys})"), partial(self.run_action, spec.action, target))

    async def _run_in_state_pane(self, action: str) -> None:
        self.action_show_pane("state")
        await self.run_action(action, self.state_pane)

    async def _run_music_action(self, action: str) -> None:
        self.action_show_pane("music")
        await self.run_action(action, self.music_pane)


def run_app(args: argparse.Namespace) -> int:
    """Run the full-screen app with the command line's choices; returns the exit status."""
    app = RwkvApp(LaunchOptions.from_args(args), handle_signals=True)
    app.run()
    print_exit_messages(app.exit_messages)
    code = int(app.return_code or 0)
    # A conversation that could not be saved is a failure, even after a clean quit.
    return 1 if code == 0 and app.exit_messages else code


def print_exit_messages(lines: list[str]) -> None:
    """On stderr, once the terminal is back (or gone: then there is nobody to tell)."""
    for line in lines:
        try:
            print(line, file=sys.stderr, flush=True)
        except (OSError, ValueError):
            break
