"""Transport: requests from keys and buttons, tempo/volume steps, the port picker, status line."""

from __future__ import annotations

from textual.app import App, ComposeResult
from textual.widgets import Button, Select, Static

from engine.music.player import PlayerState, PlayerStatus
from engine.music.ports import PortChoice, PortInfo, PortListing
from tui.widgets.transport import NO_OUTPUT, Transport, format_time

PORTS = PortListing([PortInfo("JACK", "fluidsynth-midi:midi_00"), PortInfo("JACK", "zyn:in")],
                    ["ALSA: no sequencer on this system (/dev/snd/seq is missing)"])


class TransportHost(App):
    def __init__(self, port: PortChoice | None = None, listing: PortListing = PORTS) -> None:
        super().__init__()
        self.port = port
        self.listing = listing
        self.requests: list[str] = []
        self.ports: list[PortChoice | None] = []
        self.tempi: list[float] = []
        self.volumes: list[float] = []

    def compose(self) -> ComposeResult:
        yield Transport(port=self.port, lister=lambda: self.listing)

    def on_transport_requested(self, message: Transport.Requested) -> None:
        self.requests.append(message.action)

    def on_transport_port_chosen(self, message: Transport.PortChosen) -> None:
        self.ports.append(message.choice)

    def on_transport_tempo_changed(self, message: Transport.TempoChanged) -> None:
        self.tempi.append(message.tempo)

    def on_transport_volume_changed(self, message: Transport.VolumeChanged) -> None:
        self.volumes.append(message.volume)


async def wait_for_ports(pilot, transport: Transport) -> None:
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


async def test_keys_and_buttons_request_actions() -> None:
    app = TransportHost()
    async with app.run_test(size=(100, 6)) as pilot:
        transport = app.query_one(Transport)
        await wait_for_ports(pilot, transport)
        app.query_one("#stop", Button).focus()
        await pilot.press("g", "space", "s", "r")
        await pilot.click("#replay")
        await pilot.click("#generate")
        await pilot.pause()
    assert app.requests == ["generate", "play_pause", "stop", "replay", "replay", "generate"]


async def test_tempo_and_volume_step_within_limits() -> None:
    app = TransportHost()
    async with app.run_test(size=(100, 6)) as pilot:
        app.query_one("#stop", Button).focus()
        await pilot.press("right_square_bracket", "right_square_bracket", "left_square_bracket")
        await pilot.press(*["comma"] * 12, "full_stop")
        await pilot.pause()
        transport = app.query_one(Transport)
        assert transport.tempo == 1.1 and transport.volume == 0.1
    assert app.tempi == [1.1, 1.25, 1.1]
    assert app.volumes[-2:] == [0.0, 0.1] and min(app.volumes) == 0.0


async def test_port_picker_lists_ports_and_reports_the_choice() -> None:
    app = TransportHost()
    async with app.run_test(size=(100, 6)) as pilot:
        transport = app.query_one(Transport)
        await wait_for_ports(pilot, transport)
        select = app.query_one("#port", Select)
        values = [value for _label, value in select._options]
        assert values[:3] == [NO_OUTPUT, "port:JACK:fluidsynth-midi:midi_00", "port:JACK:zyn:in"]
        assert any(v.startswith("virtual:JACK:") for v in values)
        select.value = "port:JACK:zyn:in"
        await pilot.pause()
        select.value = NO_OUTPUT
        await pilot.pause()
    assert app.ports == [PortChoice("JACK", "zyn:in"), None]


async def test_a_remembered_port_that_is_missing_stays_selected() -> None:
    remembered = PortChoice("JACK", "qsynth:midi")
    app = TransportHost(port=remembered)
    async with app.run_test(size=(100, 6)) as pilot:
        transport = app.query_one(Transport)
        await wait_for_ports(pilot, transport)
        select = app.query_one("#port", Select)
        assert select.value == remembered.to_setting()
        labels = [str(label) for label, _value in select._options]
        assert any("not found" in label for label in labels)
    assert app.ports == []  # restoring the setting is not a new choice


async def test_no_ports_explains_why() -> None:
    app = TransportHost(listing=PortListing([], ["JACK: no JACK server is running"]))
    async with app.run_test(size=(100, 6)) as pilot:
        await wait_for_ports(pilot, app.query_one(Transport))
        text = str(app.query_one("#status", Static).render())
    assert "no MIDI ports" in text and "JACK" in text


async def test_status_line_shows_the_player() -> None:
    app = TransportHost()
    async with app.run_test(size=(120, 6)) as pilot:
        transport = app.query_one(Transport)
        await wait_for_ports(pilot, transport)
        status = PlayerStatus(PlayerState.PLAYING, 61_500, 70_000, None, True, 1, 1.25, 0.8, "fluidsynth (JACK)", None)
        transport.show_status(status, generating=True)
        await pilot.pause()
        line = str(app.query_one("#status", Static).render())
        assert "buffering" in line and "1:01.5" in line and "writing" in line and "×1.25" in line
        assert str(app.query_one("#play_pause", Button).label) == "❚❚ Pause"
        failed = PlayerStatus(PlayerState.PAUSED, 0, 0, None, False, 0, 1.0, 1.0, None, "MIDI port x disappeared")
        transport.show_status(failed)
        await pilot.pause()
        assert "disappeared" in str(app.query_one("#status", Static).render())
        assert app.query_one("#status").has_class("-error")
    assert format_time(0) == "0:00.0" and format_time(float("inf")) == "–:––"


def test_transport_snapshot(snap_compare) -> None:
    async def show(pilot) -> None:
        await pilot.app.workers.wait_for_complete()
        transport = pilot.app.query_one(Transport)
        transport.show_status(PlayerStatus(PlayerState.PLAYING, 12_300, 40_000, 45_000, False, 0, 1.0, 1.0,
                                           "fluidsynth-midi:midi_00 (JACK)", None))
        await pilot.pause()

    assert snap_compare(TransportHost(port=PortChoice("JACK", "fluidsynth-midi:midi_00")),
                        terminal_size=(110, 6), run_before=show)


async def test_picking_the_same_port_again_reconnects() -> None:
    """After the synth went away and came back, picking the port that is still shown as chosen
    did nothing (the Select reports no change, and the widget ignored an unchanged choice)."""
    app = TransportHost()
    async with app.run_test(size=(100, 12)) as pilot:
        transport = app.query_one(Transport)
        await wait_for_ports(pilot, transport)
        select = app.query_one("#port", Select)
        select.value = "port:JACK:zyn:in"
        await pilot.pause()
        assert app.ports == [PortChoice("JACK", "zyn:in")]
        select.focus()
        await pilot.press("enter")  # open the list: the current port is highlighted
        await pilot.pause()
        assert select.expanded
        await pilot.press("enter")  # pick it again
        await pilot.pause()
        assert not select.expanded and select.value == "port:JACK:zyn:in"
    assert app.ports == [PortChoice("JACK", "zyn:in")] * 2


async def test_a_port_remembered_by_substring_shows_the_port_it_plays_to() -> None:
    """A config port like "port:JACK:fluidsynth" matched fluidsynth-midi:midi_00 and played there,
    while the picker listed it as "fluidsynth (JACK) — not found"."""
    remembered = PortChoice("JACK", "fluidsynth")
    app = TransportHost(port=remembered)
    async with app.run_test(size=(100, 6)) as pilot:
        transport = app.query_one(Transport)
        await wait_for_ports(pilot, transport)
        select = app.query_one("#port", Select)
        assert select.value == remembered.to_setting()
        labels = {value: str(label) for label, value in select._options}
        assert not any("not found" in label for label in labels.values())
        assert labels[remembered.to_setting()] == "fluidsynth-midi:midi_00 (JACK)"
        assert "port:JACK:fluidsynth-midi:midi_00" not in labels  # one entry for the one port
        assert str(select.query_one("SelectCurrent Static#label").render()) == "fluidsynth-midi:midi_00 (JACK)"
    assert app.ports == []
