"""Ending the app on SIGTERM and SIGHUP: as Ctrl+Q does when the UI can, without the UI when not.

A service manager or ``kill`` sends SIGTERM; a closed terminal (a closed window, a dropped SSH
connection) sends SIGHUP. Either should end the app like Ctrl+Q: the conversation saved, the
terminal restored. The graceful path runs through the UI's event loop (``App.exit``), but when
the terminal is gone the UI may never get there: Textual's output thread dies on the dead
terminal, and the next frame blocks the event loop for good. So a watchdog thread, woken by the
signal, asks the UI to exit and, if the UI has not started to within ``grace`` seconds, makes the
final save itself (the engine and saver threads do not need the UI) and ends the process. It also
ends the process if it is still there ``linger`` seconds after the final save.

The watchdog learns of the signal through ``signal.set_wakeup_fd``: the interpreter's C-level
handler writes the signal's number to a pipe the moment it arrives, whichever thread the kernel
picked. A Python-level handler alone would not do: it runs only when the main thread runs Python
code, and the main thread of a stuck UI waits on a lock that another thread's signal never wakes.
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Callable

#: Signals that end the app: a service manager or ``kill`` stopping it, and its terminal closing.
TERMINATING_SIGNALS = (signal.SIGTERM, signal.SIGHUP)
#: Seconds the UI gets to start its exit once asked.
GRACE = 5.0
#: Seconds the process gets to end on its own after the final save.
LINGER = 5.0


class SignalExit:
    """Install in the main thread (:meth:`install`); the UI reports :meth:`unmounting` when its
    exit begins and :meth:`saved` when its final save is done."""

    def __init__(
        self,
        request_exit: Callable[[int], None],
        save_without_ui: Callable[[], None],
        *,
        save_timeout: float,
        grace: float = GRACE,
        linger: float = LINGER,
        end_process: Callable[[int], None] = os._exit,
    ) -> None:
        """``request_exit(status)`` asks the UI to exit (called on the watchdog thread, so it must
        be thread-safe); ``save_without_ui()`` makes the final save when the UI cannot;
        ``save_timeout`` bounds the UI's own final save once it has started."""
        self._request_exit = request_exit
        self._save_without_ui = save_without_ui
        self._save_timeout = save_timeout
        self._grace = grace
        self._linger = linger
        self._end_process = end_process
        self._signum: int | None = None
        self._unmounting = threading.Event()
        self._saved = threading.Event()
        self._previous: dict[int, object] = {}
        self._previous_wakeup_fd: int | None = None
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_write, False)  # set_wakeup_fd needs it so
        self._watchdog = threading.Thread(target=self._watch, name="rwkv-signal-exit", daemon=True)

    @property
    def signum(self) -> int | None:
        """The signal that ended the app, if one did."""
        return self._signum

    def install(self) -> bool:
        """Take over the signals (main thread only); False where that is not possible."""
        try:
            for signum in TERMINATING_SIGNALS:
                self._previous[signum] = signal.signal(signum, self._on_signal)
            self._previous_wakeup_fd = signal.set_wakeup_fd(self._wake_write, warn_on_full_buffer=False)
        except (ValueError, OSError):  # not the main thread, or no such signal here
            self.uninstall()
            return False
        self._watchdog.start()
        return True

    def uninstall(self) -> None:
        """Give the signals back (tests; the app simply ends)."""
        if self._previous_wakeup_fd is not None:
            try:
                signal.set_wakeup_fd(self._previous_wakeup_fd)
            except (ValueError, OSError):
                pass
            self._previous_wakeup_fd = None
        for signum, previous in self._previous.items():
            try:
                signal.signal(signum, previous)  # type: ignore[arg-type]
            except (ValueError, OSError, TypeError):
                pass
        self._previous.clear()

    def unmounting(self) -> None:
        self._unmounting.set()

    def saved(self) -> None:
        self._saved.set()

    def _on_signal(self, signum: int, frame: object) -> None:
        """Replaces the default action (ending the process at once); the watchdog does the rest."""

    def _watch(self) -> None:
        signum = self._next_terminating_signal()
        if signum is None:
            return
        self._signum = signum
        status = 128 + signum  # as shells report a process ended by a signal
        try:
            self._request_exit(status)
        except Exception:
            pass  # the UI's loop is gone: the fallback below saves
        try:
            if self._unmounting.wait(self._grace):
                self._saved.wait(self._save_timeout)
            else:
                self._save_without_ui()
        except Exception:
            pass  # nothing more can be saved; the process must still end
        # Saved. A process with a live terminal ends well within this; one whose terminal is gone
        # may never manage to (its output thread is dead), and must not linger spinning.
        threading.Event().wait(self._linger)
        self._end_process(status)

    def _next_terminating_signal(self) -> int | None:
        """Block until SIGTERM or SIGHUP arrives. The wakeup pipe carries every signal with a
        Python-level handler (Textual's SIGWINCH, SIGTSTP…): those are skipped. A second
        terminating signal is never read: the first one's exit is under way."""
        while True:
            try:
                data = os.read(self._wake_read, 64)
            except InterruptedError:
                continue
            except OSError:
                return None
            if not data:
                return None
            for number in data:
                if number in TERMINATING_SIGNALS:
                    return number
