"""How often the UI takes in a streaming reply: as often as a CPU budget allows.

Every screen update while a reply streams (Markdown re-parse of the last block, layout, render)
costs the UI thread CPU time, and in one Python process that time is taken from the engine
thread (one GIL, and often too few free cores). A fixed update rate is either wasteful on a slow
machine or needlessly choppy on a fast one, so the pacer measures what an update cycle actually
cost the UI thread (its own CPU clock, rendering included) and spaces updates so the UI stays
within ``budget`` of one core: cost / interval ≈ budget, clamped between 30 Hz and 2 Hz.
"""

from __future__ import annotations

import time
from typing import Callable

#: Share of one core the UI may use while a reply streams.
DEFAULT_BUDGET = 0.03
MIN_INTERVAL = 1 / 30
MAX_INTERVAL = 0.5


class DrainPacer:
    def __init__(
        self,
        budget: float = DEFAULT_BUDGET,
        min_interval: float = MIN_INTERVAL,
        max_interval: float = MAX_INTERVAL,
        clock: Callable[[], float] = time.perf_counter,
        cpu_clock: Callable[[], float] = time.thread_time,
    ) -> None:
        self.budget = budget
        self.min_interval = min_interval
        self.max_interval = max_interval
        self.clock = clock
        self.cpu_clock = cpu_clock
        self.interval = min_interval
        self._last_wall: float | None = None
        self._last_cpu = 0.0

    def due(self) -> bool:
        """Whether enough time has passed since the last update (call from the UI thread)."""
        return self.wait() == 0.0

    def wait(self) -> float:
        """Seconds until the next update may happen (0 when it may happen now)."""
        if self._last_wall is None:
            return 0.0
        return max(0.0, self._last_wall + self.interval - self.clock())

    def updated(self) -> None:
        """Record an update now; the CPU spent since the previous one sets the next interval."""
        wall, cpu = self.clock(), self.cpu_clock()
        if self._last_wall is not None:
            cycle_cost = max(cpu - self._last_cpu, 0.0)
            self.interval = min(max(cycle_cost / self.budget, self.min_interval), self.max_interval)
        self._last_wall, self._last_cpu = wall, cpu

    def reset(self) -> None:
        """Forget the last update (a new reply starts with an immediate update)."""
        self._last_wall = None
