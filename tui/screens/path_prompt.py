"""A small dialog that asks for a file path (open a model, export a conversation).

The path is checked before the dialog closes (the file exists for "open"; the folder exists for
"save", and replacing a file is said out loud), so the engine only ever sees usable paths. Tab
completes the path from the file system.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.suggester import Suggester
from textual.widgets import Button, Input, Static

from tui.safe_text import plain
from tui.widgets.safe_fields import SafeInput


class PathSuggester(Suggester):
    """Suggests the first file-system entry that completes what has been typed.

    Whatever the file system answers (a symlink loop, a folder we may not read, an entry deleted
    while listing, a name too long, a NUL byte pasted in), the answer is at worst "no suggestion":
    an exception here would end the app from the Input's worker.
    """

    def __init__(self, suffixes: tuple[str, ...] = ()) -> None:
        super().__init__(use_cache=False, case_sensitive=True)
        self.suffixes = suffixes

    async def get_suggestion(self, value: str) -> str | None:
        if not value:
            return None
        expanded = os.path.expanduser(value)
        directory, partial = os.path.split(expanded)
        try:
            entries = sorted(os.scandir(directory or "."), key=lambda e: e.name)
        except (OSError, ValueError):  # unreadable, too long, not a folder; ValueError: a NUL byte
            return None
        for entry in entries:
            if not entry.name.startswith(partial) or entry.name == partial or entry.name.startswith("."):
                continue
            is_dir = _is_folder(entry)
            if not is_dir and self.suffixes and not entry.name.endswith(self.suffixes):
                continue
            completed = value[: len(value) - len(partial)] + entry.name + ("/" if is_dir else "")
            return completed
        return None


def _is_folder(entry: os.DirEntry) -> bool:
    """Whether an entry is a folder (through symlinks); one we cannot look at counts as a name,
    like a broken link: a loop (ELOOP), no permission (EACCES), gone since the listing (ENOENT)."""
    try:
        return entry.is_dir()
    except OSError:
        return False


class PathPrompt(ModalScreen[str | None]):
    """Dismisses with the chosen path, or None when cancelled."""

    BINDINGS = [
        Binding("escape", "cancel", "Cancel", id="dialog.cancel"),
        Binding("tab", "complete", "Complete path", id="dialog.complete", priority=True),
    ]

    DEFAULT_CSS = """
    PathPrompt { align: center middle; }
    PathPrompt > Vertical {
        width: 90;
        max-width: 95%;
        height: auto;
        padding: 1 2;
        border: thick $primary 70%;
        background: $surface;
    }
    PathPrompt .dialog-title { text-style: bold; margin-bottom: 1; }
    PathPrompt #path-note { color: $text-muted; height: auto; }
    PathPrompt #path-note.-error { color: $error; }
    PathPrompt #path-note.-warning { color: $warning; }
    PathPrompt Horizontal { height: auto; margin-top: 1; align-horizontal: right; }
    PathPrompt Button { margin-left: 1; }
    """

    def __init__(
        self,
        title: str,
        value: str = "",
        *,
        mode: Literal["open", "save"] = "open",
        suffixes: tuple[str, ...] = (),
        note: str = "",
    ) -> None:
        super().__init__()
        self.title_text = title
        self.value = value
        self.mode = mode
        self.suffixes = suffixes
        self.note = note

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(plain(self.title_text), classes="dialog-title")
            yield SafeInput(self.value, id="path", suggester=PathSuggester(self.suffixes), select_on_focus=False)
            yield Static(plain(self.note or "Tab completes the path · Enter confirms · Esc cancels"), id="path-note")
            yield from self.compose_options()
            with Horizontal():
                yield Button("Cancel", id="cancel")
                yield Button("Open" if self.mode == "open" else "Save", id="ok", variant="primary")

    def compose_options(self) -> ComposeResult:
        """Widgets a subclass adds between the path and the buttons (none here)."""
        yield from ()

    def on_mount(self) -> None:
        path_input = self.query_one("#path", Input)
        path_input.focus()
        path_input.cursor_position = len(path_input.value)
        self._check(path_input.value)

    def _check(self, value: str) -> str | None:
        """An error for this path, or None; shows a warning when a save replaces a file."""
        note = self.query_one("#path-note", Static)
        note.remove_class("-error", "-warning")
        try:
            error, warning = self._problem(value)
        except (OSError, RuntimeError, ValueError) as exc:
            # A name too long for the file system, "~nobody/…", a NUL byte: a path we cannot use.
            error, warning = f"{value}: cannot use this path ({getattr(exc, 'strerror', None) or exc})", None
        if error or warning:
            note.update(plain(error or warning))
            note.add_class("-error" if error else "-warning")
        else:
            note.update(plain(self.note or "Tab completes the path · Enter confirms · Esc cancels"))
        return error

    def _problem(self, value: str) -> tuple[str | None, str | None]:
        """(error, warning) for this path; OSError when the file system cannot even look it up."""
        if not value.strip():
            return "enter a path", None
        path = Path(value).expanduser()
        if self.mode == "open":
            if not path.exists():
                return f"{path}: no such file", None
            if path.is_dir():
                return f"{path}: is a folder; pick a file inside it", None
            return None, None
        if path.is_dir():
            return f"{path}: is a folder; add a file name", None
        if not path.parent.is_dir():
            return f"{path.parent}: no such folder", None
        if path.exists():
            return None, f"{path.name} exists and will be replaced"
        return None, None

    @on(Input.Changed, "#path")
    def _changed(self, event: Input.Changed) -> None:
        self._check(event.value)

    @on(Input.Submitted, "#path")
    def _submitted(self, event: Input.Submitted) -> None:
        self._confirm()

    @on(Button.Pressed, "#ok")
    def _ok(self) -> None:
        self._confirm()

    @on(Button.Pressed, "#cancel")
    def _cancel_pressed(self) -> None:
        self.dismiss(None)

    def _confirm(self) -> None:
        value = self.query_one("#path", Input).value
        if self._check(value) is None:
            self.dismiss(str(Path(value).expanduser()))

    def action_complete(self) -> None:
        """Tab accepts the suggested completion; without one it moves focus on as usual."""
        path_input = self.query_one("#path", Input)
        if path_input.has_focus and path_input._suggestion:
            path_input.cursor_position = len(path_input.value)
            path_input.action_cursor_right()
        else:
            self.focus_next()

    def action_cancel(self) -> None:
        self.dismiss(None)
