"""The side panel for the system prompt, sampling parameters and the G1 think mode.

Every field is checked as it is typed, with the same rules the engine applies, and the error shows
right under the field; the last valid settings stay in force until the field is fixed, so a typo
can never reach the engine or the config file.
"""

from __future__ import annotations

from dataclasses import replace

from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import Button, Input, Label, Select, Static, TextArea

from engine import EngineError, SamplingParams, ThinkMode
from tui.config import SAMPLING_FIELDS, coerce_sampling_value
from tui.messages import SettingsChanged
from tui.protocol import ChatSettings
from tui.safe_text import plain
from tui.widgets.safe_fields import SafeInput, SafeTextArea

#: Field → (label, hint shown under it).
FIELD_TEXT: dict[str, tuple[str, str]] = {
    "temperature": ("Temperature", "0 = greedy; higher = more varied"),
    "top_p": ("Top-p", "0..1; keep the likeliest tokens up to this mass"),
    "top_k": ("Top-k", "0 disables"),
    "presence_penalty": ("Presence penalty", "for tokens already used"),
    "frequency_penalty": ("Frequency penalty", "per use of a token"),
    "penalty_decay": ("Penalty decay", "0..1 per token; 1 never forgets"),
    "max_tokens": ("Max tokens", "reply length limit"),
    "seed": ("Seed", "empty = random; a number repeats a reply"),
}

THINK_LABELS = (
    ("Off — the model decides", ThinkMode.OFF),
    ("Think — reason first (G1)", ThinkMode.THINK),
    ("Skip — answer directly (G1)", ThinkMode.SKIP),
)


def _display(value: object) -> str:
    return "" if value is None else str(value)


class SettingsPanel(VerticalScroll):
    """Edits a :class:`ChatSettings`; posts :class:`SettingsChanged` with each valid change."""

    DEFAULT_CSS = """
    SettingsPanel {
        width: 40;
        padding: 0 1;
        border-left: vkey $panel-lighten-1;
        background: $surface;
    }
    SettingsPanel .settings-title { text-style: bold; color: $primary; margin: 1 0 0 0; }
    SettingsPanel .field-row { height: auto; margin: 1 0 0 0; }
    SettingsPanel .field-label { width: 19; }
    SettingsPanel .field-hint { color: $text-muted; width: 1fr; }
    SettingsPanel .field-error { color: $error; display: none; }
    SettingsPanel .field-error.-shown { display: block; }
    SettingsPanel Input { width: 1fr; }
    SettingsPanel Input.-invalid { border: tall $error; }
    SettingsPanel #system-prompt { height: 6; }
    SettingsPanel #settings-buttons { height: auto; margin: 1 0; }
    """

    def __init__(self, settings: ChatSettings, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.settings = settings

    def compose(self) -> ComposeResult:
        yield Static("System prompt", classes="settings-title")
        yield SafeTextArea(self.settings.system, id="system-prompt", soft_wrap=True, tab_behavior="focus")
        yield Static("Fed with the first message; Ctrl+N starts a new chat.", classes="field-hint")
        yield Static("Think mode", classes="settings-title")
        yield Select(
            [(label, mode.value) for label, mode in THINK_LABELS], value=self.settings.think.value,
            allow_blank=False, id="think-mode",
        )
        yield Static("Sampling", classes="settings-title")
        for name in SAMPLING_FIELDS:
            label, hint = FIELD_TEXT[name]
            with Horizontal(classes="field-row"):
                yield Label(label, classes="field-label")
                yield SafeInput(_display(getattr(self.settings.params, name)), id=f"field-{name}", compact=True)
            yield Static(hint, classes="field-hint")
            yield Static("", id=f"error-{name}", classes="field-error")
        with Horizontal(id="settings-buttons"):
            yield Button("Defaults", id="settings-defaults", variant="default", compact=True)

    # ------------------------------------------------------------------ updates from outside

    def show_settings(self, settings: ChatSettings) -> None:
        """Reflect settings changed elsewhere (think-mode key, config load) without re-posting."""
        self.settings = settings
        with self.prevent(Input.Changed, Select.Changed, TextArea.Changed):
            for name in SAMPLING_FIELDS:
                field_input = self.query_one(f"#field-{name}", Input)
                field_input.value = _display(getattr(settings.params, name))
                self._set_error(name, None)
            self.query_one("#think-mode", Select).value = settings.think.value
            system = self.query_one("#system-prompt", TextArea)
            if system.text != settings.system:
                system.load_text(settings.system)

    # ------------------------------------------------------------------ validation

    def _set_error(self, name: str, message: str | None) -> None:
        self.query_one(f"#field-{name}", Input).set_class(message is not None, "-invalid")
        error = self.query_one(f"#error-{name}", Static)
        error.update(plain(message or ""))
        error.set_class(message is not None, "-shown")

    def validate_field(self, name: str, text: str) -> SamplingParams | None:
        """The params with this field changed, or None (and the error shown) if it is invalid."""
        try:
            value = coerce_sampling_value(name, text)
            params = self.settings.params.with_(**{name: value})
        except ValueError as exc:
            self._set_error(name, str(exc))
            return None
        except EngineError as exc:
            self._set_error(name, str(exc).removeprefix("invalid sampling setting: "))
            return None
        self._set_error(name, None)
        return params

    def _publish(self, settings: ChatSettings) -> None:
        if settings != self.settings:
            self.settings = settings
            self.post_message(SettingsChanged(settings))

    @on(Input.Changed)
    def _field_changed(self, event: Input.Changed) -> None:
        event.stop()
        name = (event.input.id or "").removeprefix("field-")
        if name not in SAMPLING_FIELDS:
            return
        params = self.validate_field(name, event.value)
        if params is not None:
            self._publish(replace(self.settings, params=params))

    @on(Select.Changed, "#think-mode")
    def _think_changed(self, event: Select.Changed) -> None:
        event.stop()
        if isinstance(event.value, str):
            self._publish(replace(self.settings, think=ThinkMode(event.value)))

    @on(TextArea.Changed, "#system-prompt")
    def _system_changed(self, event: TextArea.Changed) -> None:
        event.stop()
        self._publish(replace(self.settings, system=event.text_area.text))

    @on(Button.Pressed, "#settings-defaults")
    def _defaults(self, event: Button.Pressed) -> None:
        event.stop()
        defaults = replace(self.settings, params=SamplingParams())
        self.show_settings(defaults)
        self.post_message(SettingsChanged(defaults))
