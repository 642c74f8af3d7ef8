"""The settings file: validated field by field, atomic saves, a damaged file never blocks the app."""

from __future__ import annotations

import json
from pathlib import Path

from engine import SamplingParams, ThinkMode
from tui.config import AppConfig, coerce_sampling_value, config_path, load_config, save_config


def test_lives_in_the_xdg_config_dir(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delenv("RWKV_TUI_CONFIG", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert config_path() == tmp_path / "rwkv-tui" / "config.json"


def test_missing_file_gives_defaults_silently(tmp_path: Path) -> None:
    loaded = load_config(tmp_path / "absent.json")
    assert loaded.problems == [] and loaded.config == AppConfig()


def test_round_trip_keeps_unknown_sections(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    config = AppConfig(
        theme="rwkv-light", keymap={"chat.stop": "ctrl+x"},
        sampling=SamplingParams(temperature=0.7, top_k=40, seed=5), system_prompt="Be brief.",
        think=ThinkMode.THINK, extra={"music": {"port": "FLUID Synth"}},
    )
    save_config(config, path)
    loaded = load_config(path)
    assert loaded.problems == []
    assert loaded.config == config
    assert json.loads(path.read_text())["music"] == {"port": "FLUID Synth"}
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]


def test_bad_fields_fall_back_one_by_one(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({
        "theme": 3,
        "keymap": {"chat.stop": "f12", "no.such.action": "x", "chat.regenerate": ""},
        "sampling": {"temperature": -1, "top_p": 0.5, "top_k": "many", "seed": None, "bogus": 1},
        "think": "maybe",
    }))
    loaded = load_config(path)
    config = loaded.config
    assert config.theme == AppConfig().theme
    assert config.keymap == {"chat.stop": "f12"}
    assert config.sampling.top_p == 0.5 and config.sampling.temperature == SamplingParams().temperature
    assert config.sampling.top_k == SamplingParams().top_k and config.sampling.seed is None
    assert config.think == ThinkMode.OFF
    text = "\n".join(loaded.problems)
    for needle in ("'theme'", "no.such.action", "chat.regenerate", "temperature", "top_k", "bogus", "'think'"):
        assert needle in text
    assert all("\n" not in p for p in loaded.problems)


def test_corrupt_file_gives_defaults_and_is_kept_aside_on_save(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text('{"theme": "rwkv-light",')  # truncated
    loaded = load_config(path)
    assert loaded.corrupt and loaded.config == AppConfig()
    assert len(loaded.problems) == 1 and "not valid JSON" in loaded.problems[0]
    save_config(loaded.config, path, keep_corrupt=True)
    assert (tmp_path / "config.json.bak").read_text() == '{"theme": "rwkv-light",'
    assert load_config(path).problems == []


def test_typed_values_from_the_settings_panel() -> None:
    assert coerce_sampling_value("temperature", " 0.8 ") == 0.8
    assert coerce_sampling_value("max_tokens", "12") == 12
    assert coerce_sampling_value("seed", "") is None
    for name, text in (("top_k", "2.5"), ("temperature", "warm"), ("top_p", "nan")):
        try:
            coerce_sampling_value(name, text)
        except ValueError as exc:
            assert text in str(exc) or "finite" in str(exc)
        else:
            raise AssertionError(f"{name}={text!r} accepted")
