"""Text that is safe to put on a terminal: control characters made visible, one policy for all.

Model replies, transcripts and headers read from files, file and port names all reach the
terminal, in the app and on the command line. A terminal acts on control characters: ``ESC ] 0 ;
… BEL`` sets its title, ``ESC [ 2 J`` clears it, OSC 52 writes the clipboard, DCS talks to the
terminal itself. So nothing we did not write ourselves may reach it with its controls intact.

The policy, used everywhere (the app's widgets through :mod:`tui.safe_text`, the command line
through :class:`TerminalSafeWriter`):

* newline and tab pass; a CR LF pair is a line break (shown as a newline);
* every other C0 control (U+0000–U+001F) and DEL (U+007F) becomes its Unicode control picture
  (ESC → ``␛``, BEL → ``␇``, a lone CR → ``␍``, DEL → ``␡``): one visible cell, readable, and
  unmistakable for text, so ``␛]0;PWNED␇`` says what the model tried to do;
* the C1 controls (U+0080–U+009F) have no pictures and hardly ever occur in real text (they are
  mostly CP1252 punctuation decoded as Latin-1); each becomes U+FFFD ``�``.

Apart from CR LF, each control becomes exactly one character, so positions in a string (a cursor
in an input field) stay where they were. This module imports neither Textual nor Rich: the
command line uses it without loading a UI toolkit.
"""

from __future__ import annotations

import io
import re
import sys
from contextlib import contextmanager
from typing import Iterator, TextIO

#: Characters a terminal acts on that we pass through: newline and tab.
KEPT_CONTROLS = frozenset("\n\t")

#: What each control character becomes (see the module docstring).
CONTROL_PICTURES: dict[int, str] = {
    **{code: chr(0x2400 + code) for code in range(0x20) if chr(code) not in KEPT_CONTROLS},
    0x7F: "\u2421",
    **{code: "\ufffd" for code in range(0x80, 0xA0)},
}

_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def is_control(char: str) -> bool:
    """Whether a terminal could act on ``char`` (a C0/C1 control or DEL, except newline and tab)."""
    return ord(char) in CONTROL_PICTURES


def has_controls(text: str) -> bool:
    return _CONTROL.search(text) is not None


def visible_controls(text: str) -> str:
    """``text`` with every control character but newline and tab made visible (see above)."""
    if not _CONTROL.search(text):
        return text
    return text.replace("\r\n", "\n").translate(CONTROL_PICTURES)


def visible_controls_same_length(text: str) -> str:
    """Like :func:`visible_controls`, one character for one: for text shown with a cursor in it."""
    return text.translate(CONTROL_PICTURES)


class TerminalSafeWriter(io.TextIOBase):
    """A text stream in front of a terminal that writes everything through :func:`visible_controls`.

    Writes may split a CR LF pair (a streamed reply arrives a few characters at a time), so a
    trailing CR waits for the next write to tell a line break from a lone CR.
    """

    def __init__(self, stream: TextIO) -> None:
        super().__init__()
        self.stream = stream
        self._pending_cr = False

    def write(self, text: str) -> int:
        length = len(text)
        if self._pending_cr:
            text = "\r" + text
            self._pending_cr = False
        if text.endswith("\r"):
            text = text[:-1]
            self._pending_cr = True
        if text:
            self.stream.write(visible_controls(text))
        return length

    def finish(self) -> None:
        """Write a CR still waiting for its line feed (as a lone CR: it got none)."""
        if self._pending_cr:
            self._pending_cr = False
            self.stream.write(visible_controls("\r"))
        self.stream.flush()

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return self.stream.isatty()

    def fileno(self) -> int:
        return self.stream.fileno()

    def writable(self) -> bool:
        return True

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.stream, "encoding", "utf-8")

    @property
    def errors(self) -> str | None:  # type: ignore[override]
        return getattr(self.stream, "errors", None)


def _is_terminal(stream: TextIO | None) -> bool:
    try:
        return stream is not None and stream.isatty()
    except (AttributeError, ValueError, OSError):
        return False


@contextmanager
def terminal_safe_output() -> Iterator[None]:
    """While inside: what goes to a terminal on stdout or stderr has its controls made visible.

    A stream that is not a terminal (a pipe, a file) is left alone, so ``rwkv-tui generate > out``
    keeps the model's exact text: whoever reads a pipe gets what the model wrote and decides.
    """
    replaced: list[tuple[str, TextIO, TerminalSafeWriter]] = []
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if _is_terminal(stream) and not isinstance(stream, TerminalSafeWriter):
            writer = TerminalSafeWriter(stream)
            replaced.append((name, stream, writer))
            setattr(sys, name, writer)
    try:
        yield
    finally:
        for name, stream, writer in reversed(replaced):
            try:
                writer.finish()
            except (OSError, ValueError):
                pass  # the terminal went away (a closed pipe, a hung-up terminal): nothing to show
            if getattr(sys, name) is writer:
                setattr(sys, name, stream)
