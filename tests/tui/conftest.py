"""Helpers for driving the real app (real engine, tiny random model) with Textual's Pilot, and
the engine thread on its own."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

import pytest
from textual.app import App
from textual.notifications import Notification

from engine import SamplingParams
from tui.app import LaunchOptions, RwkvApp
from tui.protocol import ChatSettings, ConversationInfo, Event, LoadModel, ModelLoaded, ModelLoadFailed
from tui.worker import EngineWorker


async def wait_until(pilot: Any, predicate: Callable[[], bool], timeout: float = 180.0, what: str = "") -> None:
    """Let the app run until ``predicate`` holds (the engine works on its own thread).

    ``timeout`` only ends a test that would otherwise hang; it is far above any honest wait on
    a loaded machine, so a slow run is slow, never red.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        await pilot.pause(0.03)
    raise AssertionError(f"timed out waiting for {what or predicate}")


async def wait_idle(pilot: Any, app: RwkvApp, timeout: float = 180.0) -> None:
    """Until no reply is being generated and every engine event has reached the UI."""
    await wait_until(
        pilot, lambda: app.worker.settled and not len(app.worker.outbox) and not app.chat_pane.generating,
        timeout, "the reply to finish",
    )
    await pilot.pause(0.1)


@pytest.fixture(autouse=True)
def _notification_history(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep every notification an app raised for the test to read with :func:`notices`.

    Textual drops a notification from ``app._notifications`` once its timeout has passed (3 s
    for some of ours), a wall-clock window a loaded machine overran before the assertion ran.
    """
    from textual.notifications import Notifications

    original = Notifications.add

    def add(self: Notifications, notification: Notification) -> None:
        self.__dict__.setdefault("history", []).append(notification)
        original(self, notification)

    monkeypatch.setattr(Notifications, "add", add)


def notices(app: App) -> list[Notification]:
    """Every notification ``app`` raised so far, oldest first, whether or not still on screen."""
    return list(getattr(app._notifications, "history", []))


def notice_texts(app: App) -> list[str]:
    return [n.message for n in notices(app)]


@pytest.fixture(autouse=True)
def _own_state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test its own XDG state folder: the app autosaves there on exit and offers the
    autosave back on start, which must not leak from one test into the next."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg-state"))


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    """Settings for tests: short, seeded replies."""
    path = tmp_path / "config" / "config.json"
    path.parent.mkdir()
    path.write_text(json.dumps({"sampling": {"max_tokens": 24, "seed": 1}}))
    return path


@pytest.fixture
def make_app(tiny_checkpoint: Path, config_file: Path) -> Callable[..., RwkvApp]:
    def make(**changes: Any) -> RwkvApp:
        options = dict(
            model=str(tiny_checkpoint), tokenizer="bytes", device="cpu", dtype="fp32",
            use_demo_models=False, config_path=config_file,
        )
        options.update(changes)
        return RwkvApp(LaunchOptions(**options))
    return make


async def start(pilot: Any, app: RwkvApp) -> None:
    await wait_until(pilot, lambda: app.chat_pane.has_model, what="the model to load")
    await pilot.pause(0.05)


async def run_from_palette(pilot: Any, app: RwkvApp, query: str, key: str = "ctrl+p") -> None:
    """Open a command palette with ``key``, type ``query`` and run the best match.

    Waits for the palette's search to finish and for its first match to contain ``query``,
    not for a fixed half second: on a loaded machine Enter could otherwise land on a stale list.
    """
    from textual.command import CommandList, CommandPalette

    await pilot.press(key)
    await wait_until(pilot, lambda: isinstance(app.screen, CommandPalette), what="the command palette")
    await pilot.press(*query)

    def best_match() -> str:
        commands = app.screen.query_one(CommandList)
        if commands.highlighted is None or commands.option_count == 0:
            return ""
        prompt = commands.get_option_at_index(commands.highlighted).prompt
        return getattr(prompt, "plain", str(prompt))

    await pilot.app.workers.wait_for_complete()
    await wait_until(pilot, lambda: query.lower() in best_match().lower(), what=f"the palette to offer {query!r}")
    await pilot.press("enter")


async def open_model_file_dialog(pilot: Any, app: RwkvApp, key: str = "ctrl+o") -> Any:
    """Open the model picker with ``key``, then its last entry ("a file…"): the path dialog.

    Each step waits for its screen, so no key press lands on the screen before.
    """
    from tui.screens.model_picker import ModelPicker
    from tui.screens.path_prompt import PathPrompt

    await pilot.press(key)
    await wait_until(pilot, lambda: isinstance(app.screen, ModelPicker), what="the model picker")
    await pilot.pause()
    await pilot.press("end", "enter")
    await wait_until(pilot, lambda: isinstance(app.screen, PathPrompt), what="the path dialog")
    return app.screen


def set_sampling(app: RwkvApp, **changes: Any) -> None:
    from dataclasses import replace

    settings = replace(app.chat_pane.settings, params=app.chat_pane.settings.params.with_(**changes))
    app.chat_pane.apply_settings(settings)


@pytest.fixture(scope="session")
def midi_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer, 64-wide random x070 model over the 20096-token MIDI-LLM vocabulary."""
    from engine.music.midi_vocab import VOCAB_SIZE
    from engine.synthetic import random_state_dict, save_checkpoint

    path = tmp_path_factory.mktemp("models") / "tiny-midi.pth"
    return save_checkpoint(random_state_dict(2, 64, VOCAB_SIZE, seed=11), path)


@pytest.fixture(scope="session")
def abc_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer, 64-wide random x070 model over a 128-character ABC vocabulary."""
    from engine.synthetic import random_state_dict, save_checkpoint

    path = tmp_path_factory.mktemp("models") / "tiny-abc.pth"
    return save_checkpoint(random_state_dict(2, 64, 128, seed=5), path)


# ---------------------------------------------------------------- the engine thread alone


def settings(max_tokens: int = 24, seed: int | None = 1, **kw) -> ChatSettings:
    return ChatSettings(params=SamplingParams(max_tokens=max_tokens, seed=seed, **kw))


class Recorder:
    """Collects drained events; waits for a condition like the UI's timer would."""

    def __init__(self, worker: EngineWorker) -> None:
        self.worker = worker
        self.events: list[Event] = []

    def wait_for(self, predicate: Callable[[Event], bool], timeout: float = 30.0) -> Event:
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline:
            self.events.extend(self.worker.drain())
            for event in self.events[seen:]:
                if predicate(event):
                    return event
            seen = len(self.events)
            time.sleep(0.01)
        raise AssertionError(f"timed out; events: {[type(e).__name__ for e in self.events]}")

    def of(self, kind: type) -> list:
        return [e for e in self.events if isinstance(e, kind)]

    def clear(self) -> None:
        self.events.extend(self.worker.drain())
        self.events.clear()


@pytest.fixture
def worker(tiny_checkpoint: Path):
    w = EngineWorker()
    w.start()
    rec = Recorder(w)
    w.submit(LoadModel("chat", str(tiny_checkpoint), device="cpu", dtype="fp32", tokenizer="bytes"))
    rec.wait_for(lambda e: isinstance(e, (ModelLoaded, ModelLoadFailed)))
    assert rec.of(ModelLoaded), rec.events
    rec.wait_for(lambda e: isinstance(e, ConversationInfo))  # the load's last event: nothing left behind
    yield w, rec
    w.close()
