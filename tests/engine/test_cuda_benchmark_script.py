"""benchmarks/bench_cuda.py runs only on a GPU; its reporting is checked here so a long GPU
run cannot fail at the very end, and its bound uses the right bytes."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_cuda.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_cuda", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    before = dict(os.environ)
    spec.loader.exec_module(module)
    assert dict(os.environ) == before, "importing the benchmark must not change the environment"
    return module


def test_table_has_ratios_bound_share_and_errors(bench):
    info = {"device": "NVIDIA H100 80GB HBM3", "driver": "580.159.04", "cuda": "13.0", "torch": "2.11.0",
            "sms": "132", "memory_gib": "79"}
    rows = [
        {"size": "0.1b", "dtype": "fp16", "bound_tok_s": 11000.0, "ours_decode": 2750.0, "pip_decode": 1100.0,
         "ours_prefill": 90000.0, "pip_prefill": 30000.0, "max_diff_vs_pip": 0.004},
        {"size": "7.2b", "dtype": "fp16", "bound_tok_s": 216.0, "ours_decode": 190.0,
         "pip_error": "CUDA out of memory"},
    ]
    table = bench.markdown(rows, info, 3.0e12)
    assert "NVIDIA H100 80GB HBM3" in table and "580.159.04" in table and "3.00 TB/s" in table
    assert "| 0.1b | 2,750 | 1,100 | 2.50× | 11,000 | 25% | 90,000 | 30,000 | 3.00× | 4.0e-03 |" in table
    assert "| 7.2b | 190 | — | —× | 216 | 88% |" in table
    assert "7.2b: pip_error: CUDA out of memory" in table


def test_bound_counts_every_weight_but_the_embedding(bench):
    import torch

    state_dict = {"emb.weight": torch.zeros(100, 8), "head.weight": torch.zeros(100, 8),
                  "blocks.0.att.key.weight": torch.zeros(8, 8)}
    assert bench.fp16_weight_bytes(state_dict) == 2 * (800 + 64)
