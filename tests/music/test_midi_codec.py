"""The MIDI-LLM codec: hand-made vectors from the published rules, and round-trip properties."""

from __future__ import annotations

import math

import mido
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.music import midi_codec as mc
from engine.music import midi_vocab as vocab
from engine.music.errors import MidiFileError

# --------------------------------------------------------------------------- helpers


def ms_file(track_events: list[list[mido.Message]]) -> mido.MidiFile:
    """A file where one tick is exactly one millisecond (1000 tpqn at 1 s per quarter)."""
    mid = mido.MidiFile(type=1, ticks_per_beat=1000)
    for events in track_events:
        track = mido.MidiTrack()
        track.append(mido.MetaMessage("set_tempo", tempo=1_000_000, time=0))
        track.extend(events)
        mid.tracks.append(track)
    return mid


def on(note: int, velocity: int, time: int = 0, channel: int = 0) -> mido.Message:
    return mido.Message("note_on", note=note, velocity=velocity, time=time, channel=channel)


def off(note: int, time: int = 0, channel: int = 0) -> mido.Message:
    return mido.Message("note_off", note=note, time=time, channel=channel)


def cc(control: int, value: int, time: int = 0, channel: int = 0) -> mido.Message:
    return mido.Message("control_change", control=control, value=value, time=time, channel=channel)


def prog(program: int, channel: int = 0, time: int = 0) -> mido.Message:
    return mido.Message("program_change", program=program, channel=channel, time=time)


def encode_one(mid: mido.MidiFile, **options: object) -> str:
    result = mc.encode_midi(mid, mc.EncodeOptions(**options))  # type: ignore[arg-type]
    assert len(result.pieces) == 1, result.texts
    return result.pieces[0].text


# --------------------------------------------------------------------------- velocity


def test_bin_velocities_match_the_published_table() -> None:
    assert mc.BIN_VELOCITIES == (0, 8, 17, 27, 37, 47, 58, 70, 83, 97, 111, 127)


@pytest.mark.parametrize(
    ("low", "high", "velocity_bin"),
    [(0, 0, 0), (1, 8, 1), (9, 17, 2), (18, 27, 3), (28, 37, 4), (38, 47, 5), (48, 58, 6),
     (59, 70, 7), (71, 83, 8), (84, 97, 9), (98, 111, 10), (112, 127, 11)],
)
def test_velocity_ranges_per_bin(low: int, high: int, velocity_bin: int) -> None:
    assert {mc.velocity_to_bin(v) for v in range(low, high + 1)} == {velocity_bin}


def test_velocity_bins_round_trip_and_clamp() -> None:
    for b in range(vocab.VELOCITY_BINS):
        assert mc.velocity_to_bin(mc.bin_to_velocity(b)) == b
    assert mc.velocity_to_bin(500) == 11
    assert mc.velocity_to_bin(-3) == 0
    assert mc.velocity_to_bin(0.2) == 1  # any audible velocity stays a note-on


# --------------------------------------------------------------------------- time


@pytest.mark.parametrize(
    ("gap_ms", "tokens"),
    [
        (0, []),
        (3.9, []),
        (4, []),  # exactly half a step rounds down: joins the current step
        (4.01, ["t1"]),
        (12, ["t1"]),  # 1.5 steps → 1
        (20, ["t2"]),  # 2.5 steps → 2
        (500, ["t62"]),  # 62.5 → 62
        (999, ["t125"]),
        (1000, ["t125"]),
        (1150, ["t125", "t19"]),
        (2004, ["t125", "t125"]),
        (10_000, ["t125"] * 10),
        (25_000, ["t125"] * 10),  # clamped to 10 s
    ],
)
def test_wait_tokens(gap_ms: float, tokens: list[str]) -> None:
    assert mc.wait_tokens(gap_ms) == tokens


# --------------------------------------------------------------------------- encoder vectors


def test_encodes_the_reference_sample() -> None:
    # A C+G piano chord with a kick, a bass note 2 ms later; offs 500 ms and 1650 ms later.
    mid = ms_file([[
        prog(32, channel=3),
        on(36, 90, channel=9), on(60, 100, channel=7), on(67, 100, channel=7),
        on(40, 80, time=2, channel=3),
        off(36, time=500, channel=9), off(60, channel=7), off(67, channel=7),
        off(40, time=1150, channel=3),
    ]])
    assert encode_one(mid) == (
        "<start> p:24:9 b:28:8 pi:3c:a pi:43:a t62 p:24:0 pi:3c:0 pi:43:0 t125 t19 b:28:0 <end>"
    )


def test_step_order_is_bin_then_numeric_note_then_arrival() -> None:
    mid = ms_file([[
        prog(40, channel=5), prog(0, channel=1),
        on(16, 50, channel=1), on(9, 50, channel=1), on(70, 50, channel=5), on(35, 50, channel=9),
        off(16, time=100, channel=1), on(16, 100, channel=1),  # off then on of the same note
        off(9, channel=1),
    ]])
    assert encode_one(mid) == (
        "<start> p:23:6 v:46:6 pi:9:6 pi:10:6 t12 pi:9:0 pi:10:0 pi:10:a <end>"
    )


def test_leading_silence_is_dropped_and_small_gaps_join_the_step() -> None:
    mid = ms_file([[on(60, 100, time=3000), on(64, 100, time=4), off(60, time=300), off(64, time=3)]])
    assert encode_one(mid) == "<start> pi:3c:a pi:40:a t37 pi:3c:0 pi:40:0 <end>"  # 37.5 steps → 37


def test_sustain_pedal_defers_note_offs_and_restrike_cancels_them() -> None:
    mid = ms_file([[
        cc(64, 127), on(60, 100), off(60, time=100),  # deferred
        on(62, 100, time=100), off(62, time=100),  # deferred
        on(60, 100, time=100),  # restrike cancels 60's deferred off
        cc(64, 0, time=100),  # releases 62 only
        off(60, time=100),
    ]])
    assert encode_one(mid) == (
        "<start> pi:3c:a t25 pi:3e:a t25 pi:3c:a t12 pi:3e:0 t12 pi:3c:0 <end>"
    )


def test_all_notes_off_controller_releases_held_notes() -> None:
    mid = ms_file([[on(60, 100), on(62, 100, channel=1), cc(123, 0, time=200)]])
    assert encode_one(mid) == "<start> pi:3c:a pi:3e:a t25 pi:3c:0 pi:3e:0 <end>"


def test_dropped_programs_do_not_reset_the_gap_clock() -> None:
    mid = ms_file([[
        prog(99, channel=2),
        on(60, 100), on(50, 100, time=300, channel=2), off(60, time=300), off(50, time=10, channel=2),
    ]])
    result = mc.encode_midi(mid)
    assert result.texts == ["<start> pi:3c:a t75 pi:3c:0 <end>"]
    assert result.dropped_events == 2


def test_volume_and_expression_scale_velocity() -> None:
    mid = ms_file([[cc(7, 64), cc(11, 127), on(60, 100), off(60, time=100)]])
    # 100 × 64/127 = 50.4 → bin 6 (48–58)
    assert encode_one(mid).startswith("<start> pi:3c:6 ")


def test_tempo_changes_apply_from_their_position() -> None:
    mid = mido.MidiFile(ticks_per_beat=480)
    track = mido.MidiTrack()
    mid.tracks.append(track)
    track.extend([
        on(60, 100), off(60, time=480),  # 480 ticks at 120 bpm = 500 ms
        mido.MetaMessage("set_tempo", tempo=250_000, time=0),
        on(62, 100, time=480),  # 480 ticks at 240 bpm = 250 ms
    ])
    assert encode_one(mid) == "<start> pi:3c:a t62 pi:3c:0 t31 pi:3e:a <end>"


def test_multiple_tracks_are_merged_in_time_order() -> None:
    mid = ms_file([[on(60, 100), off(60, time=200)], [on(67, 100, time=100), off(67, time=200)]])
    assert encode_one(mid) == "<start> pi:3c:a t12 pi:43:a t12 pi:3c:0 t12 pi:43:0 <end>"


def test_long_silence_splits_pieces_unless_a_note_is_held() -> None:
    split = ms_file([[on(60, 100), off(60, time=500), on(62, 100, time=10_500), off(62, time=500)]])
    assert mc.encode_midi(split).texts == [
        "<start> pi:3c:a t62 pi:3c:0 <end>", "<start> pi:3e:a t62 pi:3e:0 <end>",
    ]
    held = ms_file([[on(60, 100), on(62, 100, time=12_000), off(60, time=100), off(62)]])
    assert mc.encode_midi(held).texts == [
        "<start> pi:3c:a " + "t125 " * 10 + "pi:3e:a t12 pi:3c:0 pi:3e:0 <end>",
    ]


def test_reference_filter_discards_pieces_of_thirty_seconds_or_less() -> None:
    # A note held for exactly 30 s: its (unclamped) gap is the piece length, not above 30 s.
    short = ms_file([[on(60, 100), off(60, time=30_000)]])
    steps = [on(60, 100)] + [m for i in range(31) for m in (off(60, time=1000), on(60, 100))] + [off(60, time=500)]
    long = ms_file([steps])
    assert mc.encode_midi(short, mc.EncodeOptions.reference()).pieces == []
    assert mc.encode_midi(short, mc.EncodeOptions.reference()).discarded_pieces == 1
    assert len(mc.encode_midi(long, mc.EncodeOptions.reference()).pieces) == 1
    assert len(mc.encode_midi(short).pieces) == 1  # default keeps every piece with notes


def test_encode_does_not_modify_the_callers_file() -> None:
    mid = ms_file([[on(60, 100)], [on(64, 100, time=10)]])
    before = [list(t) for t in mid.tracks]
    mc.encode_midi(mid)
    assert [list(t) for t in mid.tracks] == before


def test_unreadable_files_raise_one_line_errors(tmp_path) -> None:
    bad = tmp_path / "song.mid"
    bad.write_bytes(b"RIFF not a midi file at all")
    with pytest.raises(MidiFileError, match=r"song\.mid: not a readable Standard MIDI File"):
        mc.encode_midi(bad)
    truncated = tmp_path / "cut.mid"
    good = tmp_path / "good.mid"
    ms_file([[on(60, 100), off(60, time=100)]]).save(good)
    truncated.write_bytes(good.read_bytes()[:-7])
    with pytest.raises(MidiFileError) as info:
        mc.encode_midi(truncated)
    assert "\n" not in str(info.value)
    with pytest.raises(MidiFileError, match="no such MIDI file"):
        mc.encode_midi(tmp_path / "missing.mid")


def test_encoded_ids_follow_the_vocabulary_formula() -> None:
    piece = mc.encode_midi(ms_file([[on(60, 100, channel=7), off(60, time=500, channel=7)]])).pieces[0]
    assert piece.ids == [1, 128 + 1536 * 8 + 12 * 60 + 10, 62 + 2, 128 + 1536 * 8 + 12 * 60, 2]


# --------------------------------------------------------------------------- decoder vectors


def test_decode_times_velocities_and_channels() -> None:
    result = mc.decode_tokens("<start> p:24:9 pi:3c:a t62 pi:3c:0 t125 t19 p:24:0 <end>")
    assert [(e.time_ms, e.channel, e.note, e.velocity) for e in result.events] == [
        (0, 9, 36, 97), (0, 7, 60, 111), (496, 7, 60, 0), (1648, 9, 36, 0),
    ]
    assert result.end_ms == 1648 + 3000
    assert result.invalid_count == 0


def test_repeated_note_on_first_releases_the_sounding_note() -> None:
    events = mc.decode_tokens("pi:3c:a t10 pi:3c:5").events
    assert [(e.time_ms, e.velocity) for e in events] == [(0, 111), (80, 0), (80, 47)]


def test_end_adds_three_seconds_then_releases_everything() -> None:
    events = mc.decode_tokens("pi:3c:a g:40:8 t1 <end>").events
    assert [(e.time_ms, e.channel, e.note, e.velocity) for e in events[2:]] == [
        (3008, 7, 60, 0), (3008, 4, 64, 0),
    ]


def test_held_notes_are_released_one_per_wait_after_five_seconds() -> None:
    events = mc.decode_tokens("pi:3c:a pi:40:a " + "t125 " * 7).events
    offs = [(e.time_ms, e.note) for e in events if not e.is_on]
    assert offs == [(6000, 60), (7000, 64)]


def test_waits_accept_any_integer_like_the_reference() -> None:
    assert mc.decode_tokens("t300 pi:3c:a t0").events[0].time_ms == 2400


@pytest.mark.parametrize(
    "garbage",
    ["x:3c:5", "pi:3c", "hello", "t1.5", "t", "pi:80:5", "pi:3c:c", "pi:3c:16", "pi:-1:5",
     "pi:3c:a:1", "pi:0x3c:5", "t12a", "tr", "pi::5", "5"],
)
def test_invalid_tokens_are_skipped_and_counted(garbage: str) -> None:
    clean = mc.decode_tokens("pi:3c:a t10 pi:3c:0")
    dirty = mc.decode_tokens(f"pi:3c:a {garbage} t10 {garbage} pi:3c:0")
    assert dirty.events == clean.events
    assert dirty.invalid_count == 2
    assert dirty.invalid_examples == [garbage, garbage]
    assert "skipped 2 invalid" in dirty.summary()


def test_case_and_any_whitespace_are_accepted() -> None:
    result = mc.decode_tokens("PI:3C:A\nt10\tpi:3c:0  <START>")
    assert result.invalid_count == 0
    assert [e.velocity for e in result.events] == [111, 0]


def test_out_of_range_ids_are_invalid() -> None:
    result = mc.decode_tokens([vocab.note_id(8, 60, 10), 20096, -1, vocab.wait_id(5)])
    assert result.invalid_count == 2
    assert result.end_ms == 40


def test_decoded_file_layout() -> None:
    mid = mc.decode_tokens("pi:3c:a t62 pi:3c:0 t1 d:24:3").to_midi()
    assert mid.ticks_per_beat == 480 and len(mid.tracks) == 1
    msgs = list(mid.tracks[0])
    assert msgs[0].type == "text" and msgs[1].type == "set_tempo" and msgs[1].tempo == 500_000
    programs = [(m.channel, m.program) for m in msgs if m.type == "program_change"]
    assert programs == [(0, 118), (1, 58), (2, 12), (3, 32), (4, 25), (5, 40), (6, 56), (7, 0),
                        (8, 66), (10, 73), (11, 80), (12, 88), (9, 0)]
    notes = [m for m in msgs if m.type in ("note_on", "note_off")]
    # 496 ms × 0.96 = 476.16 → 476 ticks; 8 ms → 7.68 → 8 ticks
    assert [(m.type, m.time, m.velocity) for m in notes] == [
        ("note_on", 0, 111), ("note_off", 476, 64), ("note_on", 8, 27),
    ]
    assert msgs[-1].type == "end_of_track"


def test_streaming_decoder_matches_whole_text_decoding() -> None:
    text = "<start> pi:3c:a b:28:8 t62 pi:3c:0 t125 t19 b:28:0 pi:3c:9 <end>"
    decoder = mc.TokenDecoder()
    streamed = [e for word in text.split() for e in decoder.feed_text(word)]
    assert streamed == mc.decode_tokens(text).events
    ids, unknown = mc.text_to_ids(text)
    assert unknown == 0
    assert mc.decode_tokens(ids).events == streamed


def test_release_all_stops_every_sounding_note_now() -> None:
    decoder = mc.TokenDecoder()
    decoder.feed_many("pi:3c:a f:50:4 t10")
    assert [(e.time_ms, e.channel, e.note) for e in decoder.release_all()] == [(80, 7, 60), (80, 10, 80)]
    assert decoder.active == {}


# --------------------------------------------------------------------------- ids ⇄ text


def test_ids_and_text_agree_with_the_tokenizer() -> None:
    from engine import get_tokenizer

    tokenizer = get_tokenizer("midi")
    text = "<pad> <start> t1 t125 p:0:0 pi:3c:a pa:7f:b <end>"
    ids, unknown = mc.text_to_ids(text)
    assert unknown == 0
    assert ids == tokenizer.encode(text)
    assert mc.ids_to_text(ids) == text
    assert mc.text_to_ids("pi:3c:a bogus t5")[1] == 1


# --------------------------------------------------------------------------- properties


@st.composite
def well_formed_pieces(draw: st.DrawFn) -> str:
    """A canonical token text that every step of the codec must reproduce exactly.

    Notes sorted within steps, one event per (bin, note) per step, note-offs only for sounding
    notes, no note held longer than 5 s, gaps under 10 s, and everything released at the end.
    """
    active: dict[tuple[int, int], int] = {}  # (bin, note) → start (ms)
    now = 0
    tokens = ["<start>"]
    n_steps = draw(st.integers(1, 12))
    for index in range(n_steps):
        last = index == n_steps - 1
        step: dict[tuple[int, int], int] = {}
        # Release notes that are due, forced ones first (held too long or end of piece).
        for key in list(active):
            forced = last or now - active[key] > 3500
            if forced or draw(st.booleans()):
                step[key] = 0
                del active[key]
        if not last:
            for _ in range(draw(st.integers(0 if step else 1, 4))):
                key = (draw(st.integers(0, 12)), draw(st.integers(0, 127)))
                if key in step or key in active:
                    continue
                step[key] = draw(st.integers(1, 11))
                active[key] = now
        if not step:
            key = (draw(st.integers(0, 12)), draw(st.integers(0, 127)))
            if key in active or last:  # an off (a lone one is legal: the decoder emits it)
                step[key] = 0
                active.pop(key, None)
            else:
                step[key] = draw(st.integers(1, 11))
                active[key] = now
        tokens.extend(vocab.note_token(b, n, v) for (b, n), v in sorted(step.items()))
        if not last:
            units = draw(st.integers(1, 187))  # ≤ 1.5 s, so nothing is held past 5 s
            tokens.extend(mc.wait_tokens(units * 8))
            now += units * 8
    tokens.append("<end>")
    return " ".join(tokens)


@settings(max_examples=150, deadline=None)
@given(well_formed_pieces())
def test_round_trip_through_a_midi_file_reproduces_the_tokens(text: str) -> None:
    decoded = mc.decode_tokens(text)
    assert decoded.invalid_count == 0
    assert mc.encode_midi(decoded.to_midi()).texts == [text]
    assert mc.encode_events(decoded.events).texts == [text]


@settings(max_examples=100, deadline=None)
@given(
    well_formed_pieces(),
    st.lists(
        st.one_of(
            st.sampled_from(["x:3c:5", "hello", "t1.5", "pi:3c", "q", "pi:zz:1", "pa:7f:c"]),
            st.builds(lambda n: f"pi:{n:x}:1", st.integers(128, 4096)),
            st.builds(lambda b: f"g:10:{b:x}", st.integers(12, 300)),
            st.builds(lambda n: f"t{n}x", st.integers(0, 999)),
        ),
        max_size=8,
    ),
    st.randoms(use_true_random=False),
)
def test_garbage_anywhere_never_changes_the_music(piece: str, garbage: list[str], rnd) -> None:
    words = piece.split()
    for junk in garbage:
        words.insert(rnd.randint(0, len(words)), junk)
    clean = mc.decode_tokens(piece)
    dirty = mc.decode_tokens(" ".join(words))
    assert dirty.events == clean.events
    assert dirty.end_ms == clean.end_ms
    assert dirty.invalid_count == len(garbage)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, vocab.VOCAB_SIZE - 1), max_size=200))
def test_any_id_sequence_decodes_and_reencodes_to_vocabulary_tokens(ids: list[int]) -> None:
    decoded = mc.decode_tokens(ids)
    assert decoded.invalid_count == 0
    assert all(0 <= e.note < 128 and 0 <= e.velocity < 128 for e in decoded.events)
    assert [e.time_ms for e in decoded.events] == sorted(e.time_ms for e in decoded.events)
    for piece in mc.encode_midi(decoded.to_midi()).pieces:
        assert piece.tokens[0] == "<start>" and piece.tokens[-1] == "<end>"
        assert all(mc.token_id(t) is not None for t in piece.tokens)


midi_messages = st.one_of(
    st.builds(on, st.integers(0, 127), st.integers(0, 127), st.integers(0, 3000), st.integers(0, 15)),
    st.builds(off, st.integers(0, 127), st.integers(0, 3000), st.integers(0, 15)),
    st.builds(cc, st.sampled_from([7, 11, 39, 64, 123, 1]), st.integers(0, 127), st.integers(0, 3000), st.integers(0, 15)),
    st.builds(prog, st.integers(0, 127), st.integers(0, 15), st.integers(0, 3000)),
)


@settings(max_examples=80, deadline=None)
@given(st.lists(st.lists(midi_messages, max_size=40), min_size=1, max_size=3))
def test_encoder_handles_arbitrary_channel_messages(tracks: list[list[mido.Message]]) -> None:
    result = mc.encode_midi(ms_file(tracks))
    for piece in result.pieces:
        assert piece.tokens[0] == "<start>" and piece.tokens[-1] == "<end>"
        assert all(mc.token_id(t) is not None for t in piece.tokens)
        step: list[tuple[bool, int, int]] = []
        for token in piece.tokens[1:-1]:
            if token[0] == "t" and token[1].isdigit():
                assert step == sorted(step), piece.text  # each time step is sorted
                step = []
            else:
                short, note, _ = token.split(":")
                b = vocab.BIN_BY_SHORT[short].index
                step.append((b != 0, b, int(note, 16)))
        assert step == sorted(step), piece.text
        assert math.isfinite(piece.length_ms)
