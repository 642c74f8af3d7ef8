"""The merging buffer under both outboxes: wake-ups, merging hooks, and concurrent producers."""

from __future__ import annotations

import threading

from tui.outbox import MergingOutbox


class _Summing(MergingOutbox[int]):
    """Folds a positive number into a waiting positive one; negative numbers are urgent."""

    def merge(self, waiting: list[int], event: int) -> int | None:
        if event > 0 and waiting and waiting[-1] > 0:
            waiting[-1] += event
            return None
        return event

    def urgent(self, event: int) -> bool:
        return event < 0


def test_wakes_once_per_empty_to_waiting_and_again_for_urgent_events() -> None:
    woke: list[int] = []
    box = _Summing(on_ready=lambda: woke.append(len(box)))
    box.put(1)
    box.put(2)  # merged into the waiting 1: no wake-up
    box.put(0)  # appended, but the buffer was not empty
    assert woke == [1]
    box.put(-5)  # urgent: wakes although events are waiting
    assert woke == [1, 3]
    assert box.drain() == [3, 0, -5] and len(box) == 0
    box.put(4)
    assert woke == [1, 3, 1]


def test_concurrent_producers_lose_nothing_while_the_consumer_drains() -> None:
    box: MergingOutbox[int] = MergingOutbox()
    drained: list[int] = []
    done = threading.Event()

    def consume() -> None:
        while not done.is_set():
            drained.extend(box.drain())

    consumer = threading.Thread(target=consume)
    consumer.start()
    producers = [threading.Thread(target=lambda base=base: [box.put(base + i) for i in range(2000)]) for base in
                 (0, 10_000, 20_000, 30_000)]
    for thread in producers:
        thread.start()
    for thread in producers:
        thread.join()
    done.set()
    consumer.join()
    drained.extend(box.drain())
    assert sorted(drained) == sorted(base + i for base in (0, 10_000, 20_000, 30_000) for i in range(2000))
