"""A real synthesizer for tests: jackd (dummy driver, private server name) and FluidSynth on it.

Each process is started, killed and restarted by its own handle, so a test can take the synth or
the whole JACK server away in the middle of a piece and bring it back. FluidSynth runs verbose
(-v: a line per note it starts) and its output is read line by line on a thread: tests wait on
what it has logged (a condition variable), never for a length of time. The waits' timeouts are
generous safety nets for a loaded machine, not timing windows.

jackd is only ever stopped with SIGTERM: a jackd killed with SIGKILL keeps its slot in JACK's
shared registry of servers, and after eight such slots no jackd can start on the machine.
"""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest

from engine.music.ports import list_output_ports
from engine.music.render import find_soundfont
from tests.helpers import require_tool

#: Safety nets only: a process start or a log line that takes longer than this is a hang.
START_TIMEOUT = 120.0
LOG_TIMEOUT = 180.0
SYNTH_NAME = "rwkvsynth"


def _wait(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Until ``predicate`` holds (for conditions that no process reports: a port list)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


def _stop(process: subprocess.Popen | None, kill: bool = False) -> None:
    if process is None or process.poll() is not None:
        return
    if process.stdin:
        process.stdin.close()
    process.kill() if kill else process.terminate()
    try:
        process.wait(timeout=START_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=START_TIMEOUT)


class SynthRig:
    """jackd and FluidSynth for one test; ``port`` is FluidSynth's MIDI input on JACK."""

    port = f"{SYNTH_NAME}:midi_00"

    def __init__(self, folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        require_tool("jackd", "fluidsynth")
        self.soundfont = find_soundfont()
        self.server = f"rwkvtest{os.getpid()}"
        monkeypatch.setenv("JACK_DEFAULT_SERVER", self.server)  # our rtmidi clients join this server
        self.env = dict(os.environ, JACK_DEFAULT_SERVER=self.server, JACK_NO_START_SERVER="1")
        self.log = folder / "fluidsynth.log"
        self.jack_log = folder / "jackd.log"
        self.jack: subprocess.Popen | None = None
        self.synth: subprocess.Popen | None = None
        self._reader: threading.Thread | None = None
        self._text = ""  # everything every FluidSynth run printed, in order
        self._changed = threading.Condition()

    # ------------------------------------------------------------------ processes

    def start_jack(self) -> None:
        with open(self.jack_log, "ab") as log:
            self.jack = subprocess.Popen(
                # A period of 4096 frames (85 ms), not less: on a loaded machine a shorter cycle
                # overruns, and an overrun cycle can lose the MIDI our client wrote in it. (Not
                # -S: with a synchronous server a killed client's ports stay listed.)
                ["jackd", "-n", self.server, "--no-realtime", "-d", "dummy", "-r", "48000", "-p", "4096"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=self.env,
            )
        _wait(lambda: self.jack.poll() is not None
              or not any(problem.startswith("JACK") for problem in list_output_ports().problems),
              START_TIMEOUT, "jackd to take clients")
        assert self.jack.poll() is None, f"jackd exited: {self.jack_log.read_text(errors='replace')[-500:]}"

    def start_synth(self) -> None:
        start = self.mark()
        # stdin stays open (a pipe): FluidSynth with no MIDI file and no shell server would
        # otherwise exit at once.
        self.synth = subprocess.Popen(
            ["fluidsynth", "-v", "-a", "jack", "-m", "jack", "-g", "0.5",
             "-o", "audio.jack.autoconnect=0", "-o", f"midi.jack.id={SYNTH_NAME}",
             "-o", f"audio.jack.id={SYNTH_NAME}", str(self.soundfont)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=self.env,
        )
        self._reader = threading.Thread(target=self._read, args=(self.synth,), daemon=True)
        self._reader.start()
        # The banner comes after the sound font is loaded and the drivers are up.
        self.wait_log(lambda text: "help topics" in text[start:] or self.synth.poll() is not None,
                      "FluidSynth to start", START_TIMEOUT)
        assert self.synth.poll() is None, f"FluidSynth exited: {self._text[start:][-500:]}"
        _wait(lambda: self.port in [p.name for p in list_output_ports().ports], START_TIMEOUT,
              "FluidSynth's MIDI port")

    def kill_synth(self) -> None:
        """FluidSynth crashes (SIGKILL); returns once it is gone and its output is read."""
        _stop(self.synth, kill=True)
        if self._reader is not None:
            self._reader.join(timeout=LOG_TIMEOUT)

    def stop_jack(self) -> None:
        """The JACK server goes away (SIGTERM, see the module's note); returns once it has exited."""
        _stop(self.jack)

    def close(self) -> None:
        for process in (self.synth, self.jack):
            _stop(process)
        assert all(p is None or p.poll() is not None for p in (self.synth, self.jack))

    # ------------------------------------------------------------------ FluidSynth's log

    def _read(self, process: subprocess.Popen) -> None:
        assert process.stdout is not None
        with open(self.log, "ab") as copy:
            for line in iter(process.stdout.readline, b""):
                copy.write(line)
                copy.flush()
                with self._changed:
                    self._text += line.decode(errors="replace")
                    self._changed.notify_all()

    def mark(self) -> int:
        """A position in the log, to look only at what comes after it."""
        with self._changed:
            return len(self._text)

    def text(self, since: int = 0) -> str:
        with self._changed:
            return self._text[since:]

    def wait_log(self, predicate: Callable[[str], bool], what: str, timeout: float = LOG_TIMEOUT) -> None:
        """Until ``predicate(everything logged so far)`` holds; woken by each new line."""
        with self._changed:
            if not self._changed.wait_for(lambda: predicate(self._text), timeout):
                raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; "
                                     f"FluidSynth's log ends: {self._text[-300:]!r}")

    def note_ons(self, since: int = 0) -> list[tuple[int, int, int]]:
        return synth_note_ons(self.text(since))

    def note_offs(self, since: int = 0) -> set[tuple[int, int]]:
        return {(int(c), int(k)) for c, k in re.findall(r"noteoff\t(\d+)\t(\d+)\t", self.text(since))}

    def sound_off_channels(self, since: int = 0) -> list[int]:
        """Channels that got All Sound Off (CC120) after the last note-on since ``since``."""
        text = self.text(since)
        tail = text[text.rindex("noteon"):] if "noteon" in text else text
        return sorted({int(c) for c in re.findall(r"cc\t(\d+)\t120\t0", tail)})


def synth_note_ons(text: str) -> list[tuple[int, int, int]]:
    """Note-ons FluidSynth started, in order: (channel, key, velocity), one per note (a note
    with several voices logs several lines with the same note id)."""
    seen: set[str] = set()
    notes: list[tuple[int, int, int]] = []
    for line in text.splitlines():
        match = re.search(r"noteon\t(\d+)\t(\d+)\t(\d+)\t(\d+)", line)
        if match and match.group(4) not in seen:
            seen.add(match.group(4))
            notes.append((int(match.group(1)), int(match.group(2)), int(match.group(3))))
    return notes


@pytest.fixture
def synth_rig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SynthRig]:
    """jackd and FluidSynth, both running; stopped by their handles, also when a test fails."""
    rig = SynthRig(tmp_path, monkeypatch)
    try:
        rig.start_jack()
        rig.start_synth()
        yield rig
    finally:
        rig.close()
