"""The path dialog for state files, with the time_state orientation choice.

RWKV state-tuning files exist in two orientations (see ``engine.time_state``); the file cannot
say which it is, so whoever imports or exports one picks. rwkv-tui's own state and session
files record their layout and ignore the choice.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from textual.app import ComposeResult
from textual.widgets import Checkbox, Input, Label, RadioButton, RadioSet

from engine.time_state import DEFAULT_ORIENTATION, Orientation
from tui.safe_text import plain
from tui.screens.path_prompt import PathPrompt

_ORIENTATION_TEXT = {
    Orientation.AS_STORED: "as stored — [value][key], what RWKV-PEFT x070 state tuning writes",
    Orientation.TRANSPOSED: "transposed — [key][value], ChatRWKV's habit from RWKV-5/6",
}


@dataclass(frozen=True)
class StateFileChoice:
    path: str
    orientation: str
    allow_other_model: bool = False


class StateFilePrompt(PathPrompt):
    """Dismisses with a :class:`StateFileChoice`, or None when cancelled."""

    DEFAULT_CSS = """
    StateFilePrompt #orientation { width: 100%; margin-top: 1; border: none; padding: 0; background: transparent; }
    StateFilePrompt .orientation-title { margin-top: 1; color: $text-muted; }
    StateFilePrompt #allow-other-model { margin-top: 1; border: none; padding: 0; background: transparent; }
    """

    def __init__(
        self,
        title: str,
        value: str = "",
        *,
        mode: Literal["open", "save"] = "open",
        note: str = "",
        orientation: str = DEFAULT_ORIENTATION.value,
        offer_other_weights: bool = False,
    ) -> None:
        super().__init__(title, value, mode=mode, note=note)
        self.orientation = Orientation.parse(orientation)
        #: Show the "from other weights" check box (loading rwkv-tui state and session files).
        self.offer_other_weights = offer_other_weights

    def compose_options(self) -> ComposeResult:
        yield Label("Orientation of time_state matrices (.pth state-tuning files):", classes="orientation-title")
        with RadioSet(id="orientation"):
            for orientation in Orientation:
                yield RadioButton(
                    plain(_ORIENTATION_TEXT[orientation]), value=orientation is self.orientation,
                    id=f"orientation-{orientation.value}",
                )
        if self.offer_other_weights:
            yield Checkbox(
                "from other weights: accept a state saved with another model of this shape (e.g. a fine-tune)",
                id="allow-other-model",
            )

    @property
    def chosen_orientation(self) -> Orientation:
        pressed = self.query_one("#orientation", RadioSet).pressed_button
        if pressed is None or pressed.id is None:
            return self.orientation
        return Orientation.parse(pressed.id.removeprefix("orientation-"))

    def _confirm(self) -> None:
        value = self.query_one("#path", Input).value
        if self._check(value) is None:
            other = self.offer_other_weights and self.query_one("#allow-other-model", Checkbox).value
            choice = StateFileChoice(str(Path(value).expanduser()), self.chosen_orientation.value, other)
            self.dismiss(choice)  # type: ignore[arg-type]
