"""Shared settings for the fuzz suite: bounded, seeded, and quick enough for every CI run.

Every fuzz test states one invariant: a reader given damaged bytes either succeeds or raises
one of our own one-line exceptions; it never raises anything else, never hangs and never
changes a file it was only asked to read. ``RWKV_TUI_FUZZ_EXAMPLES`` raises the example count
for a longer local run.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "rwkv-tui-fuzz",
    derandomize=True,  # the same examples on every run: a CI failure reproduces locally
    max_examples=int(os.environ.get("RWKV_TUI_FUZZ_EXAMPLES", "60")),
    deadline=None,  # hangs are caught by mutations.no_hang (a generous safety net), not by a clock
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                           HealthCheck.data_too_large],
    database=None,
)
FUZZ = settings.get_profile("rwkv-tui-fuzz")
