"""F1: every key the app answers to, with the user's remappings applied, and how to remap them."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Markdown

from tui.actions import ACTIONS, PROMPT_KEYS, effective_keys, format_keys

SCOPE_TITLES = (
    ("app", "Anywhere"),
    ("chat", "Chat pane"),
    ("message", "A focused message (click it or Tab to it)"),
)


def help_markdown(keymap: dict[str, str], config_file: str) -> str:
    lines = ["# Keys", ""]
    for scope, title in SCOPE_TITLES:
        lines += [f"## {title}", "", "| Keys | Action | Id |", "|---|---|---|"]
        for spec in ACTIONS:
            if spec.scope == scope:
                keys = format_keys(effective_keys(spec.id, keymap))
                lines.append(f"| {keys} | {spec.help} | `{spec.id}` |")
        lines.append("")
    lines += ["## Message box", "", "| Keys | Action |", "|---|---|"]
    lines += [f"| {keys} | {text} |" for keys, text in PROMPT_KEYS]
    lines += [
        "",
        "## Remapping keys",
        "",
        f"Edit `{config_file}` and add the action ids you want to move under `keymap`, "
        "then restart rwkv-tui:",
        "",
        "```json",
        '{"keymap": {"chat.regenerate": "ctrl+r,f6", "chat.stop": "escape"}}',
        "```",
        "",
        "The theme, the system prompt, the think mode and the sampling defaults are saved in the same file.",
    ]
    return "\n".join(lines)


class HelpScreen(ModalScreen[None]):
    BINDINGS = [
        Binding("escape,f1,q", "dismiss", "Close", id="help.close"),
    ]

    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll {
        width: 100;
        max-width: 95%;
        height: 90%;
        border: thick $primary 70%;
        background: $surface;
        padding: 0 1;
    }
    """

    def __init__(self, keymap: dict[str, str], config_file: str) -> None:
        super().__init__()
        self.keymap = keymap
        self.config_file = config_file

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield Markdown(help_markdown(self.keymap, self.config_file), open_links=False)

    async def action_dismiss(self, result: None = None) -> None:
        self.dismiss(result)
