"""Ctrl+O's model picker in the real app: downloads with progress while the chat goes on,
loading picked models into Chat or Music, the file dialog, and failures as one line.

The catalog and the Hub are local (tests/hub_server.py); nothing reaches the internet.
"""

from __future__ import annotations

from pathlib import Path

from textual.widgets import OptionList

from tests.hub_server import ModelHub, model_hub, tiny_checkpoint_bytes  # noqa: F401
from tests.tui.conftest import notice_texts, notices, start, wait_idle, wait_until
from tui.screens.model_picker import DownloadBar, ModelDownloads, ModelPicker
from tui.screens.path_prompt import PathPrompt
from tui.widgets.model_bar import ModelBar


async def open_picker(pilot, app) -> ModelPicker:  # noqa: ANN001
    await pilot.press("ctrl+o")
    await wait_until(pilot, lambda: isinstance(app.screen, ModelPicker), what="the model picker")
    await pilot.pause()
    return app.screen


def option_ids(picker: ModelPicker) -> list[str | None]:
    return [option.id for option in picker.query_one(OptionList).options]


async def test_download_runs_beside_the_chat_then_the_model_loads(
    make_app, model_hub: ModelHub, tmp_path: Path,
) -> None:
    data = tiny_checkpoint_bytes(tmp_path, seed=3)
    model_hub.publish("tiny-two", data)
    model_hub.state.behaviour.pause_after = len(data) // 2
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await start(pilot, app)
        picker = await open_picker(pilot, app)
        # Nothing downloaded yet: the catalog, then the file option.
        assert option_ids(picker) == [None, "model:tiny-two", "file"]
        assert picker.query_one(OptionList).highlighted_option.id == "model:tiny-two"

        await pilot.press("enter")
        downloads = ModelDownloads.of(app)
        await wait_until(pilot, lambda: downloads.job("tiny-two") is not None
                         and downloads.job("tiny-two").fraction >= 0.5, what="half the download")
        await wait_until(pilot, lambda: picker.query_one("#picker-progress").has_class("-active"))
        await pilot.press("escape")  # closing the dialog does not stop the download
        await wait_until(pilot, lambda: not isinstance(app.screen, ModelPicker))
        bar = app.query_one(DownloadBar)
        await wait_until(pilot, lambda: bar.has_class("-active"), what="the download bar")

        # The chat answers while the download waits half-way.
        await pilot.press(*"hello", "enter")
        await wait_idle(pilot, app)
        assert app.worker.conversation.turns[0].user == "hello"
        assert downloads.job("tiny-two") is not None

        model_hub.state.behaviour.gate.set()
        await wait_until(pilot, lambda: not downloads.jobs, what="the download to finish")
        assert any("tiny-two is downloaded and verified" in m for m in notice_texts(app))
        await wait_until(pilot, lambda: not bar.has_class("-active"))
        assert (model_hub.models_dir / "tiny-two.pth").read_bytes() == data
        assert app.query_one(ModelBar).chat.name != "tiny-two"  # the dialog was closed: not loaded unasked

        picker = await open_picker(pilot, app)
        assert option_ids(picker) == [None, "model:tiny-two", "file"]
        assert "Downloaded" in str(picker.query_one(OptionList).options[0].prompt)
        await pilot.press("enter")
        await wait_until(pilot, lambda: app.query_one(ModelBar).chat is not None
                         and app.query_one(ModelBar).chat.name == "tiny-two", what="tiny-two to load")
        assert app.query_one(ModelBar).chat.path == str(model_hub.models_dir / "tiny-two.pth")


async def test_download_finished_with_the_dialog_open_loads_a_music_model_into_music(
    make_app, model_hub: ModelHub, tmp_path: Path,
) -> None:
    data = tiny_checkpoint_bytes(tmp_path, seed=5, vocab=128)  # a character-level ABC vocabulary
    model_hub.publish("tiny-ABC-tunes", data, kind="music")
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await start(pilot, app)
        await pilot.press("ctrl+shift+o")
        await wait_until(pilot, lambda: isinstance(app.screen, ModelPicker))
        await pilot.pause()
        assert app.screen.query_one(OptionList).highlighted_option.id == "model:tiny-ABC-tunes"
        await pilot.press("enter")
        await wait_until(pilot, lambda: app.query_one(ModelBar).music is not None
                         and app.query_one(ModelBar).music.name == "tiny-ABC-tunes", what="the music model")
        assert not isinstance(app.screen, ModelPicker)
        assert app.query_one(ModelBar).music.tokenizer == "abc"
        assert app.query_one(ModelBar).chat.name != "tiny-ABC-tunes"  # the chat keeps its model


async def test_failed_download_is_one_line_and_the_current_model_stays(
    make_app, model_hub: ModelHub, tmp_path: Path,
) -> None:
    model_hub.publish("tiny-two", tiny_checkpoint_bytes(tmp_path, seed=3))
    model_hub.state.behaviour.corrupt_at = 100
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await start(pilot, app)
        before = app.query_one(ModelBar).chat
        await open_picker(pilot, app)
        await pilot.press("enter")
        await wait_until(pilot, lambda: any("arrived damaged" in m for m in notice_texts(app)))
        message = next(m for m in notice_texts(app) if "arrived damaged" in m)
        assert "\n" not in message
        assert app.query_one(ModelBar).chat == before
        assert not (model_hub.models_dir / "tiny-two.pth").exists()
        assert isinstance(app.screen, ModelPicker)  # still open: try the other source, or close


async def test_a_file_option_opens_the_path_dialog(make_app, model_hub: ModelHub) -> None:
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await start(pilot, app)
        picker = await open_picker(pilot, app)
        assert option_ids(picker) == ["file"]  # an empty catalog: only the file option
        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(app.screen, PathPrompt), what="the path dialog")


async def test_model_argument_takes_a_catalog_name_in_the_app(
    make_app, model_hub: ModelHub, tmp_path: Path,
) -> None:
    from engine.catalog import load_catalog
    from engine.downloads import pull

    model_hub.publish("tiny-two", tiny_checkpoint_bytes(tmp_path, seed=3), aliases=("t2",))
    app = make_app(model="t2")
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, lambda: any("not downloaded yet" in m for m in notice_texts(app)))
        assert any("tiny-two is not downloaded yet: run `rwkv-tui models pull tiny-two`" in m
                   for m in notice_texts(app))

    pull(load_catalog().get("t2"))
    app = make_app(model="t2")
    async with app.run_test(size=(120, 40)) as pilot:
        await start(pilot, app)
        assert app.query_one(ModelBar).chat.name == "tiny-two"


async def test_x_stops_a_download_which_resumes_later_and_s_switches_the_source(
    make_app, model_hub: ModelHub, tmp_path: Path,
) -> None:
    data = tiny_checkpoint_bytes(tmp_path, seed=3)
    model_hub.publish("tiny-two", data)
    model_hub.state.behaviour.pause_after = len(data) // 2
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await start(pilot, app)
        picker = await open_picker(pilot, app)
        await pilot.press("s")  # ModelScope
        assert "download from ModelScope" in str(picker.query_one("#picker-note").render())
        await pilot.press("enter")
        downloads = ModelDownloads.of(app)
        await wait_until(pilot, lambda: downloads.job("tiny-two") is not None
                         and downloads.job("tiny-two").fraction >= 0.5, what="half the download")
        await pilot.press("x")
        model_hub.state.behaviour.gate.set()  # the server may go on; the client has stopped reading
        await wait_until(pilot, lambda: any("`rwkv-tui models pull tiny-two` resumes it" in m
                                            for m in notice_texts(app)), what="the stop notice")
        assert not (model_hub.models_dir / "tiny-two.pth").exists()
        kept = (model_hub.models_dir / "tiny-two.pth.partial").stat().st_size
        assert kept >= len(data) // 2
        assert all(r.path.startswith("/models/") for r in model_hub.state.transfers())

        # Enter again resumes from what was kept, and the open dialog loads the model when done.
        await pilot.press("enter")
        await wait_until(pilot, lambda: app.query_one(ModelBar).chat.name == "tiny-two", what="tiny-two to load")
        assert model_hub.state.transfers()[-1].range == f"bytes={kept}-"


async def test_state_argument_takes_a_catalog_state_name(
    make_app, model_hub: ModelHub, tmp_path: Path, tiny_checkpoint: Path,
) -> None:
    """Official state-tuning files listed in a catalog are pulled like models and named by --state."""
    from engine import load_model
    from engine.catalog import load_catalog
    from engine.downloads import pull
    from engine.state_io import save_state

    model = load_model(tiny_checkpoint, device="cpu", dtype="fp32")
    _, state = model.forward([72, 105, 33])
    state_file = save_state(tmp_path / "primed.state.safetensors", state, model)
    model_hub.publish("tiny-chat", tiny_checkpoint.read_bytes())
    model_hub.publish("tiny-primed", state_file.read_bytes(), kind="state", file="tiny-primed.state.safetensors")
    model_hub.entries[-1]["for_model"] = "tiny-chat"
    model_hub.write_catalog()
    pull(load_catalog().get("tiny-primed"))

    app = make_app(state="tiny-primed")
    async with app.run_test(size=(120, 40)) as pilot:
        await start(pilot, app)
        await wait_until(pilot, lambda: app.worker.conversation is not None)
        assert app.worker.conversation.state.tokens_seen == 3
        assert not [n for n in notices(app) if n.severity == "error"]
        picker = await open_picker(pilot, app)
        assert "model:tiny-primed" not in option_ids(picker)  # states are not models to load
