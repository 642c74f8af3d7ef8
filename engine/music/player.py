"""Live MIDI playback: a player thread that follows absolute deadlines on a monotonic clock.

Music arrives while a model is still writing it, so the player plays from a lookahead buffer
that only grows: every fed message has a musical time, and the feeder also says how far the
music is known (the *horizon*). When playback catches up with the horizon, the musical clock
stops there and waits until enough is buffered again (*prebuffer*) — notes are never bunched
up to catch up. Deadlines are computed from one anchor (wall time, musical time) and never
from the previous sleep, so timing does not drift.

Whatever ends the sound — stop, pause, a new piece, closing the app — the synthesizer is
silenced the same thorough way: note-offs for every note we started, sustain off, then All
Notes Off (CC123) and All Sound Off (CC120) on all 16 channels.

A port that goes away mid-piece (the synthesizer or the JACK server killed) is reported once;
the music goes on being written and played silently, and each new piece tries the port again, so
play resumes on the next piece once the synthesizer is back, starting from a silenced synth.

The scheduling rules live in ``PlaybackSchedule``, a plain object driven with explicit times,
so they are tested without threads or sleeps; ``Player`` adds the thread, the sink and the
thread-safe controls.
"""

from __future__ import annotations

import atexit
import bisect
import enum
import math
import threading
import time
import weakref
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import mido

from engine.music.errors import MidiPortError, MusicError
from engine.music.midi_codec import CHANNEL_PROGRAMS, NoteEvent
from engine.music.ports import DEFAULT_CLIENT_NAME, MidiSink, PortChoice, open_sink

#: (musical time in ms, raw MIDI bytes)
TimedMessage = tuple[float, tuple[int, ...]]

DEFAULT_PREBUFFER_MS = 300.0
HEALTH_CHECK_SECONDS = 0.5
MIN_TEMPO, MAX_TEMPO = 0.25, 4.0
MIN_VELOCITY_SCALE, MAX_VELOCITY_SCALE = 0.0, 2.0


def check_tempo(tempo: float) -> float:
    """``tempo`` if it is a playback speed the player offers; MusicError with the range if not.

    For values a user gives outright (the CLI); the player's own setter clamps, for UI steps.
    """
    if not MIN_TEMPO <= tempo <= MAX_TEMPO:  # NaN fails too
        raise MusicError(f"tempo must be between {MIN_TEMPO:g} and {MAX_TEMPO:g} (a speed factor), found {tempo:g}")
    return tempo


def check_volume(scale: float) -> float:
    """``scale`` if it is a velocity factor the player offers; MusicError with the range if not."""
    if not MIN_VELOCITY_SCALE <= scale <= MAX_VELOCITY_SCALE:
        raise MusicError(f"volume must be between {MIN_VELOCITY_SCALE:g} and {MAX_VELOCITY_SCALE:g} "
                         f"(a factor on note velocities), found {scale:g}")
    return scale


class PlayerState(str, enum.Enum):
    STOPPED = "stopped"  # at the start, not playing
    PLAYING = "playing"
    PAUSED = "paused"
    ENDED = "ended"  # played to the end of a finished piece


def note_event_messages(events: Iterable[NoteEvent]) -> list[TimedMessage]:
    """NoteEvents as timed raw messages (note-offs as 0x80 with release velocity 64)."""
    out: list[TimedMessage] = []
    for e in events:
        status = (0x90 if e.velocity > 0 else 0x80) | e.channel
        out.append((e.time_ms, (status, e.note, e.velocity if e.velocity > 0 else 64)))
    return out


def midi_file_timeline(mid: mido.MidiFile) -> tuple[list[TimedMessage], float]:
    """Channel messages of a MIDI file at absolute times (tempo map applied), and its length."""
    entries: list[TimedMessage] = []
    now_ms = 0.0
    for msg in mid:  # mido merges the tracks and converts delta ticks to seconds
        now_ms += msg.time * 1000.0
        if not msg.is_meta and msg.type != "sysex":
            entries.append((now_ms, tuple(msg.bytes())))
    return entries, now_ms


@dataclass
class PlayerStatus:
    state: PlayerState
    position_ms: float
    #: Musical time known so far (infinite once the piece is complete).
    horizon_ms: float
    end_ms: float | None
    #: True while the clock is held at the horizon, waiting for the music to be written.
    buffering: bool
    underruns: int
    tempo: float
    velocity_scale: float
    sink: str | None
    error: str | None


class PlaybackSchedule:
    """Which messages are due when: the player's clock, without threads or real time.

    Musical position = anchor_pos + (now − anchor_wall) × 1000 × tempo while running. Only
    messages strictly before the horizon are played (more notes may still join the step at
    the horizon), except once the piece is finished.
    """

    def __init__(self, prebuffer_ms: float = DEFAULT_PREBUFFER_MS) -> None:
        self.prebuffer_ms = prebuffer_ms
        self.times: list[float] = []
        self.messages: list[tuple[int, ...]] = []
        self.horizon_ms = 0.0
        self.finished = False
        self.end_ms: float | None = None
        self.index = 0
        self.state = PlayerState.STOPPED
        self.anchor_pos = 0.0
        self.anchor_wall = 0.0
        self.tempo = 1.0
        self.buffering = False
        self.underruns = 0

    # -- content

    def reset(self) -> None:
        """Forget the piece; the tempo is the listener's setting and stays."""
        tempo = self.tempo
        self.__init__(self.prebuffer_ms)  # type: ignore[misc]
        self.tempo = tempo

    def feed(self, entries: Iterable[TimedMessage], horizon_ms: float | None = None) -> None:
        for time_ms, message in entries:
            if self.times and time_ms < self.times[-1]:
                time_ms = self.times[-1]  # the buffer is append-only and ordered
            self.times.append(time_ms)
            self.messages.append(message)
        known = horizon_ms if horizon_ms is not None else (self.times[-1] if self.times else 0.0)
        self.horizon_ms = max(self.horizon_ms, known)

    def finish(self, end_ms: float | None = None) -> None:
        last = self.times[-1] if self.times else 0.0
        self.end_ms = max(last, self.horizon_ms, end_ms if end_ms is not None else 0.0)
        self.horizon_ms = max(self.horizon_ms, self.end_ms)
        self.finished = True

    @property
    def limit(self) -> float:
        return math.inf if self.finished else self.horizon_ms

    # -- clock

    def position(self, now: float) -> float:
        if self.state != PlayerState.PLAYING or self.buffering:
            return self.anchor_pos
        return min(self.anchor_pos + (now - self.anchor_wall) * 1000.0 * self.tempo, self._clock_limit())

    def _clock_limit(self) -> float:
        return self.end_ms if self.finished and self.end_ms is not None else self.horizon_ms

    def _reanchor(self, now: float) -> None:
        self.anchor_pos = self.position(now)
        self.anchor_wall = now

    def play(self, now: float) -> None:
        if self.state == PlayerState.PLAYING:
            return
        if self.state == PlayerState.ENDED:
            self.seek(0.0, now)
        self.state = PlayerState.PLAYING
        self.anchor_wall = now
        self.buffering = True  # start only with enough music ahead

    def pause(self, now: float) -> None:
        if self.state == PlayerState.PLAYING:
            self._reanchor(now)
            self.state = PlayerState.PAUSED
            self.buffering = False

    def stop(self) -> None:
        self.state = PlayerState.STOPPED
        self.buffering = False
        self.index = 0
        self.anchor_pos = 0.0

    def seek(self, position_ms: float, now: float) -> None:
        position_ms = max(0.0, position_ms)
        self.index = bisect.bisect_left(self.times, position_ms)
        self.anchor_pos = position_ms
        self.anchor_wall = now
        if self.state == PlayerState.ENDED:
            self.state = PlayerState.PAUSED
        if self.state == PlayerState.PLAYING:
            self.buffering = True

    def set_tempo(self, tempo: float, now: float) -> None:
        self._reanchor(now)
        self.tempo = min(MAX_TEMPO, max(MIN_TEMPO, tempo))

    # -- the scheduler step

    def poll(self, now: float) -> tuple[list[TimedMessage], float | None]:
        """Messages due at ``now`` and the wall time to look again (None: wait for a change)."""
        if self.state != PlayerState.PLAYING:
            return [], None
        if self.buffering:
            ahead = self.horizon_ms - self.anchor_pos
            if self.finished or ahead >= self.prebuffer_ms:
                self.buffering = False
                self.anchor_wall = now
            else:
                return [], None
        due: list[TimedMessage] = []
        limit = self.limit
        while self.index < len(self.times):
            t = self.times[self.index]
            if t >= limit:
                break
            wall = self.anchor_wall + (t - self.anchor_pos) / 1000.0 / self.tempo
            if wall > now:
                return due, wall
            due.append((t, self.messages[self.index]))
            self.index += 1
        target = self._clock_limit()
        target_wall = self.anchor_wall + (target - self.anchor_pos) / 1000.0 / self.tempo
        if now < target_wall:
            return due, target_wall
        # The clock has reached the horizon: the end of the piece, or an underrun.
        self.anchor_pos = target
        self.anchor_wall = now
        if self.finished:
            self.state = PlayerState.ENDED
        else:
            self.buffering = True
            self.underruns += 1
        return due, None


_players: "weakref.WeakSet[Player]" = weakref.WeakSet()


@atexit.register
def _silence_all_players() -> None:
    for player in list(_players):
        player.close()


class Player:
    """Plays timed MIDI to a sink from its own thread; every method is thread-safe.

    Callbacks (``on_error``, ``on_end``, ``on_reconnect``) run on the player thread: a UI must
    hand them over to its own thread. ``status()`` is cheap, for polling a playhead.
    """

    def __init__(
        self,
        sink: MidiSink | None = None,
        *,
        prebuffer_ms: float = DEFAULT_PREBUFFER_MS,
        on_error: Callable[[str], None] | None = None,
        on_end: Callable[[], None] | None = None,
        on_reconnect: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sink = sink
        self._port_choice: PortChoice | None = None
        #: The chosen port while it is gone (it failed mid-piece); tried again at the next piece.
        self._lost_port: PortChoice | None = None
        self._client_name = DEFAULT_CLIENT_NAME
        self._clock = clock
        self._schedule = PlaybackSchedule(prebuffer_ms)
        self._cond = threading.Condition()
        self._closed = False
        self._held: dict[tuple[int, int], None] = {}
        self._initial_programs: tuple[tuple[int, int], ...] = CHANNEL_PROGRAMS
        self._programs: dict[int, int] = dict(CHANNEL_PROGRAMS)
        self._velocity_scale = 1.0
        self._error: str | None = None
        self._callbacks: list[Callable[[], None]] = []
        self._last_check = 0.0
        self.on_error = on_error
        self.on_end = on_end
        #: Told the sink's description when a lost port is open again.
        self.on_reconnect = on_reconnect
        self._thread = threading.Thread(target=self._run, name="rwkv-midi-player", daemon=True)
        self._thread.start()
        _players.add(self)

    # ------------------------------------------------------------------ content

    def begin(self, programs: Sequence[tuple[int, int]] = CHANNEL_PROGRAMS) -> None:
        """Start a new piece that will be fed while it is written (silences the old one).

        A port that went away is tried again first (this can take a moment: call it from the
        thread that feeds the music, not a UI thread)."""
        self._reopen_lost_port()
        with self._cond:
            if self._schedule.state == PlayerState.PLAYING or self._held:
                self._silence()
            self._schedule.reset()
            self._initial_programs = tuple(programs)
            self._programs = dict(programs)
            self._error = None
            self._cond.notify_all()

    def load(self, entries: Iterable[TimedMessage], end_ms: float | None = None,
             programs: Sequence[tuple[int, int]] = CHANNEL_PROGRAMS) -> None:
        """Load a complete piece."""
        self._reopen_lost_port()  # before taking the lock: opening a port takes a moment
        with self._cond:
            self.begin(programs)
            self._schedule.feed(entries)
            self._schedule.finish(end_ms)
            self._cond.notify_all()

    def load_midi(self, mid: mido.MidiFile) -> None:
        """Load a complete MIDI file (e.g. from abc2midi); its own program changes apply."""
        entries, end_ms = midi_file_timeline(mid)
        self.load(entries, end_ms, programs=())

    def feed(self, entries: Iterable[TimedMessage], horizon_ms: float | None = None) -> None:
        """Append messages (in time order) and say how far the music is now known."""
        with self._cond:
            self._schedule.feed(entries, horizon_ms)
            self._cond.notify_all()

    def feed_events(self, events: Iterable[NoteEvent], horizon_ms: float | None = None) -> None:
        self.feed(note_event_messages(events), horizon_ms)

    def finish(self, end_ms: float | None = None) -> None:
        """No more music will come: play to ``end_ms`` (or the last message) and end."""
        with self._cond:
            self._schedule.finish(end_ms)
            self._cond.notify_all()

    # ------------------------------------------------------------------ transport

    def play(self) -> None:
        """Play from the current position (from the start after stop or at the end)."""
        with self._cond:
            schedule = self._schedule
            if schedule.state == PlayerState.PLAYING:
                return
            schedule.play(self._clock())
            self._error = None
            self._programs = self._programs_before(schedule.index)
            self._send_programs()
            self._restrike(schedule.index)
            self._cond.notify_all()

    def pause(self) -> None:
        with self._cond:
            self._schedule.pause(self._clock())
            self._silence()
            self._cond.notify_all()

    def toggle(self) -> None:
        with self._cond:
            playing = self._schedule.state == PlayerState.PLAYING
        self.pause() if playing else self.play()

    def stop(self) -> None:
        with self._cond:
            self._schedule.stop()
            self._silence()
            self._cond.notify_all()

    def replay(self) -> None:
        self.stop()
        self.play()

    def seek(self, position_ms: float) -> None:
        with self._cond:
            self._silence()
            self._schedule.seek(position_ms, self._clock())
            self._programs = self._programs_before(self._schedule.index)
            if self._schedule.state == PlayerState.PLAYING:
                self._send_programs()
                self._restrike(self._schedule.index)
            self._cond.notify_all()

    @property
    def tempo(self) -> float:
        return self._schedule.tempo

    @tempo.setter
    def tempo(self, value: float) -> None:
        """Playback speed (1.0 = as written; 0.25–4); takes effect at once."""
        with self._cond:
            self._schedule.set_tempo(value, self._clock())
            self._cond.notify_all()

    @property
    def velocity_scale(self) -> float:
        return self._velocity_scale

    @velocity_scale.setter
    def velocity_scale(self, value: float) -> None:
        """Volume as a factor on note velocities (0–2); applies to the next notes."""
        with self._cond:
            self._velocity_scale = min(MAX_VELOCITY_SCALE, max(MIN_VELOCITY_SCALE, value))

    # ------------------------------------------------------------------ output

    def set_sink(self, sink: MidiSink | None) -> None:
        """Switch output (None: silent). The old sink is silenced and closed."""
        with self._cond:
            old = self._sink
            if old is not None and old is not sink:
                self._silence()
                try:
                    old.close()
                except Exception:  # noqa: BLE001 - closing a broken port must not fail the switch
                    pass
            self._sink = sink
            self._port_choice = None
            self._lost_port = None  # the user decided: a lost port is not reopened behind their back
            self._error = None
            self._held.clear()
            if sink is not None and self._schedule.state == PlayerState.PLAYING:
                self._send_programs()
            self._cond.notify_all()

    @property
    def sink(self) -> MidiSink | None:
        return self._sink

    def set_port(self, choice: PortChoice | None, client_name: str = DEFAULT_CLIENT_NAME) -> None:
        """Open the chosen port and play there (None: no output). Raises MidiPortError with one
        line if it cannot be opened; the current output then stays as it was."""
        sink = open_sink(choice, client_name) if choice is not None else None
        self.set_sink(sink)
        self._port_choice = choice
        self._client_name = client_name

    def _reopen_lost_port(self) -> None:
        """Open the lost port again if it is back; if not, stay silent (the owner was told once)."""
        with self._cond:
            choice = self._lost_port if self._sink is None and not self._closed else None
        if choice is None:
            return
        try:
            sink = open_sink(choice, self._client_name)
        except MidiPortError:
            return
        with self._cond:
            if self._lost_port != choice or self._sink is not None or self._closed:
                sink.close()  # the user picked another output meanwhile
                return
            self._sink, self._port_choice, self._lost_port, self._error = sink, choice, None, None
            self._held.clear()
            # A synthesizer that stayed up (only the connection broke) may still sound the notes
            # of the piece that was cut off.
            self._silence()
            if self.on_reconnect is not None:
                callback, description = self.on_reconnect, sink.description
                self._callbacks.append(lambda: callback(description))
            self._cond.notify_all()

    @property
    def port_choice(self) -> PortChoice | None:
        """The port chosen with ``set_port`` (for the app to save; ``PortChoice.to_setting()``)."""
        return self._port_choice

    def status(self) -> PlayerStatus:
        with self._cond:
            s = self._schedule
            return PlayerStatus(
                state=s.state, position_ms=s.position(self._clock()),
                horizon_ms=math.inf if s.finished else s.horizon_ms, end_ms=s.end_ms,
                buffering=s.buffering and s.state == PlayerState.PLAYING, underruns=s.underruns,
                tempo=s.tempo, velocity_scale=self._velocity_scale,
                sink=self._sink.description if self._sink else None, error=self._error,
            )

    def wait(self, timeout: float | None = None) -> bool:
        """Block until playback is no longer running (ended, paused, stopped or failed).
        Returns False if ``timeout`` seconds passed first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.status().state == PlayerState.PLAYING:
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(0.02)
        return True

    @property
    def position_ms(self) -> float:
        with self._cond:
            return self._schedule.position(self._clock())

    def close(self) -> None:
        """Silence, close the sink and end the thread (safe to call more than once)."""
        with self._cond:
            if self._closed:
                return
            self._schedule.stop()
            self._silence()
            self._closed = True
            sink, self._sink = self._sink, None
            self._cond.notify_all()
        if sink is not None:
            try:
                sink.close()
            except Exception:  # noqa: BLE001
                pass
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=2.0)

    def __enter__(self) -> "Player":
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ internals (lock held)

    def _send(self, message: Sequence[int]) -> bool:
        sink = self._sink
        if sink is None:
            return True
        status = message[0] & 0xF0
        key = (message[0] & 0x0F, message[1]) if len(message) > 1 else None
        if status == 0x90 and message[2] > 0:
            velocity = min(127, round(message[2] * self._velocity_scale))
            if velocity <= 0:
                return True  # muted note; its note-off is harmless
            message = (message[0], message[1], velocity)
            self._held[key] = None  # type: ignore[index]
        elif status in (0x80, 0x90):
            self._held.pop(key, None)  # type: ignore[arg-type]
        elif status == 0xC0:
            self._programs[message[0] & 0x0F] = message[1]
        try:
            sink.send(message)
        except MidiPortError as exc:
            self._fail(str(exc))
            return False
        except Exception as exc:  # noqa: BLE001 - a port library failing must not kill playback
            self._fail(f"{sink.description}: {exc}")
            return False
        return True

    def _programs_before(self, index: int) -> dict[int, int]:
        """Program per channel in force at a timeline position (initial table + changes)."""
        programs = dict(self._initial_programs)
        for message in self._schedule.messages[:index]:
            if message[0] & 0xF0 == 0xC0:
                programs[message[0] & 0x0F] = message[1]
        return programs

    def _sounding_before(self, index: int) -> list[tuple[int, ...]]:
        """Note-ons still held at a timeline position (struck before it, released after it)."""
        held: dict[tuple[int, int], tuple[int, ...]] = {}
        for message in self._schedule.messages[:index]:
            status = message[0] & 0xF0
            if status == 0x90 and message[2] > 0:
                held[(message[0] & 0x0F, message[1])] = message
            elif status in (0x80, 0x90):
                held.pop((message[0] & 0x0F, message[1]), None)
        return list(held.values())

    def _restrike(self, index: int) -> None:
        """Sound again the notes a pause or seek cut off, so a long note resumes mid-way.

        Percussion (channel 10) is left alone: a held drum note is one hit, not a sustained
        sound, and striking it again would add a beat that is not in the piece.
        """
        for message in self._sounding_before(index):
            if message[0] & 0x0F != 9 and not self._send(message):
                return

    def _send_programs(self) -> None:
        for channel, program in sorted(self._programs.items()):
            if not self._send((0xC0 | channel, program)):
                return

    def _silence(self, hard: bool = True) -> None:
        """Note-offs for our notes, sustain off, All Notes Off and (``hard``) All Sound Off
        on all 16 channels. A piece that simply ends keeps its release tails (no CC120)."""
        if self._sink is None:
            self._held.clear()
            return
        for channel, note in list(self._held):
            if not self._send((0x80 | channel, note, 64)):
                return
        self._held.clear()
        controls = (64, 123, 120) if hard else (64, 123)
        for channel in range(16):
            for control in controls:
                if not self._send((0xB0 | channel, control, 0)):
                    return

    def _fail(self, message: str) -> None:
        """The port is gone: stop using it, keep the position, tell the owner once."""
        sink, self._sink = self._sink, None
        self._lost_port = self._port_choice
        self._held.clear()
        self._error = message
        self._schedule.pause(self._clock())
        if sink is not None:
            try:
                sink.close()
            except Exception:  # noqa: BLE001
                pass
        if self.on_error is not None:
            callback = self.on_error
            self._callbacks.append(lambda: callback(message))

    def _run(self) -> None:
        while True:
            with self._cond:
                if self._closed:
                    return
                now = self._clock()
                was_playing = self._schedule.state == PlayerState.PLAYING
                due, wake_at = self._schedule.poll(now)
                for _time_ms, message in due:
                    if not self._send(message):
                        break
                if was_playing and self._schedule.state == PlayerState.ENDED:
                    self._silence(hard=False)
                    if self.on_end is not None:
                        self._callbacks.append(self.on_end)
                playing = self._schedule.state == PlayerState.PLAYING
                if playing and self._sink is not None and now - self._last_check >= HEALTH_CHECK_SECONDS:
                    self._last_check = now
                    problem = self._sink.check()
                    if problem:
                        self._fail(problem)
                callbacks, self._callbacks = self._callbacks, []
                if not due and not callbacks:
                    timeout = None if wake_at is None else max(0.0, wake_at - self._clock())
                    if self._schedule.state == PlayerState.PLAYING and self._sink is not None:
                        timeout = HEALTH_CHECK_SECONDS if timeout is None else min(timeout, HEALTH_CHECK_SECONDS)
                    self._cond.wait(timeout)
            for callback in callbacks:
                try:
                    callback()
                except Exception:  # noqa: BLE001 - a faulty callback must not stop the player
                    pass
