"""``rwkv-tui music``: generation to files, continuation, encode/decode, ports, one-line errors."""

from __future__ import annotations

from pathlib import Path

import mido
import pytest

from engine.music import midi_codec as codec
from engine.music import midi_vocab
from engine.synthetic import random_state_dict, save_checkpoint
from tui.cli import main


@pytest.fixture(autouse=True)
def _one_torch_thread():
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def music_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("music-models")
    return {
        "midi": save_checkpoint(random_state_dict(2, 64, midi_vocab.VOCAB_SIZE, seed=1), folder / "rand-MIDI.pth"),
        "abc": save_checkpoint(random_state_dict(2, 64, 128, seed=2), folder / "rand-ABC.pth"),
    }


def run_cli(*argv: str) -> int:
    return main(["music", *argv])


CPU = ("--device", "cpu", "--dtype", "fp32")


def test_midi_generation_saves_tokens_and_a_matching_midi_file(music_models, tmp_path, capsys) -> None:
    base = tmp_path / "piece"
    rc = run_cli("generate", "--model", str(music_models["midi"]), *CPU, "--max-tokens", "40", "--seed", "3",
                 "--out", str(base))
    out, err = capsys.readouterr()
    assert rc == 0
    text = (tmp_path / "piece.txt").read_text().strip()
    assert text.startswith("<start> ") and text.endswith(" <end>")
    assert out.split() == text.split()[1:-1]  # what streamed to stdout is the piece
    saved = mido.MidiFile(tmp_path / "piece.mid")
    expected = codec.decode_tokens(text).to_midi()
    assert [str(m) for m in saved.tracks[0]] == [str(m) for m in expected.tracks[0]]
    assert "saved" in err and "tok/s" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["piece.mid", "piece.txt"]


def test_same_seed_same_piece_and_piano_only(music_models, tmp_path, capsys) -> None:
    for name in ("a", "b"):
        assert run_cli("generate", "--model", str(music_models["midi"]), *CPU, "--max-tokens", "30", "--seed", "5",
                       "--piano-only", "--quiet", "--txt", str(tmp_path / f"{name}.txt")) == 0
    a, b = (tmp_path / "a.txt").read_text(), (tmp_path / "b.txt").read_text()
    assert a == b
    notes = [w for w in a.split() if ":" in w]
    assert notes and all(w.startswith("pi:") for w in notes)
    assert not list(tmp_path.glob("*.mid"))  # only what was asked for


def test_continuation_from_a_midi_file(music_models, tmp_path, capsys) -> None:
    theme = "<start> pi:3c:a t62 pi:3c:0 pi:40:9 t62 pi:40:0 <end>"
    codec.decode_tokens(theme).to_midi().save(tmp_path / "theme.mid")
    rc = run_cli("generate", "--model", str(music_models["midi"]), *CPU, "--max-tokens", "10", "--seed", "1",
                 "--continue", str(tmp_path / "theme.mid"), "--quiet", "--txt", str(tmp_path / "more.txt"))
    assert rc == 0
    assert (tmp_path / "more.txt").read_text().startswith(theme.removesuffix(" <end>"))
    assert "continuing" in capsys.readouterr().err


def test_abc_generation_saves_the_tune_with_a_reference_number(music_models, tmp_path, capsys) -> None:
    rc = run_cli("generate", "--mode", "abc", "--model", str(music_models["abc"]), *CPU, "--max-tokens", "30",
                 "--seed", "2", "--controls", "S:2 B:8", "--meter", "6/8", "--key", "G", "--out", str(tmp_path / "tune"))
    out, err = capsys.readouterr()
    assert rc == 0
    tune = (tmp_path / "tune.abc").read_text()
    assert tune.startswith("X:1\nS:2\nB:8\nM:6/8\nK:G\n")
    assert out.startswith("S:2\nB:8\nM:6/8\nK:G\n")
    # A random model writes no playable ABC: the .mid is skipped with a reason, the .abc kept.
    assert "no .mid saved" in err or (tmp_path / "tune.mid").exists()


def test_encode_and_decode_round_trip(tmp_path, capsys) -> None:
    text = "<start> b:28:8 pi:3c:a t62 b:28:0 pi:3c:0 <end>"  # canonical: sorted by bin
    (tmp_path / "in.txt").write_text(text)
    assert run_cli("decode", str(tmp_path / "in.txt"), str(tmp_path / "out.mid")) == 0
    assert run_cli("encode", str(tmp_path / "out.mid")) == 0
    out, err = capsys.readouterr()
    assert out.strip() == text
    assert run_cli("encode", str(tmp_path / "out.mid"), "--ids", "--out", str(tmp_path / "ids.txt")) == 0
    assert [int(i) for i in (tmp_path / "ids.txt").read_text().split()] == codec.text_to_ids(text)[0]


def test_ports_lists_or_explains(capsys) -> None:
    assert run_cli("ports") == 0
    out, err = capsys.readouterr()
    assert out.strip() or "no MIDI output ports" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("generate", "--key", "D"), "ABC-mode options"),
        (("generate", "--mode", "abc", "--piano-only"), "MIDI-mode options"),
        (("encode", "/nonexistent/song.mid"), "no such MIDI file"),
        (("render", "/nonexistent/song.mid", "out.wav"), "no such MIDI file"),
        (("generate", "--model", "/nonexistent/model.pth", "--device", "cpu"), "model.pth"),
    ],
)
def test_errors_are_one_line(argv, message, capsys, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert run_cli(*argv) == 1
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_missing_demo_model_is_one_line(capsys, tmp_path, monkeypatch) -> None:
    import engine.demo_models as demo

    monkeypatch.setattr(demo, "MODELS_DIR", tmp_path)
    assert run_cli("generate", "--mode", "abc", "--device", "cpu") == 1
    err = capsys.readouterr().err
    assert "demo model is missing" in err and err.count("\n") == 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("generate", "--tempo", "0"), "tempo must be between 0.25 and 4"),
        (("generate", "--tempo", "-1"), "tempo must be between 0.25 and 4"),
        (("generate", "--tempo", "nan", "--play"), "tempo must be between 0.25 and 4"),
        (("generate", "--volume", "3"), "volume must be between 0 and 2"),
        (("generate", "--max-tokens", "0"), "max_tokens must be ≥ 1"),
        (("generate", "--max-tokens", "-5"), "max_tokens must be ≥ 1"),
        (("generate", "--mode", "abc", "--max-tokens", "0"), "max_tokens must be ≥ 1"),
        (("generate", "--length-target", "-1"), "length_target must be ≥ 1"),
        (("generate", "--length-target", "0"), "length_target must be ≥ 1"),
        (("generate", "--repetition-penalty", "nan"), "repetition_penalty must be a finite number"),
        (("generate", "--temperature", "nan"), "temperature must be ≥ 0"),
        (("generate", "--seed", str(2**64)), "seed must be between 0 and"),
        (("generate", "--wav", "x.wav", "--lufs", "5"), "loudness target must be between -70 and 0 LUFS"),
        (("generate", "--wav", "x.wav", "--peak", "nan"), "peak limit must be between -20 and 0 dBFS"),
        (("play", "song.mid", "--tempo", "0"), "tempo must be between 0.25 and 4"),
        (("play", "song.mid", "--volume", "-0.5"), "volume must be between 0 and 2"),
        (("render", "song.mid", "out.wav", "--lufs", "nan"), "loudness target must be between -70 and 0 LUFS"),
    ],
)
def test_nonsense_numbers_are_refused_with_the_valid_range_before_any_work(
    argv, message, capsys, tmp_path, monkeypatch
) -> None:
    """--tempo 0, --max-tokens 0/-5, --length-target -1 and friends all "succeeded" (0 meant the
    default, the rest were clamped or ignored). Refused now like --temperature nan: one line, the
    valid range, before a model loads or a port opens, and nothing written."""
    import engine

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(engine, "load_model", lambda *a, **k: pytest.fail("a model was loaded"))
    assert run_cli(*argv) == 1
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []
