"""The music pane: generate with the music model, watch and hear the notes as they are written.

Layout: the piano roll and the token / ABC text side by side, the settings panel on the right,
the transport (keys, tempo, volume, MIDI port picker) underneath, and a line about the model.

Who does what:

* the music thread (:class:`~tui.music_worker.MusicWorker`, see its docstring for why it is not
  the engine thread) writes the piece and feeds the player directly;
* the :class:`~engine.music.player.Player` thread plays it to the chosen MIDI port on absolute
  deadlines; it starts silent and plays "nowhere" until a port is chosen, so the playhead works
  without a synthesizer;
* this pane drains the music thread's merging outbox and polls the player's position on one
  timer (15 Hz, paused while nothing happens; the music thread's first event after a quiet spell
  wakes it with a single message), so the UI's work never grows with the token rate.

Everything that ends the sound goes through the player, which silences the synth thoroughly;
unmounting the pane (which happens when the app exits) closes the player and the music thread.
Settings, the chosen port, tempo and volume persist in the ``music`` section of the config file.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import BindingType
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.timer import Timer
from textual.widgets import Input, Log, Static

from engine import EngineError
from engine.music.errors import MusicError
from engine.music.player import Player, PlayerState
from engine.music.ports import PortChoice, PortListing, list_output_ports
from tui.actions import bindings_for, effective_keys, format_keys, spec
from tui.music_protocol import (
    MusicFailed, MusicFinished, MusicPiece, MusicPreview, MusicProgress, MusicRequest, MusicStarted,
)
from tui.music_settings import MusicSection, MusicSettings
from tui.music_worker import STOPPED_BEFORE_START, MusicWorker
from tui.pacing import DrainPacer
from tui.protocol import ModelSummary
from tui.safe_text import plain
from tui.screens.path_prompt import PathPrompt
from tui.terminal_text import visible_controls
from tui.widgets.model_bar import describe
from tui.widgets.music_settings_panel import CONTINUE_SUFFIXES, MusicSettingsPanel
from tui.widgets.piano_roll import PianoRoll
from tui.widgets.transport import Transport, format_time

MODES = {"midi": "MIDI tokens (live playback)", "abc": "ABC notation (converted with abc2midi)"}
#: Seconds between UI updates while music is written or played, at best (15 Hz) …
TICK = 1 / 15
#: … and at worst, when updates are costly (each update costs the music thread GIL time).
MAX_TICK = 0.25
#: Share of one core the pane's updates may use while music is written or played.
UI_BUDGET = 0.08
#: Seconds between appends to the token / ABC text while music is written.
TEXT_INTERVAL = 0.25
#: Seconds to let the silencing messages reach the synthesizer before the port closes at exit.
EXIT_FLUSH_SECONDS = 0.1
#: The config file's section for this pane.
CONFIG_SECTION = "music"
#: Keys named in the empty text view (with the user's remappings).
HINT_ACTIONS = ("music.generate", "music.play_pause", "music.stop", "music.replay", "music.export_mid",
                "music.continue")
EXPORT_FORMATS = {"mid": "MIDI file", "abc": "ABC tune", "txt": "token text", "wav": "audio (FluidSynth)"}


class MusicConfigChanged(Message):
    """The pane's part of the config file changed (the app saves it, debounced)."""

    def __init__(self, section: str, data: dict[str, Any]) -> None:
        super().__init__()
        self.section = section
        self.data = data


class _MusicWake(Message):
    """The music thread put events into an empty outbox (posted from that thread)."""


class MusicPane(Vertical):
    BINDINGS: ClassVar[list[BindingType]] = bindings_for("music")

    DEFAULT_CSS = """
    MusicPane { height: 1fr; }
    MusicPane #music-main { height: 1fr; }
    MusicPane .region { border: round $panel-lighten-2; border-title-color: $primary; }
    MusicPane #roll-region { width: 1fr; }
    MusicPane #text-region { width: 30; }
    MusicPane #music-text { height: 1fr; background: $surface; scrollbar-size-vertical: 1; }
    MusicPane Transport { margin: 0 1; }
    MusicPane Transport #play_pause { width: 11; }  /* room for "❚❚ Pause" on one line */
    MusicPane #music-model { height: 1; color: $text-muted; padding: 0 1; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.model: ModelSummary | None = None
        self.status = "loading the music model…"
        self.settings = MusicSettings()
        #: The music section as read, with the keys this version does not use (saved back as written).
        self._section = MusicSection()
        self._config_problems: list[str] = []
        self._port: PortChoice | None = None
        self._tempo = self._volume = 1.0
        #: The last finished (or stopped) piece, what exports save.
        self.piece: MusicPiece | None = None
        self.run = 0
        self.generating = False
        self.player: Player | None = None
        self.worker: MusicWorker | None = None
        self._ticker: Timer | None = None
        self._ticking = False
        #: Spaces updates by what they cost the UI thread (rendering included).
        self._pacer = DrainPacer(budget=UI_BUDGET, min_interval=TICK, max_interval=MAX_TICK)
        #: Text not yet shown, and when the text view was last appended to.
        self._pending_text: list[str] = []
        self._text_flushed = 0.0
        self._player_errors: deque[str] = deque()
        #: Ports open again after a fault (the player reopens a lost port at the next piece).
        self._ports_back: deque[str] = deque()
        self._progress = ""
        self._run_mode = self.settings.mode
        #: Whether the user was told once that nothing is heard without a port.
        self._told_silent = False

    # ------------------------------------------------------------------ layout & lifetime

    def _load_config(self) -> None:
        """This pane's section of the app's config file (bad fields fall back, with a message)."""
        config = getattr(self.app, "config", None)
        source = f"{getattr(self.app, 'config_file', 'config')}: music"
        section, self._config_problems = MusicSection.parse(getattr(config, "extra", {}).get(CONFIG_SECTION), source)
        self._section = section
        self.settings, self._port, self._tempo, self._volume = section.settings, section.port, section.tempo, section.volume

    def compose(self) -> ComposeResult:
        self._load_config()
        with Horizontal(id="music-main"):
            roll_region = Vertical(PianoRoll(id="piano-roll"), id="roll-region", classes="region")
            roll_region.border_title = "Piano roll"
            yield roll_region
            text_region = Vertical(Log(id="music-text", highlight=False), id="text-region", classes="region")
            text_region.border_title = "Tokens"
            yield text_region
            yield MusicSettingsPanel(self.settings, id="music-settings")
        transport = Transport(port=self._port, lister=_list_ports, id="transport")
        transport.set_reactive(Transport.tempo, self._tempo)
        transport.set_reactive(Transport.volume, self._volume)
        yield transport
        yield Static(plain(self._model_text()), id="music-model")

    def on_mount(self) -> None:
        from tui.app import log_path  # the app imports this module

        self.player = Player(on_error=self._player_error, on_reconnect=self._player_reconnected)
        self.player.tempo, self.player.velocity_scale = self._tempo, self._volume
        self.worker = MusicWorker(self._music_model, player=self.player, log_path=log_path())
        self.worker.outbox.on_ready = lambda: self.post_message(_MusicWake())
        self.worker.start()
        self._ticker = self.set_interval(TICK, self._tick, pause=True, name="music-tick")
        self.query_one("#text-region").border_title = self._text_title()
        self.text_view.write(self._hint())
        if self._config_problems:
            more = len(self._config_problems) - 1
            self.notify(self._config_problems[0] + (f" (+{more} more)" if more else ""),
                        title="Music settings", severity="warning", timeout=8)
        if self._port is not None:
            self._open_port(self._port, remember=False)

    def _hint(self) -> str:
        keymap = getattr(getattr(self.app, "config", None), "keymap", {})
        lines = [f"{format_keys(effective_keys(i, keymap)):>8}  {spec(i).label}" for i in HINT_ACTIONS]
        return "\n".join(["Keys:", *lines, "", "F1 lists them all."])

    def on_unmount(self) -> None:
        self.shutdown()

    def shutdown(self) -> None:
        """Stop writing and silence the synth (safe to call more than once)."""
        if self.worker is not None:
            self.worker.close(timeout=2.0)
        if self.player is not None:
            if self.player.sink is not None:
                # Silence first and give the MIDI system a moment to deliver it: closing a JACK
                # port right after sending drops what has not gone out in a process cycle yet.
                self.player.stop()
                time.sleep(EXIT_FLUSH_SECONDS)
            self.player.close()

    def _music_model(self):  # noqa: ANN202 - engine.Model | None, read on the music thread
        worker = getattr(self.app, "worker", None)
        return getattr(worker, "music_model", None)

    @property
    def roll(self) -> PianoRoll:
        return self.query_one("#piano-roll", PianoRoll)

    @property
    def text_view(self) -> Log:
        return self.query_one("#music-text", Log)

    @property
    def transport(self) -> Transport:
        return self.query_one("#transport", Transport)

    @property
    def settings_panel(self) -> MusicSettingsPanel:
        return self.query_one("#music-settings", MusicSettingsPanel)

    # ------------------------------------------------------------------ model (called by the app)

    def _model_text(self) -> str:
        m = self.model
        if m is None:
            return f"Music model: {self.status}"
        kind = MODES.get(m.tokenizer, f"{m.tokenizer} tokens (not a music vocabulary)")
        demo = " — built-in demo" if m.demo else ""
        return f"Music model: {describe(m)}{demo} · {kind}"

    def set_model(self, summary: ModelSummary) -> None:
        self.model = summary
        self.query_one("#music-model", Static).update(plain(self._model_text()))
        if summary.tokenizer in MODES and summary.tokenizer != self.settings.mode:
            # The model decides which token language can be generated.
            self._apply_settings(self.settings.with_field("mode", summary.tokenizer), show=True)

    def set_status(self, status: str) -> None:
        self.status = status
        if self.model is None:
            self.query_one("#music-model", Static).update(plain(self._model_text()))

    # ------------------------------------------------------------------ settings & config

    def _save_config(self) -> None:
        self._section = replace(self._section, settings=self.settings, port=self._port,
                                tempo=self.transport.tempo, volume=self.transport.volume)
        self.post_message(MusicConfigChanged(CONFIG_SECTION, self._section.to_dict()))

    def _apply_settings(self, settings: MusicSettings, show: bool = False) -> None:
        self.settings = settings
        if show:
            self.settings_panel.show_settings(settings)
        self.query_one("#text-region").border_title = self._text_title()
        self._save_config()

    @on(MusicSettingsPanel.Changed)
    def _settings_changed(self, message: MusicSettingsPanel.Changed) -> None:
        message.stop()
        self._apply_settings(message.settings)

    def _text_title(self) -> str:
        return "ABC text" if self.settings.mode == "abc" else "Tokens"

    # ------------------------------------------------------------------ actions

    def action_generate(self) -> None:
        problems = self.settings_panel.problems()
        if problems:
            more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
            self.notify(f"Not generating: {problems[0]}{more}", severity="warning", timeout=5)
            return
        settings = self.settings
        try:
            settings.validate()
        except ValueError as exc:
            self.notify(f"Not generating: {exc}", severity="warning", timeout=5)
            return
        assert self.worker is not None and self.player is not None
        if self.player.sink is None and not self._told_silent:
            self._told_silent = True
            listing = self.transport.listing
            why = "" if listing.ports else " (no MIDI ports found: " + "; ".join(listing.problems or ["none"]) + ")"
            self.notify(f"No MIDI output: the piece is shown but not heard{why}. Pick a port below to listen.",
                        title="MIDI output", timeout=8)
        if settings.mode == "abc":
            self.player.stop()  # the old piece would otherwise play on until the tune is converted
        self.roll.clear()
        self.text_view.clear()
        self._pending_text.clear()
        self.piece = None
        self._progress = ""
        self.generating = True
        self._run_mode = settings.mode
        self.run = self.worker.generate(MusicRequest(settings, play=True))
        self._wake()

    def action_play_pause(self) -> None:
        assert self.player is not None
        if self.piece is None and not self.generating:
            self.notify("Nothing to play yet: g generates a piece.", severity="warning", timeout=3)
            return
        self.player.toggle()
        self._wake()

    def action_stop(self) -> None:
        """Stop writing and playing; the synth is silenced."""
        assert self.player is not None and self.worker is not None
        if self.generating:
            self.worker.cancel()
        self.player.stop()
        self._wake()

    def action_replay(self) -> None:
        assert self.player is not None
        if self.piece is None and not self.generating:
            self.notify("Nothing to replay yet: g generates a piece.", severity="warning", timeout=3)
            return
        self.player.replay()
        self._wake()

    def action_tempo(self, direction: int) -> None:
        self.transport.action_tempo(direction)

    def action_volume(self, direction: int) -> None:
        self.transport.action_volume(direction)

    def action_refresh_ports(self) -> None:
        self.transport.refresh_ports()
        self.notify("Listing MIDI ports again…", timeout=2)

    def action_pick_continuation(self) -> None:
        def chosen(path: str | None) -> None:
            if path:
                if self.settings.mode != "midi":
                    self._apply_settings(self.settings.with_field("mode", "midi"), show=True)
                self.settings_panel.query_one("#field-continue_from", Input).value = path

        self.app.push_screen(PathPrompt(
            "Continue a piece (.mid, or a .txt of MIDI tokens)", str(Path.cwd()) + "/", mode="open",
            suffixes=CONTINUE_SUFFIXES,
        ), chosen)

    def action_export(self, fmt: str) -> None:
        """Ask where to save the piece as .mid, .abc, token .txt or .wav (the name's suffix decides)."""
        if self.generating:
            self.notify("The piece is still being written: wait for it, or stop it (s), then export.",
                        severity="warning", timeout=4)
            return
        piece = self.piece
        if piece is None:
            self.notify("Nothing to export yet: g generates a piece.", severity="warning", timeout=3)
            return
        if fmt == "abc" and piece.mode != "abc":
            fmt = "txt"
        default = Path.cwd() / time.strftime(f"rwkv-{piece.mode}-%Y%m%d-%H%M%S.{fmt}")

        def chosen(path: str | None) -> None:
            if path:
                suffix = Path(path).suffix.lower().lstrip(".")
                chosen_format = suffix if suffix in EXPORT_FORMATS else fmt
                if chosen_format == "wav":
                    self.notify(f"Rendering {Path(path).name} with FluidSynth…", timeout=3)
                self._export(piece, path, chosen_format, self.settings.lufs)

        self.app.push_screen(PathPrompt(
            f"Save the piece as {EXPORT_FORMATS[fmt]} (.mid, .abc, .txt or .wav by the name's ending)",
            str(default), mode="save",
        ), chosen)

    @work(thread=True, group="music-export", exit_on_error=False)
    def _export(self, piece: MusicPiece, path: str, fmt: str, lufs: float) -> None:
        try:
            message = export_piece(piece, path, fmt, lufs)
        except EngineError as exc:
            self.app.call_from_thread(self.notify, str(exc), title="Export failed", severity="error", timeout=8)
        else:
            self.app.call_from_thread(self.notify, message, timeout=5)

    # ------------------------------------------------------------------ transport & ports

    @on(Transport.Requested)
    def _transport_request(self, message: Transport.Requested) -> None:
        message.stop()
        action = getattr(self, f"action_{message.action}", None)
        if action is not None:
            action()

    @on(Transport.TempoChanged)
    def _tempo_changed(self, message: Transport.TempoChanged) -> None:
        message.stop()
        if self.player is not None:
            self.player.tempo = message.tempo
        self._save_config()
        self._wake()

    @on(Transport.VolumeChanged)
    def _volume_changed(self, message: Transport.VolumeChanged) -> None:
        message.stop()
        if self.player is not None:
            self.player.velocity_scale = message.volume
        self._save_config()
        self._wake()

    @on(Transport.PortChosen)
    def _port_chosen(self, message: Transport.PortChosen) -> None:
        message.stop()
        self._open_port(message.choice, remember=True)

    @work(thread=True, exclusive=True, group="music-port", exit_on_error=False)
    def _open_port(self, choice: PortChoice | None, remember: bool) -> None:
        """Open the port off the UI thread (a JACK connection takes a moment to settle)."""
        player = self.player
        if player is None:
            return
        try:
            player.set_port(choice)
        except EngineError as exc:
            self.app.call_from_thread(self._port_failed, choice, str(exc), remember)
        else:
            self.app.call_from_thread(self._port_opened, choice, remember)

    def _port_opened(self, choice: PortChoice | None, remember: bool) -> None:
        self._port = choice
        if remember:
            self._save_config()
        self.notify(f"Music plays to {choice.describe()}" if choice else "Music output off (silent)", timeout=3)
        self._wake()

    def _port_failed(self, choice: PortChoice | None, message: str, remember: bool) -> None:
        if remember:
            # The choice is remembered anyway: the synthesizer may simply not be running yet.
            self._port = choice
            self._save_config()
        self.notify(f"{message}; music plays silently until a port works", title="MIDI output",
                    severity="warning", timeout=8)

    def _player_error(self, message: str) -> None:
        """Called on the player thread when the port fails: hand it to the UI thread."""
        self._player_errors.append(message)
        self.post_message(_MusicWake())

    def _player_reconnected(self, description: str) -> None:
        """Called on the player thread when a lost port is open again: hand it to the UI thread."""
        self._ports_back.append(description)
        self.post_message(_MusicWake())

    @on(PianoRoll.Seek)
    def _seek(self, message: PianoRoll.Seek) -> None:
        message.stop()
        if self.player is not None and (self.piece is not None or self.generating):
            self.player.seek(message.position_ms)
            self._wake()

    # ------------------------------------------------------------------ music thread → UI

    @on(_MusicWake)
    def _woken(self, message: _MusicWake) -> None:
        message.stop()
        # While the timer runs, its next tick drains: the music thread never paces the UI.
        if not self._ticking:
            self._wake()

    def _wake(self) -> None:
        """Update now and keep updating until nothing is written or played."""
        self._ticking = True
        if self._ticker is not None:
            self._ticker.resume()
        self._tick(now=True)

    def _tick(self, now: bool = False) -> None:
        worker, player = self.worker, self.player
        if worker is None or player is None or not self.is_attached:
            return
        if not now and not self._pacer.due():
            return  # the last updates were costly: leave the CPU to the music thread a while
        self._pacer.updated()
        for event in worker.outbox.drain():
            if getattr(event, "run", None) != self.run:
                continue  # a replaced or stopped piece
            if isinstance(event, MusicProgress):
                self._on_progress(event)
            elif isinstance(event, MusicPreview):
                self.roll.set_events(event.events, event.end_ms)
            elif isinstance(event, MusicStarted):
                self._pending_text.append(event.prompt_text)
            elif isinstance(event, MusicFinished):
                self._on_finished(event.piece)
            elif isinstance(event, MusicFailed):
                self.generating = False
                if event.message != STOPPED_BEFORE_START:
                    self.notify(event.message, title="Music", severity="error", timeout=8)
        self._flush_text(force=not self.generating)
        if self._player_errors or self._ports_back:
            self.transport.refresh_ports()  # the picker shows the ports there are now
        while self._player_errors:
            self.notify(f"{self._player_errors.popleft()}; playback paused, the piece goes on being written "
                        "(the next piece plays there again once it is back)",
                        title="MIDI output", severity="warning", timeout=8)
        while self._ports_back:
            self.notify(f"MIDI output back: music plays to {self._ports_back.popleft()}", title="MIDI output",
                        timeout=4)
        status = player.status()
        self.roll.set_playhead(None if status.state == PlayerState.STOPPED else status.position_ms)
        self.transport.show_status(status, generating=self.generating, note=self._progress)
        if not self.generating and status.state != PlayerState.PLAYING and not len(worker.outbox):
            self._ticking = False
            if self._ticker is not None:
                self._ticker.pause()

    def _on_progress(self, event: MusicProgress) -> None:
        if event.text:
            self._pending_text.append(event.text)
        if event.events or self._run_mode == "midi":
            self.roll.add_events(event.events, event.time_ms if event.time_ms else None)
        rate = f" · {event.tokens_per_second:.0f} tok/s" if event.tokens_per_second else ""
        self._progress = f"{event.generated_tokens} tokens{rate} · {self.roll.note_count} notes"

    def _flush_text(self, force: bool = False) -> None:
        """Append the text written since the last flush, at most every TEXT_INTERVAL seconds:
        each append that grows the view costs a layout of the whole screen."""
        now = time.monotonic()
        if self._pending_text and (force or now - self._text_flushed >= TEXT_INTERVAL):
            self.text_view.write(visible_controls("".join(self._pending_text)))
            self._pending_text.clear()
            self._text_flushed = now

    def _on_finished(self, piece: MusicPiece) -> None:
        self.generating = False
        self.piece = piece
        if piece.mode == "abc":
            self.roll.set_events(piece.events, piece.end_ms)
            if piece.midi is None:
                self.notify(f"No notes to show or play: {piece.conversion_problem}", title="ABC",
                            severity="warning", timeout=8)
        elif piece.events:
            self.roll.add_events((), piece.end_ms)
        parts = [f"{piece.generated_tokens} tokens", f"{piece.note_count} notes", format_time(piece.end_ms)]
        if piece.invalid_tokens:
            parts.append(f"{piece.invalid_tokens} unreadable tokens skipped")
        if piece.stop_reason != "stop token":
            parts.append(f"stopped: {piece.stop_reason}")
        self._progress = " · ".join(parts)


def export_piece(piece: MusicPiece, path: str, fmt: str, lufs: float) -> str:
    """Save ``piece`` atomically in one format; returns the confirmation line (MusicError if not)."""
    from engine.music.files import save_midi, save_text

    if fmt in ("mid", "wav") and piece.midi is None:
        raise MusicError(f"{Path(path).name}: this piece has no MIDI ({piece.conversion_problem or 'no notes'})")
    if fmt == "mid":
        written = save_midi(path, piece.midi)
        return f"Saved {written} ({piece.note_count} notes, {format_time(piece.end_ms)})"
    if fmt in ("abc", "txt"):
        written = save_text(path, piece.text)
        what = "ABC tune" if piece.mode == "abc" else "MIDI tokens"
        return f"Saved the {what} to {written}"
    if fmt == "wav":
        from engine.music.render import render_wav

        result = render_wav(piece.midi, path, target_lufs=lufs)
        return f"Rendered {result.summary()}"
    raise MusicError(f"{path}: cannot export as {fmt!r} (use .mid, .abc, .txt or .wav)")


def _list_ports() -> PortListing:
    """The port picker's listing (looked up at call time, so tests can substitute it)."""
    return list_output_ports()

