"""The frame around the panes: models, errors, palette, help and key map, themes, settings, state pane."""

from __future__ import annotations

import json
from pathlib import Path

from textual.widgets import Button, DataTable, Input, TabbedContent

from tests.tui.conftest import notice_texts, notices, open_model_file_dialog, run_from_palette, start, wait_idle, wait_until
from tui.screens.help import HelpScreen
from tui.screens.model_picker import ModelPicker
from tui.screens.path_prompt import PathPrompt


async def test_header_shows_model_device_dtype_and_state_size(make_app) -> None:
    app = make_app()
    async with app.run_test(size=(120, 36)) as pilot:
        await start(pilot, app)
        bar = str(app.query_one("#model-bar").render_bar())
        assert "tiny-bytes" in bar and "cpu" in bar and "fp32" in bar and "bytes" in bar
        assert "demo" not in bar.lower()
        assert "state 66.0 KB" in str(app.query_one("#status-line").render_stats())


async def test_a_bad_model_file_is_one_notification_and_the_app_goes_on(make_app, tmp_path: Path) -> None:
    bad = tmp_path / "garbage.pth"
    bad.write_bytes(b"\x00not a model at all")
    app = make_app()
    async with app.run_test(size=(120, 36)) as pilot:
        await start(pilot, app)
        await open_model_file_dialog(pilot, app)
        app.screen.query_one("#path", Input).value = str(bad)
        await pilot.press("enter")
        await wait_until(pilot, lambda: any("garbage.pth" in m for m in notice_texts(app)))
        error = next(m for m in notice_texts(app) if "garbage.pth" in m)
        assert "\n" not in error and "Traceback" not in error
        # The loaded model and the chat are untouched.
        assert "tiny-bytes" in str(app.query_one("#model-bar").render_bar())
        await pilot.press(*"still working?", "enter")
        await wait_idle(pilot, app)
        assert app.worker.conversation.turns[0].user == "still working?"


async def test_the_open_dialog_refuses_a_missing_file(make_app, tmp_path: Path) -> None:
    app = make_app()
    async with app.run_test(size=(120, 36)) as pilot:
        await start(pilot, app)
        await open_model_file_dialog(pilot, app)
        app.screen.query_one("#path", Input).value = str(tmp_path / "nope.pth")
        await pilot.press("enter")
        assert isinstance(app.screen, PathPrompt)  # stays open, says why
        assert "no such file" in str(app.screen.query_one("#path-note").render())
        await pilot.press("escape")
        assert not isinstance(app.screen, PathPrompt)


async def test_missing_demo_models_give_one_notification_and_a_usable_app(
    make_app, monkeypatch, tmp_path: Path, tiny_checkpoint: Path
) -> None:
    import engine.demo_models as demo_models

    monkeypatch.setattr(demo_models, "MODELS_DIR", tmp_path / "no-models-here")
    app = make_app(model=None, use_demo_models=True)
    async with app.run_test(size=(120, 36)) as pilot:
        await wait_until(pilot, lambda: "none" in str(app.query_one("#model-bar").render_bar()).split("music:")[1])
        await pilot.pause(0.3)
        errors = [n for n in notices(app) if n.severity == "error"]
        assert len(errors) == 1 and "demo model is missing" in errors[0].message
        # Still usable: type, and load a model from the palette.
        await pilot.press(*"hello", "enter")
        await wait_until(pilot, lambda: any("Not sent" in m for m in notice_texts(app)))
        assert app.chat_pane.prompt.text == "hello"  # nothing lost
        await run_from_palette(pilot, app, "Load model")
        await wait_until(pilot, lambda: isinstance(app.screen, ModelPicker))
        await pilot.pause()
        await pilot.press("end", "enter")  # the model picker's last entry: "a file…"
        await wait_until(pilot, lambda: isinstance(app.screen, PathPrompt))
        app.screen.query_one("#path", Input).value = str(tiny_checkpoint)
        await pilot.press("enter")
        await start(pilot, app)
        await pilot.press("enter")
        await wait_idle(pilot, app)
        assert app.worker.conversation.turns[0].user == "hello"


async def test_palette_runs_chat_actions(make_app) -> None:
    app = make_app()
    async with app.run_test(size=(120, 36)) as pilot:
        await start(pilot, app)
        await run_from_palette(pilot, app, "Settings")
        await wait_until(pilot, lambda: app.chat_pane.has_class("-settings-open"))
        app.chat_pane.prompt.focus()
        await pilot.press(*"hi", "enter")
        await wait_idle(pilot, app)
        first = app.worker.conversation.turns[0]
        await run_from_palette(pilot, app, "Chat: Regenerate")
        await wait_until(pilot, lambda: app.worker.conversation.turns[0] is not first)
        await wait_idle(pilot, app)


async def test_every_palette_action_is_listed(make_app) -> None:
    from tui.actions import ACTIONS

    app = make_app()
    async with app.run_test(size=(120, 36)) as pilot:
        await start(pilot, app)
        titles = {c.title for c in app.get_system_commands(app.screen)}
        for spec in ACTIONS:
            if spec.palette:
                assert any(spec.palette_title in t for t in titles), spec.id


async def test_theme_switch_applies_and_persists(make_app, config_file: Path) -> None:
    app = make_app()
    async with app.run_test(size=(120, 36)) as pilot:
        await start(pilot, app)
        assert app.theme == "rwkv-dark"
        await run_from_palette(pilot, app, "rwkv-light", key="f9")  # the theme picker
        await wait_until(pilot, lambda: app.theme == "rwkv-light")
        assert app.has_class("-theme-rwkv-light") and app.has_class("-light-mode")
        await wait_until(pilot, lambda: json.loads(config_file.read_text()).get("theme") == "rwkv-light", what="save")
    again = make_app()
    async with again.run_test(size=(120, 36)) as pilot:
        assert again.theme == "rwkv-light"


async def test_help_lists_keys_and_the_keymap_remaps_them(make_app, config_file: Path) -> None:
    config_file.write_text(json.dumps({"sampling": {"max_tokens": 8, "seed": 1}, "keymap": {"chat.regenerate": "ctrl+b"}}))
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await start(pilot, app)
        await pilot.press("f1")
        assert isinstance(app.screen, HelpScreen)
        from tui.actions import ACTIONS
        from tui.screens.help import help_sections, remap_hint

        rows = [row for _, section in help_sections(app.config.keymap) for row in section]
        assert {spec.id for spec in ACTIONS} <= {action_id for _, _, action_id in rows}
        assert ("Ctrl+B", "Replace the last reply (no history is re-fed)", "chat.regenerate") in rows
        assert str(config_file) in str(remap_hint(str(config_file)))
        await pilot.press("escape")
        await pilot.press(*"hi", "enter")
        await wait_idle(pilot, app)
        first = app.worker.conversation.turns[0]
        await pilot.press("ctrl+r")  # no longer bound
        await pilot.pause(0.3)
        assert app.worker.conversation.turns[0] is first
        await pilot.press("ctrl+b")
        await wait_until(pilot, lambda: app.worker.conversation.turns[0] is not first)
        await wait_idle(pilot, app)


async def test_a_corrupt_config_is_one_notification_with_defaults(make_app, config_file: Path) -> None:
    config_file.write_text("{ this is not json")
    app = make_app()
    async with app.run_test(size=(120, 36)) as pilot:
        await start(pilot, app)
        warnings = [n for n in notices(app) if n.title == "Settings"]
        assert len(warnings) == 1 and "not valid JSON" in warnings[0].message
        assert app.theme == "rwkv-dark" and app.chat_pane.settings.params.max_tokens == 1000


async def test_settings_panel_validates_and_saves(make_app, config_file: Path) -> None:
    app = make_app()
    async with app.run_test(size=(120, 50)) as pilot:
        await start(pilot, app)
        await pilot.press("f5")
        panel = app.query_one("#settings")
        field = panel.query_one("#field-temperature", Input)
        field.value = "-2"
        await pilot.pause(0.1)
        assert field.has_class("-invalid")
        assert "temperature" in str(panel.query_one("#error-temperature").render())
        assert app.chat_pane.settings.params.temperature == 1.0  # last valid value stays
        field.value = "0.25"
        await pilot.pause(0.1)
        assert not field.has_class("-invalid") and app.chat_pane.settings.params.temperature == 0.25
        panel.query_one("#field-seed", Input).value = ""
        await pilot.pause(0.1)
        assert app.chat_pane.settings.params.seed is None
        await wait_until(pilot, lambda: json.loads(config_file.read_text())["sampling"].get("temperature") == 0.25, what="save")
        # Think mode from its key, reflected in the panel and used for the next message.
        await pilot.press("ctrl+t")
        assert app.chat_pane.settings.think.value == "think"
        assert panel.query_one("#think-mode").value == "think"


async def test_panes_switch_by_key_and_by_mouse(make_app) -> None:
    app = make_app()
    async with app.run_test(size=(120, 36)) as pilot:
        await start(pilot, app)
        tabs = app.query_one("#panes", TabbedContent)
        await pilot.press("f3")
        assert tabs.active == "music"
        await pilot.press("f4")
        assert tabs.active == "state"
        await pilot.press("f2")
        assert tabs.active == "chat" and app.focused is app.chat_pane.prompt
        await pilot.click("#panes Tab#--content-tab-state")
        assert tabs.active == "state"


async def test_state_pane_lists_snapshots_and_rewinds(make_app) -> None:
    app = make_app()
    async with app.run_test(size=(130, 40)) as pilot:
        await start(pilot, app)
        for text in ("one", "two", "three"):
            await pilot.press(*text, "enter")
            await wait_idle(pilot, app)
        await pilot.press("f4")
        table = app.state_pane.query_one("#snapshots", DataTable)
        await wait_until(pilot, lambda: table.row_count == 3)
        cells = app.state_pane.numbers
        assert cells["Snapshots kept"].startswith("3 ·")
        assert cells["Tokens seen"] == f"{app.worker.conversation.state.tokens_seen:,}"
        table.move_cursor(row=1)
        rewind = app.state_pane.query_one("#rewind", Button)
        # Each step waits for the pane to show it took the previous one: a click that lands
        # before the highlight moved would arm the old row (seen on a loaded machine).
        pane = app.state_pane
        await wait_until(pilot, lambda: pane.info is not None and not rewind.disabled
                         and pane._selected_turn() == pane.info.turns[1].index, what="row 1 selected")
        await pilot.click("#rewind")
        # Armed, and the press animation over: Textual ignores clicks on a button still "-active".
        await wait_until(pilot, lambda: str(rewind.label).startswith("Press again") and not rewind.has_class("-active"),
                         what="rewind armed")
        assert len(app.worker.conversation.turns) == 3  # the first press only asks
        await pilot.click("#rewind")
        await wait_until(pilot, lambda: len(app.worker.conversation.turns) == 1)
        await wait_until(pilot, lambda: len(app.chat_pane.views()) == 2 and table.row_count == 1)


async def test_music_pane_shows_the_music_model(make_app, tiny_checkpoint: Path) -> None:
    app = make_app(music_model=str(tiny_checkpoint))
    async with app.run_test(size=(120, 36)) as pilot:
        await wait_until(pilot, lambda: app.music_pane.model is not None)
        text = str(app.music_pane.query_one("#music-model").render())
        assert "tiny-bytes" in text and "not a music vocabulary" in text
        for widget in ("piano-roll", "music-text", "transport", "music-settings"):
            assert app.music_pane.query_one(f"#{widget}")


async def test_loading_shows_progress_then_the_model(make_app) -> None:
    from tui.protocol import ModelLoading

    app = make_app(model=None)
    async with app.run_test(size=(120, 36)) as pilot:
        await pilot.pause(0.2)
        progress = app.query_one("#load-progress")
        app.worker.outbox.put(ModelLoading("chat", "/models/big-7b.pth", "reading", 0.42, 15_000_000_000))
        await wait_until(pilot, lambda: progress.has_class("-active"))
        label = str(progress.query_one("#load-label").render())
        assert "big-7b.pth" in label and "14.0 GB" in label and "reading" in label
        assert progress.query_one("#load-bar").percentage == 0.42
        app.worker.outbox.put(ModelLoading("chat", "/models/big-7b.pth", "building the model", None, 15_000_000_000))
        await wait_until(pilot, lambda: progress.query_one("#load-bar").total is None)
        # The UI stays usable meanwhile.
        await pilot.press(*"typing while loading")
        assert app.chat_pane.prompt.text == "typing while loading"


async def test_a_bad_state_file_keeps_the_model_and_says_why(make_app, tmp_path: Path) -> None:
    app = make_app(state=str(tmp_path / "missing.state"))
    async with app.run_test(size=(120, 36)) as pilot:
        await start(pilot, app)
        await wait_until(pilot, lambda: any("missing.state" in m for m in notice_texts(app)))
        message = next(m for m in notice_texts(app) if "missing.state" in m)
        assert "\n" not in message and "initial state" in message
        await pilot.press(*"hi", "enter")
        await wait_idle(pilot, app)
        assert len(app.worker.conversation.turns) == 1


async def test_demo_models_are_labelled_as_such(make_app, monkeypatch, tmp_path: Path, tiny_checkpoint: Path) -> None:
    import shutil

    import engine.demo_models as demo_models

    shutil.copy(tiny_checkpoint, tmp_path / demo_models.DEMO_MODELS["chat"])
    monkeypatch.setattr(demo_models, "MODELS_DIR", tmp_path)
    app = make_app(model=None, use_demo_models=True, tokenizer="bytes")
    async with app.run_test(size=(120, 36)) as pilot:
        await start(pilot, app)
        bar = str(app.query_one("#model-bar").render_bar())
        assert "rwkv7-demo-chat-bytes" in bar and "demo models" in bar and "--model" in bar
        assert not [n for n in notices(app) if n.severity == "error"]  # the missing music demo is not an error
        assert "none" in bar.split("music:")[1]


async def test_state_pane_saves_and_loads_the_live_state(make_app, tmp_path: Path) -> None:
    app = make_app()
    async with app.run_test(size=(130, 40)) as pilot:
        await start(pilot, app)
        await pilot.press(*"keep me", "enter")
        await wait_idle(pilot, app)
        seen = app.worker.conversation.state.tokens_seen
        await pilot.press("f4")
        await pilot.click("#save-state")
        assert isinstance(app.screen, PathPrompt)
        target = tmp_path / "live.state.safetensors"
        app.screen.query_one("#path", Input).value = str(target)
        await pilot.press("enter")
        await wait_until(pilot, lambda: target.exists(), what="the state file")
        await pilot.press("f2", "ctrl+n")
        await wait_until(pilot, lambda: app.worker.conversation.state.tokens_seen == 0)
        await pilot.press("f4")
        await pilot.click("#load-state")
        app.screen.query_one("#path", Input).value = str(target)
        await pilot.press("enter")
        await wait_until(pilot, lambda: app.state_pane.numbers.get("Tokens seen") == f"{seen:,}", what="the loaded state")
        assert app.worker.conversation.turns == []


async def test_chat_demo_model_answers_with_its_own_sampling_and_keeps_the_users(make_app, config_file: Path) -> None:
    """The shipped chat demo decodes greedily (its sidecar); the user's defaults return for real models."""
    from engine.demo_models import demo_model_path, suggested_sampling

    app = make_app(model=None, use_demo_models=True, tokenizer=None, dtype=None)
    async with app.run_test(size=(120, 36)) as pilot:
        await start(pilot, app)
        demo = suggested_sampling(demo_model_path("chat"))
        assert demo is not None and app.chat_pane.settings.params == demo
        await pilot.press(*"What is the MIDI note number of A4?", "enter")
        await wait_idle(pilot, app)
        assert app.worker.conversation.turns[-1].reply.strip() == "A4 is MIDI note 69."
        user_sampling = app.config.sampling
        assert user_sampling.max_tokens == 24 and user_sampling != demo  # from config_file, untouched
        app._load("chat", str(demo_model_path("chat")).replace("chat-bytes", "ABC-folk"))
        await wait_until(pilot, lambda: app.chat_pane.settings.params == user_sampling, what="the user's sampling back")
