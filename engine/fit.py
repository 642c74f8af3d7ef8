"""Would a catalog model fit this machine, in the dtype the app would run it in?

The app runs on CUDA when a usable GPU is there and on the CPU otherwise, with fp16 weights on
the GPU and bf16 on the CPU unless ``--dtype`` says otherwise (the rule of
``engine.model._choose_backend``). So the budget is VRAM or RAM, and the weights are counted
in that dtype: the file's bytes per weight tell how many weights it holds.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

from engine.catalog import DTYPE_BYTES, CatalogEntry

#: Headroom on top of the weights: the state, activations, the tokenizer, the runtime itself.
OVERHEAD = 1.10

Verdict = Literal["fits", "tight", "too big", "unknown"]


@dataclass(frozen=True)
class MemoryBudget:
    """The memory a model would be loaded into."""

    #: "RAM" or "VRAM".
    kind: str
    device: str
    dtype: str
    total: int
    #: Free now (MemAvailable, or the GPU's free memory); 0 when unknown.
    available: int
    #: The GPU's name for VRAM, "" for RAM.
    name: str = ""


def weights_bytes(entry: CatalogEntry, dtype: str) -> int:
    """Memory the weights take once loaded in ``dtype`` (fp32, bf16 or fp16)."""
    return entry.weight_count() * DTYPE_BYTES[dtype]


def needed_bytes(entry: CatalogEntry, dtype: str) -> int:
    return int(weights_bytes(entry, dtype) * OVERHEAD)


def verdict(entry: CatalogEntry, budget: MemoryBudget) -> Verdict:
    """"fits" in what is free now, "tight" (only in the total: close other programs first), or "too big"."""
    if budget.total <= 0:
        return "unknown"
    need = needed_bytes(entry, budget.dtype)
    if need > budget.total:
        return "too big"
    if budget.available and need > budget.available:
        return "tight"
    return "fits"


def memory_budget(device: str = "auto", dtype: str | None = None) -> MemoryBudget:
    """The memory and dtype a load with these ``--device``/``--dtype`` choices would use."""
    from engine.model import parse_dtype, short_dtype_name

    parsed = parse_dtype(dtype)
    explicit = short_dtype_name(parsed) if parsed is not None else None
    wanted = str(device).lower().strip()
    if wanted.startswith("cuda") or (wanted == "auto" and _cuda_usable()):
        vram = _vram(wanted)
        if vram is not None:
            total, free, name = vram
            return MemoryBudget("VRAM", "cuda", explicit or "fp16", total, free, name)
    total, available = _ram()
    return MemoryBudget("RAM", "cpu", explicit or "bf16", total, available)


def _cuda_usable() -> bool:
    from engine.backends.cuda_build import gpu_problem

    return gpu_problem() is None


def _vram(device: str) -> tuple[int, int, str] | None:
    import torch

    if not torch.cuda.is_available():
        return None
    index = int(device.split(":", 1)[1]) if ":" in device else 0
    try:
        free, total = torch.cuda.mem_get_info(index)
        return int(total), int(free), torch.cuda.get_device_name(index)
    except (RuntimeError, AssertionError, ValueError):
        return None


def _ram() -> tuple[int, int]:
    """Total physical memory and what the kernel says is available without swapping."""
    try:
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        total = 0
    available = 0
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError, IndexError):
        try:
            available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            available = 0
    return total, available
