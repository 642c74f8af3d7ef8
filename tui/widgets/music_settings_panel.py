"""The music pane's settings: mode, sampling, length, seed, MIDI and ABC options, export loudness.

Each field is checked as it is typed with :class:`~tui.music_settings.MusicSettings` (the engine's
own rules); an error shows in one line under the field and the last valid settings stay in force,
so a typo never reaches the music thread or the config file. Options of the other mode are hidden.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.message import Message
from textual.widgets import Checkbox, Input, Label, Select, Static

from tui.music_settings import MODE_LABELS, MODES, MusicSettings
from tui.safe_text import plain
from tui.widgets.safe_fields import SafeInput

#: Field → (label, hint, which mode shows it: "" = both).
FIELDS: dict[str, tuple[str, str, str]] = {
    "temperature": ("Temperature", "higher = more adventurous", ""),
    "top_p": ("Top-p", "0..1 probability mass kept", ""),
    "top_k": ("Top-k", "0 disables (recipe: 8)", ""),
    "max_tokens": ("Max tokens", "empty = 4096 MIDI / 1024 ABC", ""),
    "seed": ("Seed", "empty = random; a number repeats", ""),
    "length_target": ("Length target", "tokens after which it tends to end", "midi"),
    "continue_from": ("Continue", ".mid / token .txt; c picks one", "midi"),
    "controls": ("Controls", "S:sections B:bars E:similarity", "abc"),
    "unit": ("L: unit", "default note length, e.g. 1/8", "abc"),
    "meter": ("M: meter", "e.g. 4/4, 6/8", "abc"),
    "key": ("K: key", "e.g. D, Ador", "abc"),
    "tune_start": ("Tune start", "first notes; \\n = new line", "abc"),
    "lufs": ("WAV LUFS", "loudness target of .wav export", ""),
}
CONTINUE_SUFFIXES = (".mid", ".midi", ".txt")


def _display(value: object) -> str:
    return "" if value is None else str(value)


def check_continuation(text: str) -> str | None:
    """Why a continuation path cannot be used (one line), or None."""
    if not text.strip():
        return None
    path = Path(text.strip()).expanduser()
    if path.suffix.lower() not in CONTINUE_SUFFIXES:
        return "expected a .mid file or a .txt of MIDI tokens"
    if not path.is_file():
        return f"{path}: no such file"
    return None


class MusicSettingsPanel(VerticalScroll):
    """Edits a :class:`MusicSettings`; posts :class:`MusicSettingsPanel.Changed` on each valid change."""

    DEFAULT_CSS = """
    MusicSettingsPanel {
        width: 40;
        padding: 0 1;
        border-left: vkey $panel-lighten-1;
        background: $surface;
    }
    MusicSettingsPanel .settings-title { text-style: bold; color: $primary; }
    MusicSettingsPanel .field-row { height: 1; margin-top: 1; }
    MusicSettingsPanel .field-label { width: 14; }
    MusicSettingsPanel .field-hint { color: $text-muted; height: 1; }
    MusicSettingsPanel .field-error { color: $error; display: none; }
    MusicSettingsPanel .field-error.-shown { display: block; }
    MusicSettingsPanel Input { width: 1fr; }
    MusicSettingsPanel Input.-invalid { background: $error 30%; }
    MusicSettingsPanel #music-mode { width: 1fr; }
    MusicSettingsPanel #field-piano_only { margin-top: 1; }
    MusicSettingsPanel.-midi .-only-abc { display: none; }
    MusicSettingsPanel.-abc .-only-midi { display: none; }
    """

    class Changed(Message):
        def __init__(self, panel: "MusicSettingsPanel", settings: MusicSettings) -> None:
            super().__init__()
            self.panel = panel
            self.settings = settings

        @property
        def control(self) -> "MusicSettingsPanel":
            return self.panel

    FIELD_NAMES: ClassVar[tuple[str, ...]] = tuple(FIELDS)

    def __init__(self, settings: MusicSettings, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.settings = settings
        #: Field → the one-line error of what is typed there now.
        self.errors: dict[str, str] = {}

    def compose(self) -> ComposeResult:
        yield Static("Music settings", classes="settings-title")
        with Horizontal(classes="field-row"):
            yield Label("Mode", classes="field-label")
            yield Select([(MODE_LABELS[m], m) for m in MODES], value=self.settings.mode, allow_blank=False,
                         id="music-mode", compact=True)
        yield Checkbox("Piano only", self.settings.piano_only, id="field-piano_only", compact=True,
                       classes="-only-midi")
        for name, (label, hint, only) in FIELDS.items():
            classes = f"-only-{only}" if only else ""
            with Horizontal(classes=f"field-row {classes}"):
                yield Label(label, classes="field-label")
                yield SafeInput(_display(getattr(self.settings, name)), id=f"field-{name}", compact=True,
                            tooltip=hint, select_on_focus=False)
            yield Static(hint, classes=f"field-hint {classes}")
            yield Static("", id=f"error-{name}", classes=f"field-error {classes}")

    def on_mount(self) -> None:
        self._show_mode(self.settings.mode)

    def _show_mode(self, mode: str) -> None:
        self.set_class(mode == "midi", "-midi")
        self.set_class(mode == "abc", "-abc")

    # ------------------------------------------------------------------ from outside

    def show_settings(self, settings: MusicSettings) -> None:
        """Reflect settings changed elsewhere (model load, file picker) without re-posting."""
        self.settings = settings
        with self.prevent(Input.Changed, Select.Changed, Checkbox.Changed):
            for name in FIELDS:
                self.query_one(f"#field-{name}", Input).value = _display(getattr(settings, name))
                self._set_error(name, None)
            self.query_one("#music-mode", Select).value = settings.mode
            self.query_one("#field-piano_only", Checkbox).value = settings.piano_only
        self._show_mode(settings.mode)

    def problems(self) -> list[str]:
        """One line per field whose typed value is not in force (shown in the current mode)."""
        out = []
        for name, message in self.errors.items():
            only = FIELDS[name][2]
            if not only or only == self.settings.mode:
                out.append(f"{FIELDS[name][0]}: {message}")
        return out

    # ------------------------------------------------------------------ edits

    def _set_error(self, name: str, message: str | None) -> None:
        self.query_one(f"#field-{name}", Input).set_class(message is not None, "-invalid")
        error = self.query_one(f"#error-{name}", Static)
        error.update(plain(message or ""))
        error.set_class(message is not None, "-shown")
        if message is None:
            self.errors.pop(name, None)
        else:
            self.errors[name] = message

    def _publish(self, settings: MusicSettings) -> None:
        if settings != self.settings:
            self.settings = settings
            self.post_message(self.Changed(self, settings))

    @on(Input.Changed)
    def _field_changed(self, event: Input.Changed) -> None:
        event.stop()
        name = (event.input.id or "").removeprefix("field-")
        if name not in FIELDS:
            return
        try:
            if name == "continue_from":
                problem = check_continuation(event.value)
                if problem:
                    raise ValueError(problem)
            settings = self.settings.with_field(name, event.value)
        except ValueError as exc:
            self._set_error(name, str(exc))
            return
        self._set_error(name, None)
        self._publish(settings)

    @on(Select.Changed, "#music-mode")
    def _mode_changed(self, event: Select.Changed) -> None:
        event.stop()
        if event.value in MODES and event.value != self.settings.mode:
            self._show_mode(str(event.value))
            self._publish(self.settings.with_field("mode", event.value))

    @on(Checkbox.Changed, "#field-piano_only")
    def _piano_changed(self, event: Checkbox.Changed) -> None:
        event.stop()
        self._publish(self.settings.with_field("piano_only", event.value))
