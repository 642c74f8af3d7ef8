"""The pacer spaces streaming updates so the UI's CPU share stays within its budget."""

from __future__ import annotations

from tui.pacing import DrainPacer


class Clocks:
    def __init__(self) -> None:
        self.wall = 0.0
        self.cpu = 0.0


def pacer(clocks: Clocks, budget: float = 0.05) -> DrainPacer:
    return DrainPacer(budget=budget, min_interval=1 / 30, max_interval=0.5,
                      clock=lambda: clocks.wall, cpu_clock=lambda: clocks.cpu)


def test_cheap_updates_run_at_the_maximum_rate() -> None:
    c = Clocks()
    p = pacer(c)
    p.updated()
    c.wall, c.cpu = 0.034, 0.0005  # half a millisecond per cycle
    assert p.due()
    p.updated()
    assert p.interval == 1 / 30


def test_expensive_updates_are_spaced_to_the_budget() -> None:
    c = Clocks()
    p = pacer(c, budget=0.05)
    p.updated()
    c.wall, c.cpu = 0.05, 0.010  # a 10 ms update cycle
    p.updated()
    assert abs(p.interval - 0.2) < 1e-9  # 10 ms / 5 % = 200 ms
    c.wall = 0.15
    assert not p.due()
    c.wall = 0.25
    assert p.due()


def test_the_interval_never_exceeds_the_slowest_rate() -> None:
    c = Clocks()
    p = pacer(c)
    p.updated()
    c.wall, c.cpu = 1.0, 0.5
    p.updated()
    assert p.interval == 0.5


def test_reset_makes_the_next_update_immediate() -> None:
    c = Clocks()
    p = pacer(c)
    p.updated()
    c.wall, c.cpu = 0.1, 0.05
    p.updated()
    assert not p.due()
    p.reset()
    assert p.due()
