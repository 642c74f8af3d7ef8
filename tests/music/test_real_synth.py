"""Real synthesizer tests: our player drives FluidSynth through JACK, and FluidSynth renders.

jackd runs with the dummy driver under a private server name, FluidSynth takes MIDI from a
JACK port and logs every note it starts (-v), so the test sees exactly what reached the synth.
Every process started here is stopped by its own handle, also when a test fails.
"""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

from engine.music import midi_codec as codec
from engine.music.player import Player, PlayerState
from engine.music.ports import PortChoice, list_output_ports, open_sink
from engine.music.render import find_soundfont, render_wav
from tests.helpers import require_tool

pytestmark = pytest.mark.system_tools

#: A short band piece: drums, bass, piano chords and a violin line (all keys with GM sounds).
PIECE = (
    "<start> p:24:9 p:2a:6 b:24:8 pi:3c:a pi:40:9 pi:43:9 t31 p:24:0 p:2a:0 p:2a:6 v:48:8 t31 "
    "p:2a:0 b:24:0 pi:3c:0 pi:40:0 pi:43:0 p:26:9 b:2b:8 pi:3e:a pi:41:9 pi:45:9 v:48:0 v:4a:8 t31 "
    "p:26:0 p:2a:6 t31 p:2a:0 b:2b:0 pi:3e:0 pi:41:0 pi:45:0 v:4a:0 p:24:9 b:30:8 pi:40:a pi:43:9 "
    "pi:48:9 v:4c:9 t62 p:24:0 b:30:0 pi:40:0 pi:43:0 pi:48:0 v:4c:0 <end>"
)


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def fluidsynth_port(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Path, subprocess.Popen]]:
    """(JACK port name of a running FluidSynth, its verbose log, its process)."""
    require_tool("jackd", "fluidsynth")
    soundfont = find_soundfont()
    server = f"rwkvtest{os.getpid()}"
    monkeypatch.setenv("JACK_DEFAULT_SERVER", server)  # our rtmidi client joins this server
    env = dict(os.environ, JACK_DEFAULT_SERVER=server, JACK_NO_START_SERVER="1")
    jack_log = tmp_path / "jackd.log"
    synth_log = tmp_path / "fluidsynth.log"
    processes: list[subprocess.Popen] = []
    try:
        with open(jack_log, "wb") as log:
            processes.append(subprocess.Popen(
                ["jackd", "-n", server, "--no-realtime", "-d", "dummy", "-r", "48000", "-p", "256"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
            ))
        _wait(lambda: not any(problem.startswith("JACK") for problem in list_output_ports().problems), 15, "jackd")
        with open(synth_log, "wb") as log:
            # stdin stays open (a pipe): FluidSynth with no MIDI file and no shell server would
            # otherwise exit at once.
            processes.append(subprocess.Popen(
                ["fluidsynth", "-v", "-a", "jack", "-m", "jack", "-g", "0.5",
                 "-o", "audio.jack.autoconnect=0", "-o", "midi.jack.id=rwkvsynth",
                 "-o", "audio.jack.id=rwkvsynth", str(soundfont)],
                stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT, env=env,
            ))
        # The banner comes after the sound font is loaded and the drivers are up.
        _wait(lambda: "help topics" in synth_log.read_text(errors="replace"), 60, "FluidSynth to start")
        yield "rwkvsynth:midi_00", synth_log, processes[-1]
    finally:
        for process in reversed(processes):
            if process.stdin:
                process.stdin.close()
            _stop(process)
        assert all(p.poll() is not None for p in processes)


def synth_note_ons(log: Path) -> list[tuple[int, int, int]]:
    """Note-ons FluidSynth started, in order: (channel, key, velocity), one per note (a note
    with several voices logs several lines with the same note id)."""
    seen: set[str] = set()
    notes: list[tuple[int, int, int]] = []
    for line in log.read_text(errors="replace").splitlines():
        match = re.search(r"noteon\t(\d+)\t(\d+)\t(\d+)\t(\d+)", line)
        if match and match.group(4) not in seen:
            seen.add(match.group(4))
            notes.append((int(match.group(1)), int(match.group(2)), int(match.group(3))))
    return notes


def test_streamed_piece_reaches_fluidsynth_in_order(fluidsynth_port) -> None:
    port, log, _synth = fluidsynth_port
    listing = list_output_ports()
    assert port in [p.name for p in listing.ports if p.api == "JACK"]
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
        assert ended.wait(20), player.status()
        assert player.status().state == PlayerState.ENDED
    finally:
        player.close()
    assert errors == []
    expected = [(e.channel, e.note, e.velocity) for e in codec.decode_tokens(PIECE).events if e.is_on]
    _wait(lambda: len(synth_note_ons(log)) >= len(expected), 5, "FluidSynth's log")
    assert synth_note_ons(log) == expected
    # FluidSynth logs what it received a little later than we sent it: wait for the last of it.
    def after_banner() -> str:
        return log.read_text(errors="replace").split("help topics", 1)[1]

    def all_sound_off(text: str) -> list[int]:
        tail = text[text.rindex("noteon"):] if "noteon" in text else ""
        return sorted(int(c) for c in re.findall(r"cc\t(\d+)\t120\t0", tail))

    _wait(lambda: all_sound_off(after_banner()) == list(range(16)), 5, "All Sound Off on 16 channels")
    text = after_banner()
    offs = re.findall(r"noteoff\t(\d+)\t(\d+)\t", text)
    assert {(int(c), int(k)) for c, k in offs} == {(c, k) for c, k, _ in expected}
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


def test_synth_that_goes_away_mid_piece_is_reported(fluidsynth_port) -> None:
    _port, _log, synth = fluidsynth_port
    errors: list[str] = []
    reported = threading.Event()
    player = Player(prebuffer_ms=0, on_error=lambda message: (errors.append(message), reported.set()))
    try:
        player.set_port(PortChoice.from_setting("port:JACK:rwkvsynth"))  # as the app restores it
        assert player.port_choice == PortChoice("JACK", "rwkvsynth")
        events = codec.decode_tokens("pi:3c:a " + "t125 " * 20 + "pi:3c:0").events
        player.load([(e.time_ms, (0x97 if e.is_on else 0x87, e.note, e.velocity or 64)) for e in events], end_ms=20_000)
        player.play()
        time.sleep(0.3)
        _stop(synth)
        assert reported.wait(10)
        status = player.status()
        assert status.state == PlayerState.PAUSED and status.sink is None
        assert 0 < status.position_ms < 20_000
        player.feed([(25_000, (0x97, 62, 90))])  # a generator feeding on is unaffected
    finally:
        player.close()
    assert len(errors) == 1 and "rwkvsynth:midi_00" in errors[0] and "disappeared" in errors[0]
