"""Shipping a run: weights, sidecar and a model card written from the run's own records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import engine
from tests.tools.test_trainer import _config, _pattern_dataset
from tools.train import export as export_module
from tools.train.trainer import train


def test_export_writes_weights_sidecar_and_card(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = _pattern_dataset(tmp_path, 256, list(range(65, 75)))
    run = tmp_path / "run"
    summary = train(_config(data, run, steps=4, eval_every=2))
    gate = {"kind": "chat", "n": 200, "passed_items": 170, "score": 0.85, "threshold": 0.8, "passed": True,
            "seconds": 12.0, "stats": {"by_intent": {"midi_of_note": "20/20"}}}
    (run / "gate.json").write_text(json.dumps(gate))
    monkeypatch.setattr(export_module, "MODELS_DIR", tmp_path / "models")

    weights, sidecar_path, card_path = export_module.export("chat", run, gate_json=run / "gate.json")

    assert weights.name == "rwkv7-demo-chat-bytes.pth"
    assert engine.load_model(weights, device="cpu").info.n_params == summary["params"]
    sidecar = json.loads(sidecar_path.read_text())
    assert sidecar["tokenizer"] == "bytes"
    assert engine.tokenizer_name_for(weights, 256) == "bytes"
    params = engine.SamplingParams.from_dict(sidecar["sampling"])
    assert params.top_p == 0.0 and params.presence_penalty == 0.0  # greedy, no byte penalties
    card = card_path.read_text()
    assert f"{summary['params']:,}" in card
    assert "170/200 = 85.0%" in card
    assert f"best {summary['best_val_loss']:.4f}" in card
    assert "python -m tools.train fit" in card and "--n-embd 64" in card
    assert not list((tmp_path / "models").glob("*.tmp"))


def test_music_sidecars_restate_the_music_pane_defaults() -> None:
    """The gates sample with the music pane's defaults; the sidecars must not advertise others."""
    from engine.music.generate import AbcSettings, MidiSettings

    abc, midi = AbcSettings(), MidiSettings()
    for kind, settings in (("abc", abc), ("midi", midi)):
        sampling = export_module.SAMPLING[kind]
        assert (sampling["temperature"], sampling["top_p"], sampling["top_k"], sampling["max_tokens"]) == (
            settings.temperature, settings.top_p, settings.top_k, settings.max_tokens)
    assert export_module.SAMPLING["midi"]["frequency_penalty"] == midi.repetition_penalty
    assert export_module.SAMPLING["midi"]["penalty_decay"] == midi.penalty_decay
