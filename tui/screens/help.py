"""F1: every key the app answers to, with the user's remappings applied, and how to remap them."""

from __future__ import annotations

from rich import box
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from tui.actions import ACTIONS, PROMPT_KEYS, effective_keys, format_keys
from tui.safe_text import plain
from tui.terminal_text import visible_controls

SCOPE_TITLES = (
    ("app", "Anywhere"),
    ("chat", "Chat pane"),
    ("music", "Music pane"),
    ("message", "A focused message (click it, or Tab to it)"),
    ("state", "State pane (the snapshot list has focus)"),
)

Row = tuple[str, str, str]


def help_sections(keymap: dict[str, str]) -> list[tuple[str, list[Row]]]:
    """(title, [(keys, what it does, action id)]) for each group of keys, remaps applied."""
    sections: list[tuple[str, list[Row]]] = []
    for scope, title in SCOPE_TITLES:
        rows = [
            (format_keys(effective_keys(spec.id, keymap)), spec.help, spec.id)
            for spec in ACTIONS if spec.scope == scope
        ]
        sections.append((title, rows))
    sections.append(("Message box", [(keys, text, "") for keys, text in PROMPT_KEYS]))
    return sections


def remap_hint(config_file: str) -> Text:
    text = Text()
    text.append("Remapping keys\n", style="bold")
    text.append(f"Add the ids you want to move under \"keymap\" in {visible_controls(config_file)} and restart, e.g.\n")
    text.append('  {"keymap": {"chat.regenerate": "ctrl+r,f6", "chat.stop": "escape"}}\n', style="italic")
    text.append("The theme, system prompt, think mode and sampling defaults are saved in the same file.")
    return text


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,f1,q", "close", "Close", id="help.close")]

    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll {
        width: 96;
        max-width: 95%;
        height: 90%;
        border: thick $primary 70%;
        border-title-align: center;
        background: $surface;
        padding: 0 1;
    }
    HelpScreen .help-title { text-style: bold; color: $primary; margin-top: 1; }
    HelpScreen #remap-hint { margin: 1 0; color: $text-muted; }
    """

    def __init__(self, keymap: dict[str, str], config_file: str) -> None:
        super().__init__()
        self.keymap = keymap
        self.config_file = config_file

    def compose(self) -> ComposeResult:
        scroll = VerticalScroll()
        scroll.border_title = "Keys · Esc closes"
        with scroll:
            for title, rows in help_sections(self.keymap):
                yield Static(plain(title), classes="help-title")
                table = Table(box=box.SIMPLE_HEAD, expand=True, show_edge=False, pad_edge=False)
                table.add_column("Keys", no_wrap=True, style="bold")
                table.add_column("Action", ratio=1)
                table.add_column("Id", style="dim", no_wrap=True)
                for keys, text, action_id in rows:
                    table.add_row(plain(keys), plain(text), plain(action_id))
                yield Static(table)
            yield Static(remap_hint(self.config_file), id="remap-hint")

    def action_close(self) -> None:
        self.dismiss(None)
