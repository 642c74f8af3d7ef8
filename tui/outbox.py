"""The buffer between a producing thread (engine, music) and the UI that drains it.

A producer may emit an event per token, far faster than a screen can usefully change, and it
must never block on the UI. So events go into a locked list the UI takes whole when it is ready,
and each kind of outbox folds what piles up in between (text deltas joined, stale progress
dropped), which keeps the UI's work per frame independent of the producer's speed.
"""

from __future__ import annotations

import threading
from typing import Callable, Generic, TypeVar

E = TypeVar("E")


class MergingOutbox(Generic[E]):
    """Thread-safe event buffer with merging, drained by the UI.

    ``on_ready`` (optional) is called, from the producing thread, whenever the buffer goes from
    empty to non-empty: the UI uses it to post itself one wake-up message, so it neither polls
    nor hears from the producer more than once per drain, however fast events come. Events that
    end something the user waits for (``urgent``) call it again even if the buffer was not
    empty, so the UI shows them at once instead of at its next paced update.

    Subclasses define ``merge`` and ``urgent``; both run under the lock.
    """

    def __init__(self, on_ready: Callable[[], None] | None = None) -> None:
        self._lock = threading.Lock()
        self._events: list[E] = []
        self.on_ready = on_ready

    def merge(self, waiting: list[E], event: E) -> E | None:
        """Fold ``event`` into ``waiting`` (which may be edited): the event to append, or None."""
        return event

    def urgent(self, event: E) -> bool:
        """Whether the UI should hear about ``event`` now, even if events are already waiting."""
        return False

    def put(self, event: E) -> None:
        with self._lock:
            was_empty = not self._events
            appended = self.merge(self._events, event)
            if appended is None:
                return
            self._events.append(appended)
        if self.on_ready is not None and (was_empty or self.urgent(appended)):
            self.on_ready()

    def drain(self) -> list[E]:
        with self._lock:
            events, self._events = self._events, []
        return events

    def __len__(self) -> int:
        with self._lock:
            return len(self._events)
