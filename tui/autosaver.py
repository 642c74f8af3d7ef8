"""Writing autosaves on a thread of their own, newest only.

The engine thread owns the conversation, so it captures it (``engine.session.capture_session``,
cheap) and hands the writing, which serialises megabytes and waits for the disk, to this
thread: a reply that starts right after a turn streams while the previous turn is being saved.

Saves to one file coalesce: while one is being written, a newer request for the same file
replaces any older request still waiting, so however fast turns come, at most one write is in
progress and one waits, and the one that waits is the newest. Every outcome goes to the
``done`` callback (on this thread), which is how failures reach the user.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Callable

#: A save to make: writes the file and returns where it went.
Job = Callable[[], object]
#: Called after each write with the file and the exception that stopped it (None: saved).
Done = Callable[[Path, BaseException | None], None]


class Autosaver:
    """A background writer with one waiting slot per file. Thread-safe; the thread starts on the
    first :meth:`submit` and ends with :meth:`close`."""

    def __init__(self, done: Done, name: str = "rwkv-autosave") -> None:
        self._done = done
        self._name = name
        self._condition = threading.Condition()
        #: Waiting jobs by destination, oldest request first (a newer one takes the older's place).
        self._waiting: dict[Path, Job] = {}
        self._writing = False
        self._closed = False
        self._thread: threading.Thread | None = None

    def submit(self, path: Path, job: Job) -> None:
        """Write ``path`` with ``job`` soon; replaces a request for ``path`` that has not started."""
        with self._condition:
            if self._closed:
                return
            self._waiting[path] = job
            if self._thread is None:
                # A daemon, so that a write stuck on a dead disk cannot keep the app from ending;
                # the exit path waits for it with a timeout instead (flush / close).
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            self._condition.notify_all()

    @property
    def idle(self) -> bool:
        """Nothing waiting and nothing being written."""
        with self._condition:
            return not self._waiting and not self._writing

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every request so far is written (or failed); False if ``timeout`` ran out."""
        with self._condition:
            return self._condition.wait_for(lambda: not self._waiting and not self._writing, timeout)

    def close(self, timeout: float | None = None) -> bool:
        """Write what is waiting, then end the thread; False if that did not finish in time."""
        finished = self.flush(timeout)
        with self._condition:
            self._closed = True
            self._condition.notify_all()
            thread = self._thread
        if thread is not None and finished:
            thread.join(timeout)
        return finished

    def _run(self) -> None:
        while True:
            with self._condition:
                self._condition.wait_for(lambda: self._waiting or self._closed)
                if not self._waiting:
                    return  # closed, and nothing left to write
                path = next(iter(self._waiting))
                job = self._waiting.pop(path)
                self._writing = True
            error: BaseException | None = None
            try:
                job()
            except Exception as exc:  # reported, never fatal: the next save may well work
                error = exc
            try:
                self._done(path, error)
            except Exception:
                pass  # a broken report must not stop later saves
            finally:
                with self._condition:
                    self._writing = False
                    self._condition.notify_all()
