"""The outbox merges what piles up between two UI frames without losing or reordering anything."""

from __future__ import annotations

import threading

from tui.protocol import ModelLoading, Notice, Outbox, ReplyDelta, Stats


def stats(n: int) -> Stats:
    return Stats(True, float(n), None, n, 0, 0, n)


def test_consecutive_deltas_of_one_reply_merge() -> None:
    box = Outbox()
    for piece in ("He", "llo", ", ", "world"):
        box.put(ReplyDelta(0, piece))
    assert box.drain() == [ReplyDelta(0, "Hello, world")]
    assert box.drain() == []


def test_deltas_do_not_merge_across_other_events_or_replies() -> None:
    box = Outbox()
    box.put(ReplyDelta(0, "a"))
    box.put(Notice("warning", "x"))
    box.put(ReplyDelta(0, "b"))
    box.put(ReplyDelta(1, "c"))
    assert box.drain() == [ReplyDelta(0, "a"), Notice("warning", "x"), ReplyDelta(0, "b"), ReplyDelta(1, "c")]


def test_only_the_newest_stats_and_progress_are_kept() -> None:
    box = Outbox()
    box.put(stats(1))
    box.put(ModelLoading("chat", "m.pth", "reading", 0.1, 10))
    box.put(ReplyDelta(0, "x"))
    box.put(stats(2))
    box.put(ModelLoading("chat", "m.pth", "reading", 0.5, 10))
    assert box.drain() == [ReplyDelta(0, "x"), stats(2), ModelLoading("chat", "m.pth", "reading", 0.5, 10)]


def test_concurrent_producer_loses_no_text() -> None:
    box = Outbox()
    pieces = [f"{i};" for i in range(20_000)]
    received: list[str] = []
    done = threading.Event()

    def produce() -> None:
        for piece in pieces:
            box.put(ReplyDelta(0, piece))
        done.set()

    thread = threading.Thread(target=produce)
    thread.start()
    while not done.is_set():
        received.extend(e.text for e in box.drain())
    thread.join()
    received.extend(e.text for e in box.drain())
    assert "".join(received) == "".join(pieces)


def test_the_ui_is_woken_once_per_batch_not_per_token() -> None:
    wakes: list[int] = []
    box = Outbox(on_ready=lambda: wakes.append(1))
    for piece in ("a", "b", "c"):
        box.put(ReplyDelta(0, piece))
    box.put(stats(1))
    assert len(wakes) == 1
    box.drain()
    box.put(ReplyDelta(0, "d"))
    assert len(wakes) == 2 and len(box) == 1


def test_the_end_of_a_reply_wakes_the_ui_even_behind_other_events() -> None:
    from tui.protocol import ReplyFinished, TurnView

    wakes: list[int] = []
    box = Outbox(on_ready=lambda: wakes.append(1))
    box.put(ReplyDelta(0, "a"))
    box.put(ReplyFinished(TurnView(0, "u", "a", "stop string", 1, 0.0, True, 0)))
    assert len(wakes) == 2
