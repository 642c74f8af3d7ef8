"""No kernel reads or writes outside the buffers its interface documents.

memcheck_driver.cpp calls every entry point of cuda/rwkv7.h on the CPU emulator with exactly
sized allocations (edge shapes: LoRA ranks not multiples of 8, an FFN width not a multiple of
32, two sequences with a gap between their states) in fp32, fp16 and bf16, and valgrind's
memcheck watches every access. On a GPU such a bug is silent corruption or a crash; there
compute-sanitizer plays this role (benchmarks/run_cuda_checks.sh sanitize).
"""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.engine.cuda_emu.ops import build_emulator


def test_kernels_stay_inside_their_buffers_under_valgrind():
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        pytest.skip("valgrind is not installed")
    try:
        driver = build_emulator(memcheck_driver=True)
    except RuntimeError as exc:
        pytest.skip(f"CUDA emulator unavailable: {exc}")
    result = subprocess.run(
        [valgrind, "--error-exitcode=3", "--quiet", str(driver)], capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stderr[-6000:]
