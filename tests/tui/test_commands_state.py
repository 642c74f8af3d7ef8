"""``rwkv-tui state``: the non-interactive state tools, run through the real entry point."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from engine.state_io import load_state_file, read_state_info
from tui.cli import main

TEXT = "A reusable prompt, primed into a state file."


@pytest.fixture()
def primed(tmp_path, tiny_checkpoint) -> Path:
    out = tmp_path / "primed.state.safetensors"
    code = main(["state", "prime", str(out), "--model", str(tiny_checkpoint), "--device", "cpu",
                 "--dtype", "fp32", "--tokenizer", "bytes", "--text", TEXT])
    assert code == 0
    return out


def _model_args(checkpoint: Path) -> list[str]:
    return ["--model", str(checkpoint), "--device", "cpu", "--dtype", "fp32", "--tokenizer", "bytes"]


def test_prime_feeds_the_text_and_binds_the_model(tmp_path, tiny_checkpoint, tiny_model, capsys):
    primed = tmp_path / "p.state.safetensors"
    assert main(["state", "prime", str(primed), "--text", TEXT, *_model_args(tiny_checkpoint)]) == 0
    loaded = load_state_file(primed, tiny_model)
    assert loaded.tokens == list(TEXT.encode())
    _, expected = tiny_model.forward(list(TEXT.encode()), None)
    assert loaded.state.equal(expected)
    assert "44 tokens fed" in capsys.readouterr().out


def test_prime_can_continue_from_a_state(tmp_path, primed, tiny_checkpoint, tiny_model):
    out = tmp_path / "more.state.safetensors"
    assert main(["state", "prime", str(out), "--from-state", str(primed), "--text", " More.",
                 *_model_args(tiny_checkpoint)]) == 0
    loaded = load_state_file(out, tiny_model)
    assert loaded.tokens == list((TEXT + " More.").encode())
    _, expected = tiny_model.forward(list((TEXT + " More.").encode()), None)
    assert torch.allclose(loaded.state.wkv, expected.wkv, atol=1e-5)


def test_inspect_prints_header_and_layers(primed, tiny_checkpoint, capsys):
    capsys.readouterr()
    assert main(["state", "inspect", str(primed), "--heads", *_model_args(tiny_checkpoint)]) == 0
    out = capsys.readouterr().out
    assert "rwkv-tui state" in out and "2 layers × 128 (2 heads of 64)" in out
    assert "tokens consumed  44" in out and "fits --model     yes" in out
    assert "WKV norm per head" in out


def test_inspect_json(primed, capsys):
    capsys.readouterr()
    assert main(["state", "inspect", str(primed), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["kind"] == "rwkv-tui state"
    assert data["tokens_seen"] == 44 and data["history_tokens"] == 44
    assert len(data["wkv_norms"]) == 2 and len(data["wkv_norms"][0]) == 2
    assert data["file_dtype"] == "fp32"


@pytest.mark.parametrize("orientation", ["as-stored", "transposed"])
def test_convert_to_time_state_and_back(tmp_path, primed, tiny_checkpoint, tiny_model, orientation, capsys):
    pth = tmp_path / "tuned.pth"
    assert main(["state", "convert", str(primed), str(pth), "--orientation", orientation]) == 0
    captured = capsys.readouterr()
    assert "token-shift vectors" in captured.err  # the format cannot hold them: say so
    original = load_state_file(primed).state
    raw = torch.load(pth, weights_only=True)
    expected = original.wkv if orientation == "as-stored" else original.wkv.transpose(-1, -2)
    assert torch.equal(raw["blocks.1.att.time_state"], expected[1])

    back = tmp_path / "back.state.safetensors"
    assert main(["state", "convert", str(pth), str(back), "--orientation", orientation,
                 *_model_args(tiny_checkpoint)]) == 0
    info = read_state_info(back)
    assert info.fingerprint == tiny_model.info.fingerprint and info.meta["orientation"] == orientation
    assert torch.equal(load_state_file(back, tiny_model).state.wkv, original.wkv)


def test_convert_reencodes_our_files_keeping_the_binding(tmp_path, primed):
    half = tmp_path / "half.state.safetensors"
    assert main(["state", "convert", str(primed), str(half), "--save-dtype", "bf16"]) == 0
    info, source = read_state_info(half), read_state_info(primed)
    assert info.dtype == "bf16" and info.fingerprint == source.fingerprint
    assert info.history_tokens == 44


def test_diff_reports_identical_and_changed_states(tmp_path, primed, tiny_checkpoint, capsys):
    assert main(["state", "diff", str(primed), str(primed)]) == 0
    assert "identical" in capsys.readouterr().out
    other = tmp_path / "other.state.safetensors"
    main(["state", "prime", str(other), "--text", "Something else entirely.", *_model_args(tiny_checkpoint)])
    capsys.readouterr()
    assert main(["state", "diff", str(primed), str(other), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert not data["identical"] and data["relative"] > 0.01
    assert data["tokens"] == [44, 24]
    ranked = [entry["relative"] for entry in data["most_changed"]]
    assert len(ranked) == 4 and ranked == sorted(ranked, reverse=True)  # all 2×2 heads, worst first


def test_probe_prints_both_scores_and_marks_the_lower(tmp_path, primed, tiny_checkpoint, tiny_model, capsys):
    # Random weights cannot tell which reading is right (no in-context learning), so this only
    # checks the report against the engine's numbers; the engine tests check the measurement.
    from engine.time_state import Orientation, probe_orientation, read_time_state_file

    pth = tmp_path / "flipped.pth"
    main(["state", "convert", str(primed), str(pth), "--orientation", "transposed"])
    capsys.readouterr()
    sample = "Hello there"
    assert main(["state", "probe", str(pth), "--text", sample, *_model_args(tiny_checkpoint)]) == 0
    out = capsys.readouterr().out
    scores = probe_orientation(tiny_model, read_time_state_file(pth), list(sample.encode()))
    best = min(scores, key=scores.get)
    for orientation in Orientation:
        line = next(l for l in out.splitlines() if l.strip().startswith(orientation.value))
        assert f"{scores[orientation]:.4f} nats/token" in line
        assert ("← better" in line) == (orientation is best)
    assert f"use --orientation {best.value}" in out


@pytest.mark.parametrize("content", [b"", b"garbage" * 100, b"PK\x03\x04broken zip"])
def test_bad_files_give_one_line_errors(tmp_path, content, capsys):
    path = tmp_path / "bad.state.safetensors"
    path.write_bytes(content)
    assert main(["state", "inspect", str(path)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("rwkv-tui: ") and "\n" not in err and str(path) in err


def test_mismatched_model_is_refused(tmp_path, primed, capsys):
    from engine.synthetic import random_state_dict, save_checkpoint

    other = save_checkpoint(random_state_dict(2, 128, 256, seed=99), tmp_path / "other.pth")
    out = tmp_path / "x.pth"
    assert main(["state", "convert", str(primed), str(out), *_model_args(other)]) == 1
    assert "allow-other-model" in capsys.readouterr().err
    assert not out.exists()
    assert main(["state", "convert", str(primed), str(out), "--allow-other-model", *_model_args(other)]) == 0


def test_refuses_to_overwrite_its_input(primed, capsys):
    before = primed.read_bytes()
    assert main(["state", "convert", str(primed), str(primed)]) == 1
    assert primed.read_bytes() == before
