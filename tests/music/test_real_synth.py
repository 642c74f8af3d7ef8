"""Real synthesizer tests: our player drives FluidSynth through JACK, and FluidSynth renders.

jackd runs with the dummy driver under a private server name, FluidSynth takes MIDI from a
JACK port and logs every note it starts (-v), so the test sees exactly what reached the synth
(tests/music/synth_rig.py). Every process started here is stopped by its own handle, also when
a test fails; the synth and the server are also taken away mid-piece and brought back.
"""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import pytest

from engine.music import midi_codec as codec
from engine.music.player import Player, PlayerState
from engine.music.ports import PortChoice, list_output_ports, open_sink
from engine.music.render import render_wav
from tests.helpers import require_tool
from tests.music.synth_rig import LOG_TIMEOUT, SynthRig, synth_rig  # noqa: F401 - a fixture

pytestmark = pytest.mark.system_tools

#: A short band piece: drums, bass, piano chords and a violin line (all keys with GM sounds).
PIECE = (
    "<start> p:24:9 p:2a:6 b:24:8 pi:3c:a pi:40:9 pi:43:9 t31 p:24:0 p:2a:0 p:2a:6 v:48:8 t31 "
    "p:2a:0 b:24:0 pi:3c:0 pi:40:0 pi:43:0 p:26:9 b:2b:8 pi:3e:a pi:41:9 pi:45:9 v:48:0 v:4a:8 t31 "
    "p:26:0 p:2a:6 t31 p:2a:0 b:2b:0 pi:3e:0 pi:41:0 pi:45:0 v:4a:0 p:24:9 b:30:8 pi:40:a pi:43:9 "
    "pi:48:9 v:4c:9 t62 p:24:0 b:30:0 pi:40:0 pi:43:0 pi:48:0 v:4c:0 <end>"
)


def test_streamed_piece_reaches_fluidsynth_in_order(synth_rig: SynthRig) -> None:
    listing = list_output_ports()
    assert synth_rig.port in [p.name for p in listing.ports if p.api == "JACK"]
    start = synth_rig.mark()
    sink = open_sink(PortChoice("JACK", "rwkvsynth"))
    ended = threading.Event()
    errors: list[str] = []
    player = Player(sink, prebuffer_ms=100, on_end=ended.set, on_error=errors.append)
    try:
        player.tempo = 2.0
        player.begin()
        player.play()
        # Feed token by token, like a model writing slower than real time at first.
        decoder = codec.TokenDecoder()
        for index, word in enumerate(PIECE.split()):
            player.feed_events(decoder.feed_text(word), decoder.time_ms)
            time.sleep(0.004 if index % 10 else 0.03)
        player.finish(decoder.time_ms)
        assert ended.wait(LOG_TIMEOUT), player.status()
        assert player.status().state == PlayerState.ENDED
    finally:
        player.close()
    assert errors == []
    expected = [(e.channel, e.note, e.velocity) for e in codec.decode_tokens(PIECE).events if e.is_on]
    # FluidSynth logs what it received a little later than we sent it: wait for the last of it.
    synth_rig.wait_log(lambda _: len(synth_rig.note_ons(start)) >= len(expected), "the notes in FluidSynth's log")
    assert synth_rig.note_ons(start) == expected
    synth_rig.wait_log(lambda _: synth_rig.sound_off_channels(start) == list(range(16)), "All Sound Off on 16 channels")
    text = synth_rig.text(start)
    assert synth_rig.note_offs(start) == {(c, k) for c, k, _ in expected}
    # Each channel got its instrument before the first note.
    programs = [(int(c), int(p)) for c, _bank, p in re.findall(r"prog\t(\d+)\t(\d+)\t(\d+)", text)]
    assert sorted(programs[:13]) == sorted(codec.CHANNEL_PROGRAMS), text[:3000]
    assert text.index("prog\t0\t0\t118") < text.index("noteon")


def test_same_piece_renders_to_the_loudness_target(tmp_path: Path) -> None:
    require_tool("fluidsynth")
    mid = codec.decode_tokens(PIECE).to_midi()
    result = render_wav(mid, tmp_path / "piece.wav", target_lufs=-16.0, peak_dbfs=-1.0)
    import numpy as np
    import pyloudnorm
    import soundfile

    audio, rate = soundfile.read(tmp_path / "piece.wav", always_2d=True)
    assert rate == 44_100 and audio.shape[1] == 2
    peak = float(np.max(np.abs(audio)))
    assert peak > 0.1  # not silent
    assert pyloudnorm.Meter(rate).integrated_loudness(audio) == pytest.approx(-16.0, abs=0.5)
    assert 20 * np.log10(peak) <= -1.0 + 0.01
    # The tail is trimmed: not much longer than the music (FluidSynth adds seconds of reverb).
    assert mid.length <= result.seconds <= mid.length + 2.5
    assert [p.name for p in tmp_path.iterdir()] == ["piece.wav"]  # no temp files left


LONG_NOTE = codec.decode_tokens("pi:3c:a " + "t125 " * 20 + "pi:3c:0").events  # one note of 20 s


def long_note_piece() -> list[tuple[float, tuple[int, ...]]]:
    return [(e.time_ms, (0x97 if e.is_on else 0x87, e.note, e.velocity or 64)) for e in LONG_NOTE]


def short_piece() -> list[tuple[float, tuple[int, ...]]]:
    """Three piano notes in a quarter of a second, each released."""
    return [(0.0, (0x90, 60, 90)), (80.0, (0x80, 60, 64)), (80.0, (0x90, 64, 90)), (160.0, (0x80, 64, 64)),
            (160.0, (0x90, 67, 90)), (250.0, (0x80, 67, 64))]


class Recorder:
    """The player's callbacks, as events a test can wait on."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.back: list[str] = []
        self.failed = threading.Event()
        self.ended = threading.Event()

    def player(self) -> Player:
        return Player(prebuffer_ms=0, on_error=lambda m: (self.errors.append(m), self.failed.set()),
                      on_end=self.ended.set, on_reconnect=self.back.append)


def play_to_the_end(player: Player, recorder: Recorder, piece, end_ms: float) -> None:  # noqa: ANN001
    recorder.ended.clear()
    player.load(piece, end_ms=end_ms)
    player.play()
    assert recorder.ended.wait(LOG_TIMEOUT), player.status()


def assert_played_cleanly_after(rig: SynthRig, since: int) -> None:
    """The new connection began with All Sound Off on every channel, the short piece's notes
    all reached the synth, and every note it started was released (no stuck notes)."""
    rig.wait_log(lambda _: len(rig.note_ons(since)) >= 3 and len(rig.note_offs(since)) >= 3, "the next piece's notes")
    text = rig.text(since)
    first_note = text.index("noteon")
    assert sorted({int(c) for c in re.findall(r"cc\t(\d+)\t120\t0", text[:first_note])}) == list(range(16))
    assert [(c, k) for c, k, _ in rig.note_ons(since)] == [(0, 60), (0, 64), (0, 67)]
    assert rig.note_offs(since) >= {(0, 60), (0, 64), (0, 67)}


def test_synth_that_goes_away_mid_piece_is_reported_and_the_next_piece_plays_when_it_is_back(
    synth_rig: SynthRig,
) -> None:
    recorder = Recorder()
    player = recorder.player()
    try:
        player.set_port(PortChoice.from_setting("port:JACK:rwkvsynth"))  # as the app restores it
        assert player.port_choice == PortChoice("JACK", "rwkvsynth")
        start = synth_rig.mark()
        player.load(long_note_piece(), end_ms=20_000)
        player.play()
        synth_rig.wait_log(lambda _: bool(synth_rig.note_ons(start)), "the note to sound")
        synth_rig.kill_synth()
        assert recorder.failed.wait(LOG_TIMEOUT)
        status = player.status()
        assert status.state == PlayerState.PAUSED and status.sink is None
        assert 0 < status.position_ms < 20_000
        player.feed([(25_000, (0x97, 62, 90))])  # a generator feeding on is unaffected
        # While it is down, the next piece plays silently, without another error.
        play_to_the_end(player, recorder, short_piece(), 300)
        assert player.sink is None and recorder.back == []
        synth_rig.start_synth()
        back = synth_rig.mark()
        play_to_the_end(player, recorder, short_piece(), 300)
        assert recorder.back == ["rwkvsynth:midi_00 (JACK)"]
    finally:
        player.close()
    assert len(recorder.errors) == 1 and "rwkvsynth:midi_00" in recorder.errors[0] and "disappeared" in recorder.errors[0]
    assert_played_cleanly_after(synth_rig, back)


def test_jack_server_that_stops_mid_piece_is_reported_and_the_next_piece_plays_when_it_is_back(
    synth_rig: SynthRig,
) -> None:
    """A dead JACK server is invisible to its clients (their port list is its stale shared
    memory), libjack writes its complaints to the C stderr, and closing the dead server's
    client after any new client was tried crashes the process: none of that may show."""
    recorder = Recorder()
    player = recorder.player()
    try:
        player.set_port(PortChoice("JACK", "rwkvsynth"))
        start = synth_rig.mark()
        player.load(long_note_piece(), end_ms=20_000)
        player.play()
        synth_rig.wait_log(lambda _: bool(synth_rig.note_ons(start)), "the note to sound")
        synth_rig.stop_jack()
        assert recorder.failed.wait(LOG_TIMEOUT)
        assert recorder.errors == ["the JACK server stopped: rwkvsynth:midi_00 (JACK) is gone"]
        assert player.status().state == PlayerState.PAUSED
        # Listing ports (a new JACK client) with the server gone, then the next piece: silent.
        assert any("no JACK server" in problem for problem in list_output_ports().problems)
        play_to_the_end(player, recorder, short_piece(), 300)
        assert player.sink is None and len(recorder.errors) == 1
        synth_rig.kill_synth()  # it lost its server: a new one needs a new synth
        synth_rig.start_jack()
        synth_rig.start_synth()
        back = synth_rig.mark()
        play_to_the_end(player, recorder, short_piece(), 300)
        assert recorder.back == ["rwkvsynth:midi_00 (JACK)"]
    finally:
        player.close()
    assert_played_cleanly_after(synth_rig, back)


def test_libjack_complaints_never_reach_the_terminal(synth_rig: SynthRig, capfd) -> None:
    """libjack writes "Cannot read socket fd", "JackSocketClientChannel read fail" and the like to
    the C stderr when its server dies and when a client of the dead server closes; in the app that
    is the terminal the UI draws on."""
    recorder = Recorder()
    player = recorder.player()
    try:
        player.set_port(PortChoice("JACK", "rwkvsynth"))
        player.load(long_note_piece(), end_ms=20_000)
        player.play()
        capfd.readouterr()
        synth_rig.stop_jack()
        assert recorder.failed.wait(LOG_TIMEOUT)
    finally:
        player.close()
    assert list_output_ports().ports == []  # a new client, with the server gone
    assert capfd.readouterr().err == ""
