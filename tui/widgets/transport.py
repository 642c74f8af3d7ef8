"""Transport bar for the music pane: generate, play/pause, stop, replay, tempo, volume, port.

The widget only reports what the user asked for (messages up) and shows what it is told
(``show_status`` down); it never touches the player or the model itself, so the pane decides
what "generate" means and the widget stays testable on its own. Listing MIDI ports can block on
a JACK server, so it runs in a thread worker and its result comes back as a message.
"""

from __future__ import annotations

from typing import Callable, ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.message import Message
from textual.reactive import reactive
from textual.widget import Widget
from textual.widgets import Button, Select, Static
from textual.widgets._select import SelectOverlay

from engine.music.player import PlayerState, PlayerStatus
from engine.music.ports import DEFAULT_VIRTUAL_PORT, PortChoice, PortListing, list_output_ports, match_port
from tui.safe_text import plain
from tui.widgets.safe_fields import SafeSelect

NO_OUTPUT = "none"
_TEMPO_STEPS = (0.25, 0.5, 0.75, 0.9, 1.0, 1.1, 1.25, 1.5, 2.0, 3.0, 4.0)
_VOLUME_STEP = 0.1


def format_time(ms: float) -> str:
    """Musical time as m:ss.t."""
    if ms != ms or ms == float("inf"):  # NaN or unknown end
        return "–:––"
    seconds = max(0.0, ms) / 1000.0
    return f"{int(seconds // 60)}:{seconds % 60:04.1f}"


class PortSelect(SafeSelect):
    """The port picker, its labels taken literally (port names come from other programs); it also says when the user picks the option that is already chosen.

    Select reports only changes, but picking the chosen port again is how a user reconnects
    after the synthesizer went away and came back.
    """

    class Repicked(Message):
        """The user picked the option that was already selected."""

        def __init__(self, select: "PortSelect") -> None:
            super().__init__()
            self.select = select

        @property
        def control(self) -> "PortSelect":
            return self.select

    @on(SelectOverlay.UpdateSelection)
    def _picked(self, event: SelectOverlay.UpdateSelection) -> None:
        # Runs before Select's own handler, which updates the value (only if it changed).
        if self._options[event.option_index][1] == self.value:
            self.post_message(self.Repicked(self))


class Transport(Widget):
    """Buttons and keys for the music pane, plus the MIDI port picker."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("g", "request('generate')", "Generate", id="music.generate"),
        Binding("space", "request('play_pause')", "Play/Pause", id="music.play_pause"),
        Binding("s", "request('stop')", "Stop", id="music.stop"),
        Binding("r", "request('replay')", "Replay", id="music.replay"),
        Binding("left_square_bracket", "tempo(-1)", "Slower", show=False, id="music.slower"),
        Binding("right_square_bracket", "tempo(1)", "Faster", show=False, id="music.faster"),
        Binding("comma", "volume(-1)", "Quieter", show=False, id="music.quieter"),
        Binding("full_stop", "volume(1)", "Louder", show=False, id="music.louder"),
    ]

    DEFAULT_CSS = """
    Transport {
        height: auto;
        layout: vertical;
    }
    Transport > Horizontal {
        height: auto;
    }
    Transport Button {
        min-width: 8;
        margin-right: 1;
    }
    Transport #port {
        width: 1fr;
        min-width: 20;
    }
    Transport #status {
        height: 1;
        color: $text-muted;
        padding: 0 1;
    }
    Transport #status.-error {
        color: $error;
    }
    """

    #: Playback speed factor shown and requested.
    tempo: reactive[float] = reactive(1.0)
    #: Velocity factor shown and requested.
    volume: reactive[float] = reactive(1.0)

    class Requested(Message):
        """The user pressed a transport control: generate, play_pause, stop or replay."""

        def __init__(self, transport: "Transport", action: str) -> None:
            super().__init__()
            self.transport = transport
            self.action = action

        @property
        def control(self) -> "Transport":
            return self.transport

    class TempoChanged(Message):
        def __init__(self, transport: "Transport", tempo: float) -> None:
            super().__init__()
            self.transport = transport
            self.tempo = tempo

    class VolumeChanged(Message):
        def __init__(self, transport: "Transport", volume: float) -> None:
            super().__init__()
            self.transport = transport
            self.volume = volume

    class PortChosen(Message):
        """The user picked an output (None: no output). Open it with ``Player.set_port``."""

        def __init__(self, transport: "Transport", choice: PortChoice | None) -> None:
            super().__init__()
            self.transport = transport
            self.choice = choice

    class PortsListed(Message):
        """Ports found by the background listing (handled by the widget itself)."""

        def __init__(self, listing: PortListing) -> None:
            super().__init__()
            self.listing = listing

    def __init__(
        self,
        *,
        port: PortChoice | None = None,
        lister: Callable[[], PortListing] = list_output_ports,
        name: str | None = None,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self._lister = lister
        self._choice = port
        self._listing = PortListing([], [])
        self._line = ""

    def compose(self) -> ComposeResult:
        with Horizontal():
            yield Button("Generate", id="generate", variant="primary")
            yield Button("▶ Play", id="play_pause")
            yield Button("■ Stop", id="stop")
            yield Button("↺ Replay", id="replay")
            yield PortSelect(self._options(), id="port", prompt="MIDI output", allow_blank=False,
                             value=self._value_of(self._choice))
            yield Button("⟳", id="refresh_ports", tooltip="List MIDI ports again")
        yield Static("", id="status")

    def on_mount(self) -> None:
        self.refresh_ports()
        self._show_line(self._idle_line())

    # ------------------------------------------------------------------ ports

    def refresh_ports(self) -> None:
        """List the MIDI outputs again (in a thread: a JACK server may be slow to answer)."""
        self._list_ports()

    @work(thread=True, exclusive=True, group="transport-ports", exit_on_error=False)
    def _list_ports(self) -> None:
        try:
            listing = self._lister()
        except Exception as exc:  # noqa: BLE001 - shown to the user, never fatal
            listing = PortListing([], [str(exc)])
        self.post_message(self.PortsListed(listing))

    @on(PortsListed)
    def _ports_listed(self, message: PortsListed) -> None:
        message.stop()
        self._listing = message.listing
        select = self.query_one("#port", Select)
        select.set_options(self._options())
        select.value = self._value_of(self._choice)
        if not message.listing.ports and message.listing.problems:
            self._show_line("no MIDI ports: " + "; ".join(message.listing.problems))

    @property
    def port_choice(self) -> PortChoice | None:
        return self._choice

    @property
    def listing(self) -> PortListing:
        return self._listing

    def _options(self) -> list[tuple[str, str]]:
        options = [("No output (silent)", NO_OUTPUT)]
        seen = {NO_OUTPUT}
        chosen = self._chosen_port_index()
        for index, port in enumerate(self._listing.ports):
            # The remembered choice may name its port by a part of the name: it is that port's entry.
            value = (self._choice.to_setting() if index == chosen and self._choice is not None
                     else PortChoice(port.api, port.name).to_setting())
            options.append((f"{port.name} ({port.api})", value))
            seen.add(value)
        virtual = PortChoice("JACK", DEFAULT_VIRTUAL_PORT, virtual=True)
        if virtual.to_setting() not in seen:
            options.append((f"New virtual port '{DEFAULT_VIRTUAL_PORT}' (JACK)", virtual.to_setting()))
            seen.add(virtual.to_setting())
        if self._choice is not None and self._choice.to_setting() not in seen:
            # The remembered port is not there now: keep it selectable, marked as missing.
            options.append((f"{self._choice.describe()} — not found", self._choice.to_setting()))
        return options

    def _chosen_port_index(self) -> int | None:
        """Which listed port the remembered choice opens (the player's rule), if any."""
        choice = self._choice
        if choice is None or choice.virtual:
            return None
        same_api = [i for i, port in enumerate(self._listing.ports) if port.api.lower() == choice.api.lower()]
        match = match_port([self._listing.ports[i].name for i in same_api], choice.name)
        return same_api[match] if match is not None else None

    @staticmethod
    def _value_of(choice: PortChoice | None) -> str:
        return choice.to_setting() if choice is not None else NO_OUTPUT

    @on(Select.Changed, "#port")
    def _port_changed(self, event: Select.Changed) -> None:
        event.stop()
        # Messages are handled later than they are sent: one raised while the options were being
        # replaced no longer matches the Select's value and is not a user choice.
        if event.value is Select.BLANK or event.value != event.select.value:
            return
        choice = None if event.value == NO_OUTPUT else PortChoice.from_setting(str(event.value))
        if choice == self._choice:
            return  # the options were replaced and the choice put back: not a user's pick
        self._choice = choice
        self.post_message(self.PortChosen(self, choice))

    @on(PortSelect.Repicked, "#port")
    def _port_repicked(self, event: PortSelect.Repicked) -> None:
        """Picking the chosen port again opens it again (after its synthesizer came back)."""
        event.stop()
        self.post_message(self.PortChosen(self, self._choice))

    # ------------------------------------------------------------------ controls

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "refresh_ports":
            self.refresh_ports()
        elif event.button.id:
            self.post_message(self.Requested(self, event.button.id))

    def action_request(self, action: str) -> None:
        self.post_message(self.Requested(self, action))

    def action_tempo(self, direction: int) -> None:
        steps = _TEMPO_STEPS
        index = min(range(len(steps)), key=lambda i: abs(steps[i] - self.tempo))
        self.tempo = steps[max(0, min(len(steps) - 1, index + direction))]

    def action_volume(self, direction: int) -> None:
        self.volume = round(max(0.0, min(2.0, self.volume + direction * _VOLUME_STEP)), 2)

    def watch_tempo(self, tempo: float) -> None:
        if self.is_mounted:
            self.post_message(self.TempoChanged(self, tempo))

    def watch_volume(self, volume: float) -> None:
        if self.is_mounted:
            self.post_message(self.VolumeChanged(self, volume))

    # ------------------------------------------------------------------ status

    def show_status(self, status: PlayerStatus, *, generating: bool = False, note: str = "") -> None:
        """Show the player's state (call from the UI thread, e.g. on a 10–20 Hz timer)."""
        playing = status.state == PlayerState.PLAYING
        button = self.query_one("#play_pause", Button)
        label = "❚❚ Pause" if playing else "▶ Play"
        if str(button.label) != label:  # a new label means a new layout: only when it changes
            button.label = label
        if status.error:
            self._show_line(status.error, error=True)
            return
        state = "buffering…" if status.buffering else status.state.value
        end = status.end_ms if status.end_ms is not None else float("inf")
        parts = [f"{state} {format_time(status.position_ms)} / {format_time(end)}"]
        if generating:
            parts.append("writing")
        parts.append(f"tempo ×{status.tempo:g}")
        parts.append(f"volume {status.velocity_scale:.0%}")
        parts.append(status.sink or "no output")
        if note:
            parts.append(note)
        self._show_line(" · ".join(parts))

    def _idle_line(self) -> str:
        return f"stopped · tempo ×{self.tempo:g} · volume {self.volume:.0%}"

    def _show_line(self, text: str, error: bool = False) -> None:
        status = self.query_one("#status", Static)
        # One line of fixed height: a change of text needs a repaint, never a new layout (which
        # would cost a reflow of the whole screen at every playhead update).
        if text != self._line:
            self._line = text
            status.update(plain(text), layout=False)
        status.set_class(error, "-error")
