"""tui.signal_exit: SIGTERM/SIGHUP end the app through the UI when it can, without it when not.

The signals are raised in this process, with the handler installed and the process's end
replaced by a recorder, so the watchdog's decisions are observed directly.
"""

from __future__ import annotations

import signal
import threading

import pytest

from tui.signal_exit import SignalExit

WAIT = 30.0


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, int | None]] = []
        self.ended = threading.Event()
        self.exit_requested = threading.Event()

    def request_exit(self, status: int) -> None:
        self.calls.append(("request_exit", status))
        self.exit_requested.set()

    def save_without_ui(self) -> None:
        self.calls.append(("save_without_ui", None))

    def end_process(self, status: int) -> None:
        self.calls.append(("end_process", status))
        self.ended.set()


@pytest.fixture
def guard():
    made: list[SignalExit] = []

    def make(recorder: Recorder, grace: float, linger: float = 0.05) -> SignalExit:
        exit_guard = SignalExit(recorder.request_exit, recorder.save_without_ui, save_timeout=WAIT, grace=grace,
                                linger=linger, end_process=recorder.end_process)
        assert exit_guard.install()
        made.append(exit_guard)
        return exit_guard

    yield make
    for exit_guard in made:
        exit_guard.uninstall()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_a_stuck_ui_is_saved_for_and_the_process_ended(guard, signum) -> None:
    """The terminal is gone and the UI's loop is blocked: it never starts its exit."""
    recorder = Recorder()
    exit_guard = guard(recorder, grace=0.05)  # nothing will happen in the UI however long we wait
    resized = threading.Event()
    previous = signal.signal(signal.SIGWINCH, lambda *_: resized.set())  # as Textual handles resizes
    try:
        signal.raise_signal(signal.SIGWINCH)  # on the same pipe, and not an exit
        assert resized.wait(WAIT)
    finally:
        signal.signal(signal.SIGWINCH, previous)
    assert not recorder.calls
    signal.raise_signal(signum)
    assert recorder.ended.wait(WAIT)
    assert recorder.calls == [("request_exit", 128 + signum), ("save_without_ui", None), ("end_process", 128 + signum)]
    assert exit_guard.signum == signum


def test_a_ui_that_exits_makes_the_final_save_itself(guard) -> None:
    recorder = Recorder()
    exit_guard = guard(recorder, grace=WAIT)
    signal.raise_signal(signal.SIGTERM)
    assert recorder.exit_requested.wait(WAIT)
    exit_guard.unmounting()  # what the app's on_unmount reports
    exit_guard.saved()
    # The process would end here on its own; the watchdog only ends one that lingers. A second
    # signal meanwhile changes nothing.
    signal.raise_signal(signal.SIGHUP)
    assert recorder.ended.wait(WAIT)
    assert recorder.calls == [("request_exit", 143), ("end_process", 143)]


def test_installing_off_the_main_thread_leaves_the_signals_alone() -> None:
    recorder = Recorder()
    outcome: list[bool] = []
    exit_guard = SignalExit(recorder.request_exit, recorder.save_without_ui, save_timeout=1.0,
                            end_process=recorder.end_process)
    before = signal.getsignal(signal.SIGTERM)
    thread = threading.Thread(target=lambda: outcome.append(exit_guard.install()))
    thread.start()
    thread.join(WAIT)
    assert outcome == [False] and signal.getsignal(signal.SIGTERM) is before
