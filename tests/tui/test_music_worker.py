"""The music thread with the real engine on tiny random models: events, playback feed, stop, errors."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from engine import load_model
from engine.music.player import Player, PlayerState
from engine.music.ports import RecordingSink
from tui.music_protocol import (
    MusicFailed, MusicFinished, MusicOutbox, MusicPreview, MusicProgress, MusicRequest, MusicStarted,
)
from tui.music_settings import MusicSettings
from tui.music_worker import NO_MODEL, MusicWorker, midi_note_events, token_display


@pytest.fixture(scope="module")
def midi_model(midi_checkpoint: Path):
    return load_model(midi_checkpoint, device="cpu", dtype="fp32")


@pytest.fixture(scope="module")
def abc_model(abc_checkpoint: Path):
    return load_model(abc_checkpoint, device="cpu", dtype="fp32")


def collect(worker: MusicWorker, timeout: float = 60.0) -> list:
    events: list = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        events += worker.outbox.drain()
        if any(isinstance(e, (MusicFinished, MusicFailed)) for e in events) and not worker.busy:
            return events + worker.outbox.drain()
        time.sleep(0.01)
    raise AssertionError(f"no end of run; got {events[-3:]}")


def one_piece(worker: MusicWorker, request: MusicRequest) -> list:
    """Start ``worker``, write one piece and return its events up to the end; the worker is closed."""
    worker.start()
    try:
        worker.generate(request)
        return collect(worker)
    finally:
        worker.close()


def test_token_display_puts_each_time_step_on_its_line() -> None:
    from engine.music import midi_codec

    ids, _ = midi_codec.text_to_ids("<start> t10 p:3c:8 p:40:8 t20 p:43:9")
    text, at_start = token_display(ids, True)
    assert text == "<start>\nt10 p:3c:8 p:40:8\nt20 p:43:9"
    assert at_start is False
    more, _ = token_display(midi_codec.text_to_ids("p:48:8 t5")[0], at_start)
    assert more == " p:48:8\nt5"


def test_midi_run_streams_merged_progress_feeds_the_player_and_finishes(midi_model) -> None:
    sink = RecordingSink()
    player = Player(sink)
    worker = MusicWorker(lambda: midi_model, player=player)
    worker.start()
    try:
        settings = MusicSettings().with_field("max_tokens", "48").with_field("seed", "3")
        run = worker.generate(MusicRequest(settings))
        events = collect(worker)
    finally:
        worker.close()
    assert isinstance(events[0], MusicStarted) and events[0].run == run
    progress = [e for e in events if isinstance(e, MusicProgress)]
    finished = [e for e in events if isinstance(e, MusicFinished)]
    assert len(finished) == 1
    piece = finished[0].piece
    # What the pane was streamed adds up to the finished piece: same notes, same token count.
    streamed = [ev for p in progress for ev in p.events]
    assert streamed == list(piece.events)
    assert progress[-1].generated_tokens == piece.generated_tokens > 0
    assert piece.text.startswith("<start>") and piece.text.endswith("<end>")
    assert len(piece.text.split()) == piece.generated_tokens + 2
    # The player was fed the whole piece while it was written and told where it ends.
    status = player.status()
    assert status.end_ms == pytest.approx(piece.end_ms)
    assert status.state in (PlayerState.PLAYING, PlayerState.ENDED)
    player.close()
    # Closing silenced the synth: All Notes Off and All Sound Off on every channel.
    sent = sink.messages()
    for channel in range(16):
        assert (0xB0 | channel, 123, 0) in sent and (0xB0 | channel, 120, 0) in sent
    assert sum(1 for t in piece.midi.tracks for m in t if m.type == "note_on" and m.velocity) == piece.note_count


def test_cancel_stops_a_long_run_quickly(midi_model) -> None:
    worker = MusicWorker(lambda: midi_model)
    worker.start()
    try:
        worker.generate(MusicRequest(MusicSettings().with_field("max_tokens", "100000"), play=False))
        deadline = time.monotonic() + 180  # a safety net only
        while not any(isinstance(e, MusicProgress) for e in worker.outbox.drain()):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert worker.busy
        assert worker.cancel()
        events = collect(worker)
    finally:
        worker.close()
    piece = next(e for e in events if isinstance(e, MusicFinished)).piece
    # Stopped by the cancel, far short of the 100,000-token budget (counted, not timed: a
    # loaded machine makes the run slower, never longer).
    assert piece.stop_reason == "cancelled" and not worker.busy
    assert piece.generated_tokens < 100_000


def test_a_new_request_replaces_the_running_one(midi_model) -> None:
    worker = MusicWorker(lambda: midi_model)
    worker.start()
    try:
        first = worker.generate(MusicRequest(MusicSettings().with_field("max_tokens", "100000"), play=False))
        time.sleep(0.2)
        second = worker.generate(MusicRequest(MusicSettings().with_field("max_tokens", "8"), play=False))
        events = collect(worker)
        while worker.busy or not any(isinstance(e, MusicFinished) and e.run == second for e in events):
            events += collect(worker)
    finally:
        worker.close()
    ends = {e.run: e.piece.stop_reason for e in events if isinstance(e, MusicFinished)}
    assert ends[second] in ("token budget", "stop token")
    assert ends.get(first, "cancelled") == "cancelled"


def test_errors_are_one_line_failures_and_the_thread_goes_on(midi_model, tmp_path: Path) -> None:
    model = None
    worker = MusicWorker(lambda: model)
    worker.start()
    try:
        worker.generate(MusicRequest(MusicSettings(), play=False))
        failure = next(e for e in collect(worker) if isinstance(e, MusicFailed))
        assert failure.message == NO_MODEL
        model = midi_model
        missing = tmp_path / "nope.mid"
        worker.generate(MusicRequest(MusicSettings(continue_from=str(missing)), play=False))
        failure = next(e for e in collect(worker) if isinstance(e, MusicFailed))
        assert "nope.mid" in failure.message and "\n" not in failure.message
        worker.generate(MusicRequest(MusicSettings(mode="abc"), play=False))
        failure = next(e for e in collect(worker) if isinstance(e, MusicFailed))
        assert "ABC mode needs" in failure.message
        worker.generate(MusicRequest(MusicSettings().with_field("max_tokens", "4"), play=False))
        assert any(isinstance(e, MusicFinished) for e in collect(worker))
    finally:
        worker.close()


def test_continuing_a_midi_file_replays_it_first(midi_model, tmp_path: Path) -> None:
    from engine.music import midi_codec
    from engine.music.files import save_midi

    source = midi_codec.decode_tokens("<start> p:3c:8 t62 p:40:8 t62 p:43:8 t125 <end>")
    path = save_midi(tmp_path / "seed.mid", source.to_midi())
    request = MusicRequest(MusicSettings(continue_from=str(path)).with_field("max_tokens", "6"), play=False)
    events = one_piece(MusicWorker(lambda: midi_model), request)
    first_text = next(e for e in events if isinstance(e, MusicProgress)).text
    assert first_text.startswith("<start>") and "p:3c:8" in first_text
    piece = next(e for e in events if isinstance(e, MusicFinished)).piece
    assert [e.note for e in piece.events if e.is_on][:3] == [0x3C, 0x40, 0x43]


def test_abc_run_streams_text_and_converts_with_abc2midi(abc_model) -> None:
    from tests.helpers import require_tool

    require_tool("abc2midi")
    settings = MusicSettings(mode="abc", key="C", unit="1/8", tune_start="CDEF GABc|cBAG FEDC|").with_field(
        "max_tokens", "6").with_field("seed", "1")
    events = one_piece(MusicWorker(lambda: abc_model), MusicRequest(settings, play=False))
    started = next(e for e in events if isinstance(e, MusicStarted))
    assert started.prompt_text == "L:1/8\nK:C\nCDEF GABc|cBAG FEDC|"
    streamed = "".join(e.text for e in events if isinstance(e, MusicProgress))
    piece = next(e for e in events if isinstance(e, MusicFinished)).piece
    assert piece.text.startswith("X:1\nL:1/8\nK:C\nCDEF") and piece.text.endswith(streamed)
    if piece.midi is None:
        assert piece.conversion_problem and "\n" not in piece.conversion_problem
    else:
        assert piece.note_count >= 16  # the 16 notes of the prompt at least
        assert [e.note for e in piece.events if e.is_on][:4] == [60, 62, 64, 65]


def test_abc_previews_show_the_complete_bars_while_the_tune_is_written() -> None:
    from tests.helpers import require_tool

    from engine.demo_models import demo_model_path

    require_tool("abc2midi")
    folk = load_model(demo_model_path("abc"), device="cpu")  # writes real bars, unlike random weights
    worker = MusicWorker(lambda: folk)
    worker.abc_preview_interval = 0.0  # a preview at every new bar line
    settings = MusicSettings(mode="abc", key="C", unit="1/8", tune_start="CDEF GABc|").with_field(
        "max_tokens", "120").with_field("seed", "3")
    events = one_piece(worker, MusicRequest(settings, play=False))
    finished = next(i for i, e in enumerate(events) if isinstance(e, MusicFinished))
    previews = [e for e in events[:finished] if isinstance(e, MusicPreview)]
    assert previews, "no preview before the tune was finished"
    piece = events[finished].piece
    for preview in previews:
        ons = [e.note for e in preview.events if e.is_on]
        assert ons[:8] == [60, 62, 64, 65, 67, 69, 71, 72]  # the prompt's bar, first
        assert len(ons) <= piece.note_count and preview.end_ms <= piece.end_ms + 1e-6
    counts = [sum(e.is_on for e in p.events) for p in previews]
    assert counts == sorted(counts)


def test_outbox_keeps_only_the_newest_preview_of_a_run() -> None:
    box = MusicOutbox()
    box.put(MusicPreview(1, (), 100.0))
    box.put(MusicProgress(1, "a", (), 0.0, 1, 0.0))
    box.put(MusicPreview(2, (), 50.0))
    box.put(MusicPreview(1, (), 200.0))
    events = box.drain()
    assert [(type(e).__name__, e.run) for e in events] == [
        ("MusicProgress", 1), ("MusicPreview", 2), ("MusicPreview", 1),
    ] and events[-1].end_ms == 200.0


def test_midi_note_events_pairs_ons_and_offs() -> None:
    from engine.music import midi_codec

    mid = midi_codec.decode_tokens("<start> p:3c:8 t62 p:40:8 t62 <end>").to_midi()
    events = midi_note_events(mid)
    assert sum(e.is_on for e in events) == 2 and sum(not e.is_on for e in events) == 2


def test_outbox_merges_progress_of_one_run_only() -> None:
    woke: list[int] = []
    box = MusicOutbox(on_ready=lambda: woke.append(1))
    box.put(MusicProgress(1, "a", (), 8.0, 1, 0.0))
    box.put(MusicProgress(1, " b", (), 16.0, 2, 5.0))
    box.put(MusicProgress(2, "c", (), 8.0, 1, 0.0))
    events = box.drain()
    assert [e.text for e in events] == ["a b", "c"] and events[0].time_ms == 16.0 and events[0].generated_tokens == 2
    assert woke == [1]


def test_a_queued_run_that_is_stopped_ends_with_a_quiet_failure(midi_model) -> None:
    import threading

    from tui.music_worker import STOPPED_BEFORE_START

    gate = threading.Event()
    worker = MusicWorker(lambda: (gate.wait(10), midi_model)[1])
    worker.start()
    try:
        worker.generate(MusicRequest(MusicSettings().with_field("max_tokens", "4"), play=False))
        time.sleep(0.05)  # the first run is now waiting for its model
        # A second request replaces the first; stopping it before the thread is free skips it.
        queued = worker.generate(MusicRequest(MusicSettings().with_field("max_tokens", "4"), play=False))
        worker.cancel()
        gate.set()
        events = collect(worker)
    finally:
        worker.close()
    skipped = [e for e in events if isinstance(e, MusicFailed) and e.run == queued]
    assert [e.message for e in skipped] == [STOPPED_BEFORE_START]
    assert not worker.busy
