"""The settings file: validated field by field, atomic saves, a damaged file never blocks the app."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from engine import SamplingParams, ThinkMode
from tui.actions import effective_keys, keymap_clashes
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


# --------------------------------------------------------------------------- damaged files (issues 17, 19)

HUGE_INTEGER = "1" + "0" * 999  # 1e999 written out as an integer: too large for a float


@pytest.mark.parametrize(
    ("content", "field", "needle", "kept"),
    [
        (b'{"theme": "rwkv-light", "system_prompt": "caf\xe9"}', None, "not valid UTF-8", {}),
        (b"[" * 200_000, None, "nested", {}),
        (b'{"sampling": {"temperature": ' + b"9" * 400 + b"}}", "temperature", "400-digit", {}),
        (('{"sampling": {"temperature": %s, "top_p": 0.5}}' % HUGE_INTEGER).encode(), "temperature", "1000-digit",
         {"top_p": 0.5}),
        (b'{"sampling": {"top_p": ' + b"7" * 400 + b', "temperature": 0.5}}', "top_p", "400-digit",
         {"temperature": 0.5}),
        (b'{"sampling": {"seed": ' + b"3" * 400 + b"}}", "seed", "seed", {}),
        (b'{"theme": "\\ud800", "system_prompt": "x"}', None, "Unicode", {}),
    ],
    ids=["bad-utf8", "deep-nesting", "400-digit-float", "1e999-as-integer", "400-digit-top-p", "400-digit-seed",
         "lone-surrogate"],
)
def test_damaged_bytes_never_stop_start_up(
    content: bytes, field: str | None, needle: str, kept: dict[str, float], tmp_path: Path
) -> None:
    """Each of these crashed load_config (UnicodeDecodeError, RecursionError, OverflowError) or the
    first save (UnicodeEncodeError): now one short line each, the defaults, and the file as it was."""
    path = tmp_path / "config.json"
    path.write_bytes(content)
    loaded = load_config(path)
    assert loaded.problems, "the damage must be reported"
    assert any(needle in p for p in loaded.problems), loaded.problems
    assert all("\n" not in p and len(p) < 300 for p in loaded.problems), loaded.problems
    if field is None:
        assert loaded.corrupt and loaded.config == AppConfig()
    else:
        assert not loaded.corrupt
        assert getattr(loaded.config.sampling, field) == getattr(SamplingParams(), field)
    for name, value in kept.items():  # a bad value costs only that value
        assert getattr(loaded.config.sampling, name) == value
    assert path.read_bytes() == content  # reading never changes the file
    # The next settings change saves without a failure, and a damaged original is kept aside.
    save_config(loaded.config, path, keep_corrupt=loaded.corrupt)
    assert load_config(path).problems == []
    if loaded.corrupt:
        assert (tmp_path / "config.json.bak").read_bytes() == content


def test_a_huge_file_is_refused_without_reading_it_all(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_bytes(b'{"system_prompt": "' + b"x" * (5 << 20) + b'"}')
    loaded = load_config(path)
    assert loaded.corrupt and loaded.config == AppConfig()
    assert len(loaded.problems) == 1 and "too large" in loaded.problems[0]


def test_unknown_and_unusable_entries_survive_a_settings_change(tmp_path: Path) -> None:
    """A key map entry naming an action this version does not have (a typo, or a newer version's
    action) was reported once and then silently deleted by the next save. Entries we cannot use
    are now kept as written, and reported at every start until the user fixes them."""
    path = tmp_path / "config.json"
    original = {
        "keymap": {"chat.stop": "f12", "no.such.action": "x", "chat.regenerate": "", "chat.export": 5},
        "sampling": {"top_p": 0.5, "future_setting": [1, 2]},
    }
    path.write_text(json.dumps(original))
    loaded = load_config(path)
    assert loaded.config.keymap == {"chat.stop": "f12"}
    first_problems = loaded.problems
    assert len(first_problems) == 4
    save_config(replace(loaded.config, theme="rwkv-light"), path)  # the user picks a theme
    saved = json.loads(path.read_text())
    assert saved["theme"] == "rwkv-light"
    assert saved["keymap"] == original["keymap"]
    assert saved["sampling"]["future_setting"] == [1, 2] and saved["sampling"]["top_p"] == 0.5
    again = load_config(path)
    assert sorted(again.problems) == sorted(first_problems) and again.config.keymap == {"chat.stop": "f12"}


def test_a_key_bound_to_two_actions_is_one_warning_that_names_the_winner(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"keymap": {"chat.new": "ctrl+r"}}))
    loaded = load_config(path)
    assert len(loaded.problems) == 1
    line = loaded.problems[0]
    assert "ctrl+r" in line and "chat.new" in line and "chat.regenerate" in line and "\n" not in line
    assert "chat.new gets it" in line
    # The help screen and hints say what the keys now do: Ctrl+R is chat.new's alone.
    assert effective_keys("chat.new", loaded.config.keymap) == "ctrl+r"
    assert "ctrl+r" not in effective_keys("chat.regenerate", loaded.config.keymap).split(",")


def test_the_built_in_keys_never_clash() -> None:
    assert keymap_clashes({}) == []


@pytest.mark.parametrize(
    ("keymap", "winner", "loser"),
    [
        # Both from the key map, same pane: the action listed first in F1 help wins.
        ({"chat.new": "f6", "chat.regenerate": "f6"}, "chat.regenerate", "chat.new"),
        # A pane's key beats an app-wide one while that pane has focus.
        ({"chat.new": "f1"}, "chat.new", "app.help"),
        # ...except Quit and the command palette, which always win.
        ({"chat.new": "ctrl+q"}, "app.quit", "chat.new"),
    ],
)
def test_which_action_a_shared_key_runs(keymap: dict[str, str], winner: str, loser: str) -> None:
    clashes = keymap_clashes(keymap)
    assert len(clashes) == 1
    assert f"{winner} gets it" in clashes[0] and loser in clashes[0]


async def test_the_key_does_what_the_warning_says(make_app, config_file: Path) -> None:
    """Binding Ctrl+R to chat.new used to be silent; the warning's winner is what the key runs,
    and the help screen no longer lists Ctrl+R under Regenerate."""
    from tests.tui.conftest import notices, start, wait_idle, wait_until
    from tui.screens.help import help_sections

    config_file.write_text(json.dumps({"sampling": {"max_tokens": 8, "seed": 1}, "keymap": {"chat.new": "ctrl+r"}}))
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await start(pilot, app)
        warnings = [n.message for n in notices(app) if n.title == "Settings"]
        assert len(warnings) == 1 and "chat.new gets it" in warnings[0] and "\n" not in warnings[0]
        rows = {action_id: keys for _, section in help_sections(app.config.keymap) for keys, _, action_id in section}
        assert rows["chat.new"] == "Ctrl+R" and rows["chat.regenerate"] == "—"
        await pilot.press(*"hi", "enter")
        await wait_idle(pilot, app)
        assert app.chat_pane.turn_count == 1
        await pilot.press("ctrl+r")
        await wait_until(pilot, lambda: app.chat_pane.turn_count == 0, what="a new conversation")
