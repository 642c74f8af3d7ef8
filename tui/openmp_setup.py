"""Passive OpenMP waiting for the rwkv-tui process only, set before torch loads.

torch's OpenMP threads, once used off the main thread (as in any app that runs the model on a
worker), spin between parallel regions and take the cores from our decoding thread: the 0.1B
shape on two busy cores decoded at 5.5 tok/s with spinning and 11.3 with passive waiting.
libgomp reads ``OMP_WAIT_POLICY`` once, when torch loads it, so the variable need only exist
for that moment. It is put back at once: ``import engine`` in someone else's program, the
programs we start (FluidSynth, abc2midi, a benchmark's peers) and libraries loaded later all
see the environment the user had.
"""

from __future__ import annotations

import os
import sys

POLICY_VARIABLE = "OMP_WAIT_POLICY"


def load_engine_with_passive_openmp() -> bool:
    """Import the engine (and with it torch) with passive OpenMP waiting, leaving
    ``os.environ`` as it was.

    Returns whether the policy was applied: not when torch is already loaded (its runtime has
    read the environment) and not when the user chose a policy of their own, which wins.
    """
    if "torch" in sys.modules or POLICY_VARIABLE in os.environ:
        return False
    os.environ[POLICY_VARIABLE] = "PASSIVE"
    try:
        import engine  # noqa: F401  (loads torch and its libgomp, which reads the policy now)
    finally:
        os.environ.pop(POLICY_VARIABLE, None)
    return True
