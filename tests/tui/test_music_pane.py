"""The music pane in the real app, with the real engine on tiny random models (Pilot)."""

from __future__ import annotations

import json
from pathlib import Path

import mido
import pytest
from textual.widgets import Input

from engine.music.player import PlayerState
from engine.music.ports import PortChoice, RecordingSink
from tests.tui.conftest import notice_texts, notices, start, wait_idle, wait_until
from tui.screens.path_prompt import PathPrompt
from tui.widgets.transport import Transport

SIZE = (120, 36)


@pytest.fixture
def music_config(config_file: Path) -> Path:
    """Short seeded pieces."""
    data = json.loads(config_file.read_text())
    data["music"] = {"settings": {"max_tokens": 48, "seed": 3}}
    config_file.write_text(json.dumps(data))
    return config_file


async def open_music(pilot, app) -> None:
    await start(pilot, app)
    await wait_until(pilot, lambda: app.music_pane.model is not None, what="the music model")
    await pilot.press("f3")
    await pilot.pause(0.1)


async def wait_piece(pilot, app, timeout: float = 180.0) -> None:
    pane = app.music_pane
    await wait_until(pilot, lambda: not pane.generating and pane.piece is not None, timeout, "the piece to be written")


async def test_generate_fills_the_roll_and_the_token_text_and_plays(make_app, midi_checkpoint, music_config) -> None:
    app = make_app(music_model=str(midi_checkpoint))
    async with app.run_test(size=SIZE) as pilot:
        await open_music(pilot, app)
        pane = app.music_pane
        sink = RecordingSink()
        pane.player.set_sink(sink)
        await pilot.press("g")
        await wait_piece(pilot, app)
        piece = pane.piece
        assert piece.generated_tokens == 48
        # The roll holds every note of the piece, the text view every token, one time step a line.
        assert pane.roll.note_count == piece.note_count > 0
        shown = " ".join(pane.text_view.lines).split()
        assert shown == piece.text.split()[:-1]  # all but the closing <end> the decoder adds
        # It was played live to the port: the notes of the piece, in order, from the player.
        await wait_until(pilot, lambda: pane.player.status().state == PlayerState.ENDED, what="the end of playback")
        await pilot.pause(0.2)
        assert pane.roll.playhead_ms == pytest.approx(piece.end_ms)  # the playhead followed to the end
        ons = [m[1] for m in sink.messages() if m[0] & 0xF0 == 0x90 and m[2] > 0]
        assert ons == [e.note for e in piece.events if e.is_on]
        status = str(pane.transport.query_one("#status").render())
        assert "48 tokens" in status and f"{piece.note_count} notes" in status


@pytest.fixture
def endless_pieces(monkeypatch: pytest.MonkeyPatch) -> None:
    """MIDI pieces that never end by themselves: the random model samples <end> or <pad>
    after a few thousand tokens, which a loaded machine reached before the test pressed stop."""
    from engine.music import generate, midi_vocab

    original = generate.midi_logit_hook

    def never_ending(settings):  # noqa: ANN001, ANN202 - the hook factory's signature
        hook = original(settings)

        def ban_the_end(logits, step):  # noqa: ANN001, ANN202
            hook(logits, step)
            logits[midi_vocab.PAD_ID] = logits[midi_vocab.END_ID] = -float("inf")

        return ban_the_end

    monkeypatch.setattr(generate, "midi_logit_hook", never_ending)


async def test_stop_cancels_writing_and_silences(make_app, midi_checkpoint, music_config, endless_pieces) -> None:
    data = json.loads(music_config.read_text())
    data["music"]["settings"]["max_tokens"] = 1_000_000
    music_config.write_text(json.dumps(data))
    app = make_app(music_model=str(midi_checkpoint))
    async with app.run_test(size=SIZE) as pilot:
        await open_music(pilot, app)
        pane = app.music_pane
        sink = RecordingSink()
        pane.player.set_sink(sink)
        await pilot.press("g")
        await wait_until(pilot, lambda: pane.roll.note_count > 20, what="notes to arrive")
        # The chat answers while the music is being written (the music has its own thread).
        await pilot.press("f2")
        await pilot.press(*"hi", "enter")
        await wait_idle(pilot, app)
        assert app.worker.conversation.turns[0].reply and pane.generating
        notes_before = pane.roll.note_count
        await pilot.press("f3")
        await wait_until(pilot, lambda: pane.roll.note_count > notes_before, what="more notes")
        await pilot.press("s")
        await wait_piece(pilot, app)
        assert pane.piece.stop_reason == "cancelled"
        assert pane.player.status().state == PlayerState.STOPPED
        sent = sink.messages()
        assert all((0xB0 | ch, 123, 0) in sent and (0xB0 | ch, 120, 0) in sent for ch in range(16))


async def test_export_writes_a_valid_mid_and_token_text(make_app, midi_checkpoint, music_config, tmp_path) -> None:
    app = make_app(music_model=str(midi_checkpoint))
    async with app.run_test(size=SIZE) as pilot:
        await open_music(pilot, app)
        pane = app.music_pane
        await pilot.press("ctrl+s")
        assert any("Nothing to export" in m for m in notice_texts(app))
        await pilot.press("g")
        await wait_piece(pilot, app)
        await pilot.press("ctrl+s")
        assert isinstance(app.screen, PathPrompt)
        target = tmp_path / "piece.mid"
        app.screen.query_one("#path", Input).value = str(target)
        await pilot.press("enter")
        await wait_until(pilot, lambda: any("Saved" in m for m in notice_texts(app)), what="the export")
        mid = mido.MidiFile(target)
        ons = [m.note for m in mid if m.type == "note_on" and m.velocity > 0]
        assert ons == [e.note for e in pane.piece.events if e.is_on]
        assert not list(tmp_path.glob("*.tmp*"))
        await pilot.press("ctrl+e")
        text_target = tmp_path / "piece.txt"
        app.screen.query_one("#path", Input).value = str(text_target)
        await pilot.press("enter")
        await wait_until(pilot, lambda: text_target.exists(), what="the token export")
        assert text_target.read_text().strip() == pane.piece.text
        # A folder that cannot be written: one line, the app goes on.
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        try:
            await pilot.press("ctrl+s")
            app.screen.query_one("#path", Input).value = str(locked / "x.mid")
            await pilot.press("enter")
            await wait_until(pilot, lambda: any("x.mid" in m for m in notice_texts(app)), what="the failure")
            failure = next(m for m in notice_texts(app) if "x.mid" in m)
            assert "\n" not in failure
        finally:
            locked.chmod(0o700)


async def test_bad_settings_are_rejected_before_the_engine(make_app, midi_checkpoint, music_config) -> None:
    app = make_app(music_model=str(midi_checkpoint))
    async with app.run_test(size=SIZE) as pilot:
        await open_music(pilot, app)
        pane = app.music_pane
        temperature = pane.settings_panel.query_one("#field-temperature", Input)
        temperature.focus()
        temperature.value = ""
        await pilot.press(*"hot g")
        assert temperature.value == "hot g" and pane.run == 0  # typing is not a transport key
        temperature.value = "hot"
        await pilot.pause(0.1)
        assert "expected a number" in str(pane.settings_panel.query_one("#error-temperature").render())
        assert pane.settings.temperature == 1.0  # the last valid value stays in force
        before = pane.run
        await pane.run_action("generate")
        await pilot.pause(0.1)
        assert pane.run == before and not pane.generating
        warning = next(m for m in notice_texts(app) if m.startswith("Not generating"))
        assert "Temperature" in warning and "\n" not in warning
        pane.settings_panel.query_one("#field-continue_from", Input).value = "/nonexistent/x.mid"
        temperature.value = "0.9"
        await pilot.pause(0.1)
        assert pane.settings.temperature == 0.9
        await pane.run_action("generate")
        await pilot.pause(0.1)
        assert pane.run == before and "no such file" in notice_texts(app)[-1]


async def test_settings_and_port_persist_in_the_config_file(make_app, midi_checkpoint, music_config) -> None:
    app = make_app(music_model=str(midi_checkpoint))
    async with app.run_test(size=SIZE) as pilot:
        await open_music(pilot, app)
        pane = app.music_pane
        pane.settings_panel.query_one("#field-top_k", Input).value = "5"
        pane.roll.focus()
        await pilot.press("right_square_bracket", "full_stop")
        await pilot.pause(0.8)
        assert pane.player.tempo == 1.1 and pane.player.velocity_scale == pytest.approx(1.1)
        # Picking an output that cannot be opened: one line, remembered anyway (the synth may start later).
        pane.transport.post_message(Transport.PortChosen(pane.transport, PortChoice("NoSuchAPI", "rwkv-test")))
        await wait_until(pilot, lambda: any(n.title == "MIDI output" for n in notices(app)), what="the notice")
        assert pane.player.sink is None
        await pilot.pause(0.8)
    saved = json.loads(music_config.read_text())["music"]
    assert saved["settings"]["top_k"] == 5 and saved["settings"]["seed"] == 3
    assert saved["tempo"] == 1.1 and saved["volume"] == pytest.approx(1.1)
    assert saved["port"] == "port:NoSuchAPI:rwkv-test"


async def test_a_missing_port_is_one_notification_and_generation_goes_on(
    make_app, midi_checkpoint, music_config
) -> None:
    data = json.loads(music_config.read_text())
    data["music"]["port"] = "port:JACK:no-such-synth"
    music_config.write_text(json.dumps(data))
    app = make_app(music_model=str(midi_checkpoint))
    async with app.run_test(size=SIZE) as pilot:
        await open_music(pilot, app)
        await wait_until(pilot, lambda: any(n.title == "MIDI output" for n in notices(app)), what="the port notice")
        notice = next(n.message for n in notices(app) if n.title == "MIDI output")
        assert "\n" not in notice and "silently" in notice
        pane = app.music_pane
        await pilot.press("g")
        await wait_piece(pilot, app)
        assert pane.roll.note_count == pane.piece.note_count > 0
        silent = [n.message for n in notices(app) if n.message.startswith("No MIDI output")]
        assert len(silent) == 1 and "\n" not in silent[0]
        await pilot.press("g")  # said once, not at every piece
        await wait_piece(pilot, app)
        assert len([n for n in notices(app) if n.message.startswith("No MIDI output")]) == 1


async def test_a_port_that_vanishes_mid_piece_is_reported_and_writing_goes_on(
    make_app, midi_checkpoint, music_config
) -> None:
    app = make_app(music_model=str(midi_checkpoint))
    async with app.run_test(size=SIZE) as pilot:
        await open_music(pilot, app)
        pane = app.music_pane
        pane.player.set_sink(RecordingSink(fail_after=20))
        await pilot.press("g")
        await wait_piece(pilot, app)
        await wait_until(pilot, lambda: any(n.title == "MIDI output" for n in notices(app)), what="the notice")
        notice = next(n.message for n in notices(app) if n.title == "MIDI output")
        assert "disappeared" in notice and "\n" not in notice
        assert pane.piece.generated_tokens == 48 and pane.roll.note_count == pane.piece.note_count


async def test_exit_silences_the_synth(make_app, midi_checkpoint, music_config) -> None:
    app = make_app(music_model=str(midi_checkpoint))
    sink = RecordingSink()
    async with app.run_test(size=SIZE) as pilot:
        await open_music(pilot, app)
        pane = app.music_pane
        pane.player.set_sink(sink)
        await pilot.press("g")
        await wait_until(pilot, lambda: any(m[0] & 0xF0 == 0x90 for m in sink.messages()), what="a note to sound")
        player, worker = pane.player, pane.worker
        await pilot.press("ctrl+q")
    sent = sink.messages()
    tail = sent[-48:]
    assert all((0xB0 | ch, 123, 0) in tail and (0xB0 | ch, 120, 0) in tail for ch in range(16))
    assert sink.closed and not worker._thread.is_alive() and not player._thread.is_alive()


async def test_abc_mode_streams_text_then_shows_the_converted_notes(make_app, abc_checkpoint, config_file) -> None:
    from tests.helpers import require_tool

    require_tool("abc2midi")
    data = json.loads(config_file.read_text())
    data["music"] = {"settings": {"mode": "abc", "max_tokens": 6, "seed": 1, "unit": "1/8", "key": "C",
                                  "tune_start": "CDEF GABc|cBAG FEDC|"}}
    config_file.write_text(json.dumps(data))
    app = make_app(music_model=str(abc_checkpoint))
    async with app.run_test(size=SIZE) as pilot:
        await open_music(pilot, app)
        pane = app.music_pane
        await pilot.press("g")
        await wait_piece(pilot, app)
        text = "\n".join(pane.text_view.lines)
        assert text.startswith("L:1/8\nK:C\nCDEF GABc|cBAG FEDC|")
        assert pane.piece.midi is not None
        assert pane.roll.note_count == pane.piece.note_count >= 16


async def test_music_keys_are_in_help_and_palette(make_app, midi_checkpoint, music_config) -> None:
    from tui.screens.help import help_sections

    sections = dict(help_sections({"music.generate": "ctrl+g"}))
    music = sections["Music pane"]
    assert ("Ctrl+G", "Generate a piece with the music settings", "music.generate") in music
    assert any(row[2] == "music.export_wav" for row in music)
    app = make_app(music_model=str(midi_checkpoint))
    async with app.run_test(size=SIZE) as pilot:
        await start(pilot, app)
        commands = {c.title: c for c in app.get_system_commands(app.screen)}
        assert "Music: Export the piece as MIDI (.mid)" in commands
        await wait_until(pilot, lambda: app.music_pane.model is not None)
        await commands["Music: Generate"].callback()  # from the chat pane: shows the music pane, generates
        assert app.query_one("#panes").active == "music"
        await wait_piece(pilot, app)
        assert app.music_pane.roll.note_count == app.music_pane.piece.note_count


def test_wav_export_renders_at_the_loudness_target(tmp_path) -> None:
    from tests.helpers import require_tool
    from engine.music import midi_codec
    from tui.music_protocol import MusicPiece
    from tui.panes.music import export_piece

    require_tool("fluidsynth")
    decoded = midi_codec.decode_tokens("<start> p:3c:8 p:40:8 t62 p:43:8 t125 t125 <end>")
    piece = MusicPiece("midi", "", tuple(decoded.events), decoded.end_ms, decoded.to_midi(), 7, 0.0, "stop token")
    message = export_piece(piece, str(tmp_path / "piece.wav"), "wav", -20.0)
    assert "piece.wav" in message
    import soundfile

    audio, rate = soundfile.read(tmp_path / "piece.wav")
    assert rate == 44100 and len(audio) > rate and abs(audio).max() > 0.01
    from engine.music.render import measure_lufs

    assert measure_lufs(audio, rate) == pytest.approx(-20.0, abs=1.0)
    with pytest.raises(Exception) as info:
        export_piece(MusicPiece("abc", "X:1", (), 0.0, None, 1, 0.0, "stop token", conversion_problem="no notes"),
                     str(tmp_path / "x.mid"), "mid", -14.0)
    assert "x.mid" in str(info.value) and "no notes" in str(info.value)


async def test_c_picks_a_file_to_continue(make_app, midi_checkpoint, music_config, tmp_path) -> None:
    from engine.music import midi_codec
    from engine.music.files import save_midi

    source = save_midi(tmp_path / "theme.mid", midi_codec.decode_tokens("<start> pi:3c:8 t62 pi:40:8 t62 <end>").to_midi())
    app = make_app(music_model=str(midi_checkpoint))
    async with app.run_test(size=SIZE) as pilot:
        await open_music(pilot, app)
        pane = app.music_pane
        pane.roll.focus()
        await pilot.press("c")
        assert isinstance(app.screen, PathPrompt)
        app.screen.query_one("#path", Input).value = str(source)
        await pilot.press("enter")
        await wait_until(pilot, lambda: pane.settings.continue_from == str(source), what="the setting")
        pane.roll.focus()
        await pilot.press("g")
        await wait_piece(pilot, app)
        assert pane.text_view.lines[0].startswith("<start>")
        assert [e.note for e in pane.piece.events if e.is_on][:2] == [0x3C, 0x40]


async def test_a_damaged_music_section_is_one_warning_and_defaults(make_app, midi_checkpoint, config_file) -> None:
    data = json.loads(config_file.read_text())
    data["music"] = {"settings": ["not", "an", "object"], "port": "garbage", "tempo": "fast"}
    config_file.write_text(json.dumps(data))
    app = make_app(music_model=str(midi_checkpoint))
    async with app.run_test(size=SIZE) as pilot:
        await open_music(pilot, app)
        warnings = [n for n in notices(app) if n.title == "Music settings"]
        assert len(warnings) == 1 and "'settings' must be an object" in warnings[0].message
        assert "(+2 more)" in warnings[0].message and "\n" not in warnings[0].message
        pane = app.music_pane
        assert pane.settings.top_k == 8 and pane.player.tempo == 1.0 and pane.transport.port_choice is None


async def test_the_ui_takes_the_music_in_batches_not_per_token(make_app, midi_checkpoint, config_file) -> None:
    data = json.loads(config_file.read_text())
    data["music"] = {"settings": {"max_tokens": 300, "seed": 4}}
    config_file.write_text(json.dumps(data))
    app = make_app(music_model=str(midi_checkpoint))
    async with app.run_test(size=SIZE) as pilot:
        await open_music(pilot, app)
        pane = app.music_pane
        handled: list[int] = []
        original = pane._on_progress
        pane._on_progress = lambda event: (handled.append(len(event.text.split())), original(event))[1]
        await pilot.press("g")
        await wait_piece(pilot, app)
        # Every token reached the text view, in far fewer UI updates than tokens (merged between ticks).
        assert sum(handled) == len(pane.piece.text.split()) - 2  # all but <start>, <end>
        assert len(handled) < pane.piece.generated_tokens / 2


async def test_music_keys_can_be_remapped_in_the_config_file(make_app, midi_checkpoint, music_config) -> None:
    data = json.loads(music_config.read_text())
    data["keymap"] = {"music.generate": "n"}
    music_config.write_text(json.dumps(data))
    app = make_app(music_model=str(midi_checkpoint))
    async with app.run_test(size=SIZE) as pilot:
        await open_music(pilot, app)
        pane = app.music_pane
        assert not [n for n in notices(app) if n.severity != "information"]
        assert "       n  Generate" in pane.text_view.lines  # the hint names the user's key
        await pilot.press("g")
        await pilot.pause(0.2)
        assert pane.run == 0  # the old key does nothing now
        await pilot.press("n")
        await wait_piece(pilot, app)
        assert pane.piece.generated_tokens == 48


async def test_ctrl_w_renders_the_piece_to_wav(make_app, midi_checkpoint, music_config, tmp_path) -> None:
    from tests.helpers import require_tool

    require_tool("fluidsynth")
    app = make_app(music_model=str(midi_checkpoint))
    async with app.run_test(size=SIZE) as pilot:
        await open_music(pilot, app)
        pane = app.music_pane
        pane.settings_panel.query_one("#field-lufs", Input).value = "-18"
        await pilot.press("g")
        await wait_piece(pilot, app)
        await pilot.press("ctrl+w")
        target = tmp_path / "piece.wav"
        app.screen.query_one("#path", Input).value = str(target)
        await pilot.press("enter")
        await wait_until(pilot, lambda: any(m.startswith("Rendered") for m in notice_texts(app)), what="the render")
    import soundfile

    from engine.music.render import measure_lufs

    audio, rate = soundfile.read(target)
    assert measure_lufs(audio, rate) == pytest.approx(-18.0, abs=1.0)


async def test_unknown_music_keys_are_reported_and_survive_a_settings_change(
    make_app, midi_checkpoint, music_config
) -> None:
    data = json.loads(music_config.read_text())
    data["music"]["metronome"] = {"bpm": 120}
    music_config.write_text(json.dumps(data))
    app = make_app(music_model=str(midi_checkpoint))
    async with app.run_test(size=SIZE) as pilot:
        await open_music(pilot, app)
        warnings = [n.message for n in notices(app) if n.title == "Music settings"]
        assert len(warnings) == 1 and "'metronome'" in warnings[0] and "\n" not in warnings[0]
        app.music_pane.roll.focus()
        await pilot.press("right_square_bracket")  # a settings change: the section is saved
        await wait_until(pilot, lambda: json.loads(music_config.read_text())["music"].get("tempo") == 1.1,
                         what="the save")
    saved = json.loads(music_config.read_text())["music"]
    assert saved["metronome"] == {"bpm": 120} and saved["settings"]["seed"] == 3
