"""Tab completion in the path dialogs: a file system that fights back never crashes the app."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from textual.app import App
from textual.widgets import Input

from tests.tui.conftest import wait_until
from tui.screens.path_prompt import PathPrompt, PathSuggester


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "loop").symlink_to(tmp_path / "loop")  # a link to itself: stat() says ELOOP
    (tmp_path / "models").mkdir()
    (tmp_path / "music.mid").write_bytes(b"MThd")
    return tmp_path


async def test_a_symlink_loop_is_completed_as_a_name_not_a_crash(folder: Path) -> None:
    """``entry.is_dir()`` raised OSError (ELOOP) out of the suggester, which ended the app."""
    suggester = PathSuggester()
    assert await suggester.get_suggestion(f"{folder}/lo") == f"{folder}/loop"
    assert await suggester.get_suggestion(f"{folder}/mo") == f"{folder}/models/"
    assert await PathSuggester((".mid",)).get_suggestion(f"{folder}/l") is None  # not a .mid


class _Entry:
    """A directory entry whose type cannot be looked up (as os.DirEntry fails on a live system)."""

    def __init__(self, name: str, error: int | None) -> None:
        self.name = name
        self._error = error

    def is_dir(self) -> bool:
        if self._error is not None:
            raise OSError(self._error, os.strerror(self._error), self.name)
        return True


async def test_unreadable_and_vanished_entries_are_offered_as_names(monkeypatch: pytest.MonkeyPatch) -> None:
    """EACCES (a link into a folder we may not enter) and ENOENT (deleted while listing) raised
    out of the suggester; such an entry now completes as a plain name, and the next one still
    works. A test running as root cannot make a real EACCES, hence the fakes."""
    entries = [_Entry("data-locked", errno.EACCES), _Entry("data-gone", errno.ENOENT), _Entry("data-ok", None)]
    monkeypatch.setattr(os, "scandir", lambda _path: iter(entries))
    suggester = PathSuggester()
    assert await suggester.get_suggestion("/x/data-l") == "/x/data-locked"
    assert await suggester.get_suggestion("/x/data-o") == "/x/data-ok/"


@pytest.mark.parametrize("value", [
    "/tmp/" + "x" * 5000,  # ENAMETOOLONG
    "/tmp/" + "y/" * 3000,  # a path longer than PATH_MAX
    "/tmp/a\x00b/c",  # os.scandir raises ValueError on a NUL byte
    "~no-such-user-here/x",
])
async def test_unusable_text_gives_no_suggestion(value: str) -> None:
    assert await PathSuggester().get_suggestion(value) is None


class _Host(App[None]):
    def on_mount(self) -> None:
        self.push_screen(PathPrompt("Open", mode="open"))


async def test_typing_towards_a_symlink_loop_in_the_dialog(folder: Path) -> None:
    app = _Host()
    async with app.run_test() as pilot:
        await pilot.pause()
        path_input = app.screen.query_one("#path", Input)
        path_input.value = f"{folder}/lo"
        await pilot.press("o")
        # The suggestion comes from a worker: wait for it (a worker that raised ended the app).
        await wait_until(pilot, lambda: bool(path_input._suggestion) or not app.is_running, what="the suggestion")
        assert path_input._suggestion == f"{folder}/loop"
        await pilot.press("tab")
        assert path_input.value == f"{folder}/loop"
        assert app.is_running
