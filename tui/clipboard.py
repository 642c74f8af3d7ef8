"""Copying text to the system clipboard from a terminal app, wherever it runs.

OSC 52 (``App.copy_to_clipboard``) reaches the clipboard of the machine the terminal runs on,
even over SSH, but some terminals ignore it (macOS Terminal, tmux without ``set-clipboard``). So,
like pyperclip, we also hand the text to a native clipboard program when one is installed and a
display is reachable. Both are best effort: neither can report whether it worked.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from typing import Sequence


def native_clipboard_command() -> Sequence[str] | None:
    """The clipboard program for this session, or None."""
    candidates: list[Sequence[str]] = []
    if sys.platform == "darwin":
        candidates.append(("pbcopy",))
    elif sys.platform.startswith("win"):
        candidates.append(("clip",))
    else:
        if os.environ.get("WAYLAND_DISPLAY"):
            candidates.append(("wl-copy",))
        if os.environ.get("DISPLAY"):
            candidates += [("xclip", "-selection", "clipboard"), ("xsel", "--clipboard", "--input")]
    for command in candidates:
        if shutil.which(command[0]):
            return command
    return None


def copy_native(text: str) -> str | None:
    """Pipe ``text`` to the native clipboard program; returns its name, or None if there is none."""
    command = native_clipboard_command()
    if command is None:
        return None
    try:
        subprocess.run(
            list(command), input=text.encode("utf-8"), check=True, timeout=2,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return command[0]
