"""Offer to resume the conversation autosaved for this model when the app last exited."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Static

from tui.safe_text import plain


class ResumePrompt(ModalScreen[bool]):
    """Dismisses with True to resume, False to start fresh (the autosave stays until overwritten)."""

    BINDINGS = [
        Binding("r,enter", "resume", "Resume", id="resume.yes"),
        Binding("n,escape", "fresh", "Start fresh", id="resume.no"),
    ]

    DEFAULT_CSS = """
    ResumePrompt { align: center middle; }
    ResumePrompt > Vertical {
        width: 80;
        max-width: 95%;
        height: auto;
        padding: 1 2;
        border: thick $primary 70%;
        background: $surface;
    }
    ResumePrompt .dialog-title { text-style: bold; margin-bottom: 1; }
    ResumePrompt #resume-note { color: $text-muted; margin-top: 1; }
    ResumePrompt Horizontal { height: auto; margin-top: 1; align-horizontal: right; }
    ResumePrompt Button { margin-left: 1; }
    """

    def __init__(self, model_name: str, description: str) -> None:
        super().__init__()
        self.model_name = model_name
        self.description = description

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(plain(f"Resume your last conversation with {self.model_name}?"), classes="dialog-title")
            yield Static(plain(self.description), id="resume-description")
            yield Static("R or Enter resumes it (state and transcript) · N or Esc starts fresh; "
                         "it stays available (State: Resume, or U in the state pane) until the new conversation's "
                         "first turn is autosaved.",
                         id="resume-note")
            with Horizontal():
                yield Button("Start fresh", id="fresh")
                yield Button("Resume", id="resume", variant="primary")

    def on_mount(self) -> None:
        self.query_one("#resume", Button).focus()

    @on(Button.Pressed, "#resume")
    def action_resume(self) -> None:
        self.dismiss(True)

    @on(Button.Pressed, "#fresh")
    def action_fresh(self) -> None:
        self.dismiss(False)
