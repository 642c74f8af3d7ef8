"""Playback: the schedule's clock rules (deterministic) and the threaded player on a fake sink."""

from __future__ import annotations

import threading
import time

import mido
import pytest

from engine.music import midi_codec as codec
from engine.music.errors import MidiPortError
from engine.music.player import (
    PlaybackSchedule, Player, PlayerState, midi_file_timeline, note_event_messages,
)
from engine.music.ports import PortChoice, RecordingSink, list_output_ports, open_sink


def note(time_ms: float, pitch: int = 60, channel: int = 7) -> tuple[float, tuple[int, ...]]:
    return (time_ms, (0x90 | channel, pitch, 100))


def times(due) -> list[float]:
    return [t for t, _ in due]


# --------------------------------------------------------------------------- schedule


def test_finished_piece_plays_on_absolute_deadlines() -> None:
    s = PlaybackSchedule()
    s.feed([note(0), note(100), note(250)])
    s.finish(400)
    s.play(now=10.0)
    assert s.poll(10.0) == ([note(0)], pytest.approx(10.1))
    assert s.poll(10.05) == ([], pytest.approx(10.1))
    # A late wake-up plays what is due, and the next deadline is still anchored at the start.
    due, wake = s.poll(10.26)
    assert times(due) == [100, 250] and wake == pytest.approx(10.4)
    assert s.poll(10.4) == ([], None) and s.state == PlayerState.ENDED
    assert s.position(11.0) == 400


def test_tempo_scales_the_remaining_time_only() -> None:
    s = PlaybackSchedule()
    s.feed([note(0), note(1000), note(2000)])
    s.finish()
    s.play(now=0.0)
    s.poll(0.0)
    s.set_tempo(2.0, now=0.5)  # at musical 500 ms, double speed
    due, wake = s.poll(0.5)
    assert due == [] and wake == pytest.approx(0.75)
    assert times(s.poll(0.75)[0]) == [1000]
    assert s.poll(0.75)[1] == pytest.approx(1.25)


def test_underrun_pauses_the_musical_clock_instead_of_bunching() -> None:
    s = PlaybackSchedule(prebuffer_ms=300)
    s.feed([note(t) for t in range(0, 500, 100)], horizon_ms=500)
    s.play(now=0.0)
    assert times(s.poll(0.0)[0]) == [0]
    due, wake = s.poll(0.45)
    assert times(due) == [100, 200, 300, 400] and wake == pytest.approx(0.5)
    assert s.poll(0.6) == ([], None)  # reached the horizon: clock held
    assert s.buffering and s.underruns == 1
    assert s.position(0.9) == 500
    s.feed([note(500), note(600)], horizon_ms=700)  # only 200 ms ahead: keep waiting
    assert s.poll(1.0) == ([], None) and s.position(1.0) == 500
    s.feed([note(700), note(800)], horizon_ms=900)
    due, wake = s.poll(2.0)  # resumes now, from 500 ms: 600 ms is 0.1 s later, not overdue
    assert times(due) == [500] and wake == pytest.approx(2.1)
    assert times(s.poll(2.1)[0]) == [600]


def test_notes_at_the_horizon_wait_for_their_time_step_to_complete() -> None:
    s = PlaybackSchedule(prebuffer_ms=0)
    s.feed([note(0), note(500, 64)], horizon_ms=500)  # more notes may still join step 500
    s.play(now=0.0)
    assert times(s.poll(0.0)[0]) == [0]
    assert s.poll(0.6) == ([], None)
    s.feed([note(500, 67)], horizon_ms=540)
    assert [m[1] for _, m in s.poll(0.7)[0]] == [64, 67]  # the whole chord together


def test_pause_resume_and_seek() -> None:
    s = PlaybackSchedule(prebuffer_ms=0)
    s.feed([note(0), note(100), note(200)])
    s.finish(300)
    s.play(now=0.0)
    s.poll(0.0)
    s.pause(now=0.05)
    assert s.position(5.0) == pytest.approx(50)
    s.play(now=5.0)
    assert s.poll(5.0) == ([], pytest.approx(5.05))
    assert times(s.poll(5.05)[0]) == [100]
    s.seek(150, now=6.0)
    assert s.poll(6.0) == ([], pytest.approx(6.05))
    assert times(s.poll(6.05)[0]) == [200]
    s.stop()
    assert s.state == PlayerState.STOPPED and s.position(7.0) == 0 and s.index == 0


def test_a_new_play_after_the_end_starts_over() -> None:
    s = PlaybackSchedule()
    s.feed([note(0)])
    s.finish(10)
    s.play(now=0.0)
    s.poll(0.0)
    s.poll(1.0)
    assert s.state == PlayerState.ENDED
    s.play(now=2.0)
    assert times(s.poll(2.0)[0]) == [0]


# --------------------------------------------------------------------------- conversions


def test_note_events_and_midi_files_become_timed_messages() -> None:
    events = codec.decode_tokens("pi:3c:a t62 pi:3c:0 p:24:5").events
    assert note_event_messages(events) == [(0, (0x97, 60, 111)), (496, (0x87, 60, 64)), (496, (0x99, 36, 47))]
    mid = codec.events_to_midi(events)
    entries, end_ms = midi_file_timeline(mid)
    assert [m for _, m in entries[:13]] == [(0xC0 | c, p) for c, p in codec.CHANNEL_PROGRAMS]
    notes = entries[13:]
    assert [m for _, m in notes] == [(0x97, 60, 111), (0x87, 60, 64), (0x99, 36, 47)]
    assert notes[1][0] == pytest.approx(476 / 0.96, abs=0.01)  # 476 ticks at 120 bpm / 480 tpqn
    assert end_ms == pytest.approx(notes[-1][0])


# --------------------------------------------------------------------------- threaded player


def wait_for(predicate, timeout: float = 60.0) -> None:
    """Until ``predicate`` holds; the timeout only ends a hung test (a loaded machine is slow, not wrong)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the player")
        time.sleep(0.005)


def silence_tail(sink: RecordingSink) -> list[tuple[int, ...]]:
    return [(0xB0 | ch, control, 0) for ch in range(16) for control in (64, 123, 120)]


def test_player_sends_programs_then_notes_never_early() -> None:
    sink = RecordingSink()
    ended = threading.Event()
    with Player(sink, on_end=ended.set) as player:
        events = codec.decode_tokens("pi:3c:a t10 pi:40:a t10 pi:3c:0 pi:40:0 t5").events
        player.load(note_event_messages(events), end_ms=200)
        start = time.monotonic()
        player.play()
        assert player.wait(5) and ended.wait(1)
        assert player.status().state == PlayerState.ENDED
        sent = list(sink.sent)
    messages = [m for _, m in sent]
    assert messages[:13] == [(0xC0 | c, p) for c, p in sorted(codec.CHANNEL_PROGRAMS)]
    notes = [(t, m) for t, m in sent if m[0] & 0xF0 in (0x80, 0x90)]
    assert [m for _, m in notes] == [(0x97, 60, 111), (0x97, 64, 111), (0x87, 60, 64), (0x87, 64, 64)]
    # Never early: each message goes out no sooner than its musical time after the start.
    for (t, _), expected_ms in zip(notes, (0, 80, 160, 160)):
        assert t - start >= expected_ms / 1000 - 0.002
    assert messages[-1][1] == 123  # ended gently: notes off, release tails kept (no CC120)


def test_resume_and_seek_strike_again_the_notes_still_sounding() -> None:
    """A long note cut off by pause sounds again on resume; finished notes and drums do not."""
    sink = RecordingSink()
    with Player(sink) as player:
        player.load([
            note(0, 60), note(0, 62), (10, (0x87, 62, 64)),  # 60 is held to 5000 ms, 62 ends at 10 ms
            note(0, 36, channel=9),                             # a drum hit, never released
            (5000, (0x87, 60, 64)), note(5000, 64),
        ], end_ms=6000)
        player.play()
        wait_for(lambda: (0x87, 62, 64) in sink.messages())
        player.pause()
        count = len(sink.messages())
        player.play()
        wait_for(lambda: (0x97, 60, 100) in sink.messages()[count:])
        resumed = [m for m in sink.messages()[count:] if m[0] & 0xF0 == 0x90]
        assert resumed == [(0x97, 60, 100)]
        count = len(sink.messages())
        player.seek(5500)  # past the end of note 60 and the start of note 64: 64 is held there
        wait_for(lambda: any(m[0] & 0xF0 == 0x90 for m in sink.messages()[count:]))
        assert [m for m in sink.messages()[count:] if m[0] & 0xF0 == 0x90][:1] == [(0x97, 64, 100)]


def test_stop_and_pause_silence_everything() -> None:
    sink = RecordingSink()
    with Player(sink) as player:
        player.load([note(0, 60), note(0, 62, channel=9), note(5000, 64)], end_ms=6000)
        player.play()
        wait_for(lambda: sum(1 for m in sink.messages() if m[0] & 0xF0 == 0x90) == 2)
        player.pause()
        tail = sink.messages()[-(2 + 48):]
        assert sorted(tail[:2]) == [(0x87, 60, 64), (0x89, 62, 64)]
        assert tail[2:] == silence_tail(sink)
        position = player.position_ms
        assert player.status().state == PlayerState.PAUSED
        time.sleep(0.05)
        assert player.position_ms == position
        assert player.wait(timeout=0.01)  # nothing is running
        count = len(sink.messages())
        player.stop()
        assert sink.messages()[count:] == silence_tail(sink)  # nothing held any more
        assert player.position_ms == 0
    assert sink.closed


def test_close_silences_and_ends_the_thread() -> None:
    sink = RecordingSink()
    player = Player(sink)
    player.load([note(0)], end_ms=10_000)
    player.play()
    wait_for(lambda: any(m[0] == 0x97 for m in sink.messages()))
    player.close()
    assert sink.messages()[-48:] == silence_tail(sink) and (0x87, 60, 64) in sink.messages()
    assert not player._thread.is_alive()
    player.close()  # idempotent


def test_streaming_underrun_holds_the_clock(monkeypatch) -> None:
    sink = RecordingSink()
    with Player(sink, prebuffer_ms=100) as player:
        player.begin()
        player.feed([note(0, 60), note(100, 61)], horizon_ms=150)
        player.play()
        wait_for(lambda: any(m[1] == 61 for m in sink.messages() if m[0] == 0x97))
        time.sleep(0.3)  # the writer is slow: the clock waits at 150 ms
        assert player.status().buffering and player.position_ms == 150
        fed_at = time.monotonic()
        player.feed([note(200, 62), note(300, 63)], horizon_ms=400)
        player.finish(400)
        wait_for(lambda: player.status().state == PlayerState.ENDED)
    sent = {m[1]: t for t, m in sink.sent if m[0] == 0x97}
    # The clock resumed from 150 ms when the music arrived: each note keeps its own deadline
    # after that moment (never early), instead of being rushed out to catch up.
    assert sent[62] >= fed_at + 0.05 - 0.002
    assert sent[63] >= fed_at + 0.15 - 0.002
    assert sent[62] - sent[61] >= 0.3  # the pause happened between them


def test_velocity_scale_and_tempo_are_live() -> None:
    sink = RecordingSink()
    with Player(sink, prebuffer_ms=0) as player:
        player.velocity_scale = 0.5
        player.tempo = 4.0
        player.load([note(0), note(400, 62)], end_ms=400)
        start = time.monotonic()
        player.play()
        wait_for(lambda: player.status().state == PlayerState.ENDED)
    notes = [(t, m) for t, m in sink.sent if m[0] == 0x97]
    assert [m[2] for _, m in notes] == [50, 50]
    assert notes[1][0] - start < 0.4  # four times as fast: 100 ms, not 400 ms
    assert notes[1][0] - start >= 0.1 - 0.002


def test_a_port_that_fails_notifies_once_and_keeps_the_position() -> None:
    errors: list[str] = []
    sink = RecordingSink(fail_after=15)  # 13 program changes, then two notes
    with Player(sink, prebuffer_ms=0, on_error=errors.append) as player:
        player.load([note(0, 60), note(0, 61), note(50, 62), note(100, 63)], end_ms=200)
        player.play()
        wait_for(lambda: bool(errors))
        status = player.status()
        assert status.state == PlayerState.PAUSED and status.sink is None
        assert status.error == "recording sink: port disappeared"
        player.feed([note(300, 64)])  # the writer keeps going without trouble
        time.sleep(0.05)
    assert errors == ["recording sink: port disappeared"]
    assert sink.closed


def test_a_port_that_vanishes_is_noticed_by_the_health_check() -> None:
    errors: list[str] = []
    sink = RecordingSink()
    with Player(sink, on_error=errors.append) as player:
        player.load([note(0), note(5000)], end_ms=6000)
        player.play()
        wait_for(lambda: any(m[0] == 0x97 for m in sink.messages()))
        sink.vanish = True
        wait_for(lambda: bool(errors))
        assert player.status().state == PlayerState.PAUSED


def test_switching_sinks_silences_the_old_and_programs_the_new() -> None:
    old, new = RecordingSink(), RecordingSink()
    with Player(old) as player:
        player.load([note(0), note(3000, 62)], end_ms=4000)
        player.play()
        wait_for(lambda: any(m[0] == 0x97 for m in old.messages()))
        player.set_sink(new)
        assert old.closed and old.messages()[-48:] == silence_tail(old)
        assert new.messages()[:13] == [(0xC0 | c, p) for c, p in sorted(codec.CHANNEL_PROGRAMS)]


def test_abc2midi_style_files_keep_their_own_programs() -> None:
    mid = mido.MidiFile()
    track = mido.MidiTrack()
    mid.tracks.append(track)
    track.extend([mido.Message("program_change", channel=1, program=24), mido.Message("note_on", channel=1, note=50, velocity=90),
                  mido.Message("note_off", channel=1, note=50, time=48)])
    sink = RecordingSink()
    with Player(sink) as player:
        player.load_midi(mid)
        player.play()
        wait_for(lambda: player.status().state == PlayerState.ENDED)
    notes_and_programs = [m for m in sink.messages() if m[0] & 0xF0 in (0x80, 0x90, 0xC0)]
    assert notes_and_programs == [(0xC1, 24), (0x91, 50, 90), (0x81, 50, 64)]


# --------------------------------------------------------------------------- ports


def test_port_choice_round_trips_as_a_setting() -> None:
    for choice in (PortChoice("JACK", "fluidsynth-midi:midi_00"), PortChoice("ALSA", "rwkv out", virtual=True)):
        assert PortChoice.from_setting(choice.to_setting()) == choice
    with pytest.raises(MidiPortError, match="is not of the form"):
        PortChoice.from_setting("fluidsynth")


def test_listing_ports_reports_unusable_apis_instead_of_failing(capfd) -> None:
    listing = list_output_ports()
    assert all(p.api in ("ALSA", "JACK") for p in listing.ports)
    assert all("\n" not in problem for problem in listing.problems)
    out, err = capfd.readouterr()
    assert "ALSA lib" not in err and "Cannot connect" not in err  # C-library noise is muted


def test_opening_a_missing_port_is_one_line(monkeypatch) -> None:
    monkeypatch.setenv("JACK_DEFAULT_SERVER", "rwkv-tui-test-no-such-server")
    with pytest.raises(MidiPortError) as info:
        open_sink(PortChoice("JACK", "nothing-here"))
    assert "\n" not in str(info.value)
    with pytest.raises(MidiPortError, match="not available here"):
        open_sink(PortChoice("CoreMIDI", "IAC"))


def test_set_port_failure_keeps_the_current_output(monkeypatch) -> None:
    monkeypatch.setenv("JACK_DEFAULT_SERVER", "rwkv-tui-test-no-such-server")
    sink = RecordingSink()
    with Player(sink) as player:
        with pytest.raises(MidiPortError):
            player.set_port(PortChoice("JACK", "nothing-here"))
        assert player.sink is sink and player.port_choice is None
        player.set_port(None)
        assert player.sink is None and sink.closed


def test_a_lost_port_is_opened_again_for_the_next_piece(monkeypatch) -> None:
    """Kill the synthesizer mid-piece: one error, and the next pieces play silently while it is
    down (no error per piece). When it is back, the next piece plays there again, starting with
    All Notes Off and All Sound Off on all 16 channels, and every note it strikes is released."""
    import engine.music.player as player_module

    available: list[RecordingSink] = [RecordingSink("synth (JACK)", fail_after=15)]
    opened: list[RecordingSink] = []

    def open_sink_fake(choice: PortChoice, client_name: str = "") -> RecordingSink:
        if not available:
            raise MidiPortError(f"MIDI port {choice.name!r} (JACK) not found; available: none")
        opened.append(available.pop(0))
        return opened[-1]

    monkeypatch.setattr(player_module, "open_sink", open_sink_fake)
    errors: list[str] = []
    back: list[str] = []
    ended = threading.Event()
    piece = [note(0, 60), (40, (0x87, 60, 64)), note(40, 62), (80, (0x87, 62, 64))]
    with Player(prebuffer_ms=0, on_error=errors.append, on_reconnect=back.append, on_end=ended.set) as player:
        player.set_port(PortChoice("JACK", "synth"))
        player.load([note(0, 60), note(0, 61), note(50, 62), note(100, 63)], end_ms=200)
        player.play()
        wait_for(lambda: bool(errors))
        assert player.status().sink is None
        # Still down: the next piece is written and played silently, without a second error.
        ended.clear()
        player.load(piece, end_ms=100)
        player.play()
        assert ended.wait(5) and player.sink is None and len(opened) == 1
        # Back: the next piece plays to it.
        available.append(RecordingSink("synth (JACK)"))
        ended.clear()
        player.load(piece, end_ms=100)
        assert player.sink is opened[1] and player.port_choice == PortChoice("JACK", "synth")
        player.play()
        assert ended.wait(5)
        wait_for(lambda: back == ["synth (JACK)"])
    assert errors == ["recording sink: port disappeared"]
    sent = opened[1].messages()
    assert sent[:48] == silence_tail(opened[1])  # a synth that stayed up holds nothing of the old piece
    assert sent[48:61] == [(0xC0 | c, p) for c, p in sorted(codec.CHANNEL_PROGRAMS)]
    struck = [m[:2] for m in sent if m[0] & 0xF0 == 0x90 and m[2] > 0]
    released = [m[:2] for m in sent if m[0] & 0xF0 == 0x80]
    assert struck == [(0x97, 60), (0x97, 62)] and sorted(released) == sorted((0x87, n) for _, n in struck)


def test_picking_an_output_while_the_port_is_lost_is_the_users_choice(monkeypatch) -> None:
    import engine.music.player as player_module

    calls: list[PortChoice] = []
    monkeypatch.setattr(player_module, "open_sink",
                        lambda choice, client_name="": (calls.append(choice), RecordingSink(fail_after=0))[1])
    errors: list[str] = []
    with Player(prebuffer_ms=0, on_error=errors.append) as player:
        player.set_port(PortChoice("JACK", "synth"))
        player.load([note(0)], end_ms=50)
        player.play()
        wait_for(lambda: bool(errors))
        player.set_sink(None)  # "No output (silent)": not reopened behind the user's back
        player.load([note(0)], end_ms=50)
    assert calls == [PortChoice("JACK", "synth")]
