"""One registry of user actions: it feeds key bindings, the user key map, the palette and F1 help.

Keeping a single table means a key shown in the footer, listed on the help screen, offered in the
command palette and remapped in the config file can never disagree: each action has a stable id
(``chat.stop``) that the config file's ``keymap`` section refers to.
"""

from __future__ import annotations

from dataclasses import dataclass

from textual.binding import Binding


@dataclass(frozen=True)
class ActionSpec:
    """A user-facing action.

    ``scope`` names the widget whose BINDINGS carry it ("app", "chat", "music", "message", "prompt"); the
    binding is active while focus is inside that widget (app: everywhere).
    """

    id: str
    keys: str
    action: str
    label: str
    help: str
    scope: str
    show: bool = True
    #: Whether the command palette lists it (palette entries run it whatever has focus).
    palette: bool = True
    priority: bool = False
    #: Title in the command palette (default: the footer label).
    title: str = ""

    @property
    def palette_title(self) -> str:
        return self.title or self.label


ACTIONS: tuple[ActionSpec, ...] = (
    # ---------------------------------------------------------------- app-wide
    ActionSpec("app.help", "f1", "help", "Help", "Show every key binding", "app"),
    ActionSpec(
        "app.chat_pane", "f2", "show_pane('chat')", "Chat", "Switch to the chat pane", "app", show=False,
        title="Go to the chat pane",
    ),
    ActionSpec(
        "app.music_pane", "f3", "show_pane('music')", "Music", "Switch to the music pane", "app", show=False,
        title="Go to the music pane",
    ),
    ActionSpec(
        "app.state_pane", "f4", "show_pane('state')", "State", "Switch to the state inspector pane", "app", show=False,
        title="Go to the state pane",
    ),
    ActionSpec(
        # The footer shows this one at its right edge by itself.
        "app.command_palette", "ctrl+p", "command_palette", "Palette", "Open the command palette", "app",
        show=False, palette=False, priority=True,
    ),
    ActionSpec("app.load_model", "ctrl+o", "load_model", "Load model",
                 "Open the model picker (catalog, downloads, files)", "app"),
    ActionSpec(
        "app.load_music_model", "ctrl+shift+o", "load_music_model", "Load music model",
        "Model picker; a .pth chosen by path loads as music", "app", show=False,
    ),
    ActionSpec("app.theme", "f9", "change_theme", "Theme", "Pick a colour theme (saved for next time)", "app", show=False),
    ActionSpec("app.quit", "ctrl+q", "quit", "Quit", "Quit rwkv-tui", "app", priority=True),
    # ---------------------------------------------------------------- chat pane
    ActionSpec("chat.stop", "escape", "stop", "Stop", "Stop generating (or cancel editing a message)", "chat"),
    ActionSpec("chat.regenerate", "ctrl+r", "regenerate", "Regenerate", "Replace the last reply (no history is re-fed)", "chat"),
    ActionSpec("chat.edit_last", "ctrl+g", "edit_last", "Edit last", "Edit and resend your last message", "chat"),
    ActionSpec("chat.copy_last", "f8", "copy_last", "Copy reply", "Copy the last reply to the clipboard", "chat", show=False),
    ActionSpec("chat.settings", "f5", "toggle_settings", "Settings", "Show or hide the system prompt and sampling panel", "chat"),
    ActionSpec(
        "chat.think", "ctrl+t", "cycle_think", "Think mode", "Cycle the G1 think mode: off → think → skip", "chat",
        show=False,
    ),
    ActionSpec("chat.new", "ctrl+n", "new_conversation", "New chat", "Start a new conversation", "chat", show=False),
    ActionSpec("chat.export", "ctrl+s", "export('markdown')", "Export", "Export the conversation as Markdown", "chat"),
    ActionSpec(
        "chat.export_json", "ctrl+shift+s", "export('json')", "Export JSON", "Export the conversation as JSON",
        "chat", show=False,
    ),
    ActionSpec(
        "chat.save_state", "alt+s", "app.state('save')", "Save state", "Save the live RNN state to a file", "chat",
        show=False,
    ),
    ActionSpec(
        "chat.load_state", "alt+l", "app.state('load')", "Load state",
        "Continue from a state, session or time_state file", "chat", show=False,
    ),
    # ---------------------------------------------------------------- state pane (inspector)
    ActionSpec("state.rewind", "r", "rewind", "Rewind", "Rewind to the selected turn (press twice)", "state"),
    ActionSpec("state.fork", "f", "fork", "Fork", "Fork a new branch that ends with the selected turn", "state"),
    ActionSpec(
        "state.compare", "d", "compare", "Diff",
        "Show the difference between the selected snapshot and the marked one (or the live state)", "state",
    ),
    ActionSpec(
        "state.mark", "m", "mark", "Mark", "Mark the selected snapshot as the other side of a diff", "state",
        show=False,
    ),
    ActionSpec(
        "state.compare_file", "c", "compare_file", "Diff file", "Compare the live state with a state file", "state",
        show=False,
    ),
    ActionSpec("state.live", "v", "show_live", "Live", "Show the live state again (leave the diff)", "state", show=False),
    ActionSpec("state.branch", "b", "next_branch", "Branch", "Switch to the next conversation branch", "state"),
    ActionSpec("state.save", "s", "save", "Save", "Save the live state to a file", "state", show=False),
    ActionSpec("state.load", "l", "load", "Load", "Continue from a state, session or time_state file", "state", show=False),
    ActionSpec(
        "state.import", "i", "import_time_state", "Import", "Import a state-tuning time_state file (.pth)", "state",
        show=False, title="Import time_state (.pth)",
    ),
    ActionSpec(
        "state.export", "x", "export_time_state", "Export", "Export the live state as a time_state .pth file",
        "state", show=False, title="Export time_state (.pth)",
    ),
    ActionSpec(
        "state.resume", "u", "resume", "Resume", "Resume the conversation autosaved for this model", "state",
        show=False, title="Resume the autosaved conversation",
    ),
    # ---------------------------------------------------------------- music pane
    ActionSpec("music.generate", "g", "generate", "Generate", "Generate a piece with the music settings", "music"),
    ActionSpec(
        "music.play_pause", "space", "play_pause", "Play/Pause", "Play or pause the piece (pausing silences it)",
        "music",
    ),
    ActionSpec(
        "music.stop", "s,escape", "stop", "Stop", "Stop writing and playing; the synthesizer is silenced", "music",
    ),
    ActionSpec("music.replay", "r", "replay", "Replay", "Play the piece again from the start", "music"),
    ActionSpec("music.slower", "left_square_bracket", "tempo(-1)", "Slower", "Play slower (tempo step down)", "music",
               show=False),
    ActionSpec("music.faster", "right_square_bracket", "tempo(1)", "Faster", "Play faster (tempo step up)", "music",
               show=False),
    ActionSpec("music.quieter", "comma", "volume(-1)", "Quieter", "Lower the volume (note velocities)", "music",
               show=False),
    ActionSpec("music.louder", "full_stop", "volume(1)", "Louder", "Raise the volume (note velocities)", "music",
               show=False),
    ActionSpec("music.export_mid", "ctrl+s", "export('mid')", "Export .mid", "Save the piece as a .mid file", "music",
               title="Export the piece as MIDI (.mid)"),
    ActionSpec(
        "music.export_text", "ctrl+e", "export('abc')", "Export text",
        "Save the piece's ABC tune (.abc) or MIDI token text (.txt)", "music", show=False,
        title="Export the piece as ABC / token text",
    ),
    ActionSpec(
        "music.export_wav", "ctrl+w", "export('wav')", "Export WAV",
        "Render the piece to .wav with FluidSynth at the loudness target", "music", show=False,
        title="Render the piece to WAV",
    ),
    ActionSpec(
        "music.continue", "c", "pick_continuation", "Continue file", "Pick a .mid file for the next piece to continue",
        "music", show=False, title="Continue a .mid file",
    ),
    ActionSpec("music.ports", "p", "refresh_ports", "Ports", "List the MIDI output ports again", "music", show=False,
               title="List MIDI ports again"),
    # ---------------------------------------------------------------- a focused message
    ActionSpec("message.copy", "y,c", "copy", "Copy", "Copy the focused message to the clipboard", "message", palette=False),
    ActionSpec("message.edit", "e", "edit", "Edit", "Edit and resend the focused user message", "message", palette=False),
    ActionSpec(
        "message.regenerate", "r", "regenerate", "Regenerate", "Regenerate the focused (last) reply",
        "message", palette=False,
    ),
)

#: Keys handled inside the message box itself (fixed, listed on the help screen as shown here).
PROMPT_KEYS: tuple[tuple[str, str], ...] = (
    ("Enter", "Send the message"),
    ("Ctrl+J", "New line (works in every terminal)"),
    ("Alt+Enter / Shift+Enter", "New line (in terminals with the kitty keyboard protocol)"),
    ("↑", "On an empty message box: edit your last message"),
)

ACTION_IDS = frozenset(spec.id for spec in ACTIONS)


def spec(action_id: str) -> ActionSpec:
    for candidate in ACTIONS:
        if candidate.id == action_id:
            return candidate
    raise KeyError(action_id)


def bindings_for(scope: str) -> list[Binding]:
    """Textual bindings of one scope, each carrying its id so the user key map can remap it."""
    return [
        Binding(s.keys, s.action, s.label, show=s.show, priority=s.priority, id=s.id, tooltip=s.help)
        for s in ACTIONS
        if s.scope == scope
    ]


#: The widget of each scope sits inside the one named here; a key of the inner scope shadows
#: the outer scope's while focus is inside it (Textual asks the focused widget first).
_SCOPE_PARENT: dict[str, str] = {"chat": "app", "music": "app", "state": "app", "message": "chat"}
_SCOPE_NAMES: dict[str, str] = {
    "app": "app-wide", "chat": "the chat pane", "music": "the music pane", "state": "the state pane",
    "message": "a focused message",
}


def _keys(text: str) -> list[str]:
    return [key.strip() for key in text.split(",") if key.strip()]


def _resolved_keys(keymap: dict[str, str]) -> dict[str, list[str]]:
    """The keys each action answers to in its own scope once the key map is applied.

    The rules are Textual's (``BindingsMap.apply_keymap``), written out so that help, hints and
    warnings can say what a key does: a key-map entry takes its keys away from the built-in
    bindings of the same scope, and of two key-map entries with the same key in one scope the
    action listed first (F1 help's order) answers it.
    """
    claimed: dict[str, set[str]] = {}
    for s in ACTIONS:
        if s.id in keymap:
            claimed.setdefault(s.scope, set()).update(_keys(keymap[s.id]))
    resolved: dict[str, list[str]] = {}
    taken: dict[str, set[str]] = {}
    for s in ACTIONS:
        if s.id in keymap:
            scope_taken = taken.setdefault(s.scope, set())
            keys = [k for k in _keys(keymap[s.id]) if k not in scope_taken]
            scope_taken.update(keys)
        else:
            keys = [k for k in _keys(s.keys) if k not in claimed.get(s.scope, set())]
        resolved[s.id] = keys
    return resolved


def effective_keys(action_id: str, keymap: dict[str, str]) -> str:
    """The keys an action answers to after the user's key map is applied ("" for none left)."""
    spec(action_id)  # KeyError for an unknown id
    return ",".join(_resolved_keys(keymap)[action_id])


def _encloses(outer: str, inner: str) -> bool:
    scope: str | None = inner
    while scope is not None:
        scope = _SCOPE_PARENT.get(scope)
        if scope == outer:
            return True
    return False


def keymap_clashes(keymap: dict[str, str]) -> list[str]:
    """One line per key that the user's key map gives to two actions at once, naming the winner.

    Which action a shared key runs (the F1 screen and the README say the same):
      - in one scope, a key-map entry beats a built-in key, and of two key-map entries the
        action listed first on the F1 screen wins;
      - a pane's (or a focused message's) key beats an app-wide key while focus is inside it;
      - Quit and the command palette come first everywhere (they are priority bindings).
    """
    lines: list[str] = []
    by_id = {s.id: s for s in ACTIONS}
    configured = {s.id: _keys(keymap.get(s.id, s.keys)) for s in ACTIONS}
    resolved = _resolved_keys(keymap)
    for i, a in enumerate(ACTIONS):
        for b in ACTIONS[i + 1:]:
            if a.id not in keymap and b.id not in keymap:
                continue  # the built-in table is checked by the tests, not reported to users
            if a.scope == b.scope:
                shared = [k for k in configured[a.id] if k in configured[b.id]]
                for key in shared:
                    winner = a.id if key in resolved[a.id] else b.id
                    why = ("the action listed first on the F1 screen wins" if a.id in keymap and b.id in keymap
                           else "a key-map entry beats a built-in key")
                    loser = b.id if winner == a.id else a.id
                    lines.append(f"keymap: {key} is bound to both {winner} and {loser}; {winner} gets it ({why})")
                continue
            if _encloses(a.scope, b.scope):
                outer, inner = a, b
            elif _encloses(b.scope, a.scope):
                outer, inner = b, a
            else:
                continue  # never active together
            for key in (k for k in resolved[outer.id] if k in resolved[inner.id]):
                if by_id[outer.id].priority:
                    lines.append(f"keymap: {key} is bound to both {outer.id} and {inner.id}; {outer.id} gets it "
                                 "(Quit and the command palette always come first)")
                else:
                    lines.append(f"keymap: {key} is bound to both {inner.id} and {outer.id}; {inner.id} gets it "
                                 f"while {_SCOPE_NAMES[inner.scope]} has focus")
    return lines


_KEY_NAMES = {"escape": "Esc", "enter": "Enter", "up": "↑", "down": "↓", "ctrl": "Ctrl", "alt": "Alt",
              "shift": "Shift", "super": "Super", "space": "Space", "tab": "Tab", "delete": "Del",
              "left_square_bracket": "[", "right_square_bracket": "]", "comma": ",", "full_stop": "."}


def format_keys(keys: str) -> str:
    """"ctrl+r,f5" → "Ctrl+R / F5", for the help screen and hints ("—" when no key is left)."""
    if not _keys(keys):
        return "—"
    shown = []
    for key in keys.split(","):
        parts = [p for p in key.strip().split("+") if p]
        words = []
        for i, part in enumerate(parts):
            if part in _KEY_NAMES:
                words.append(_KEY_NAMES[part])
            elif len(part) == 1:
                words.append(part.upper() if i else part)
            else:
                words.append(part.upper() if part[0] == "f" and part[1:].isdigit() else part.capitalize())
        shown.append("+".join(words))
    return " / ".join(shown)
