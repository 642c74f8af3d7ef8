"""How many threads the CPU kernels use: what ``--threads`` says, else the cores this process
may really run on.

``os.cpu_count()`` and torch's default count every core of the machine; in a container or
under ``taskset`` fewer are ours. A thread more than the cores we get waits for a time slice
at every barrier of a decode step, so the default follows the CPU affinity mask and the
cgroup's CPU quota (v2 ``cpu.max``, v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``), whichever
is smaller.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

THREADS_ENV = "RWKV_TUI_THREADS"
_CGROUP_ROOT = Path("/sys/fs/cgroup")
_chosen: int | None = None


def set_cpu_threads(count: int | None) -> None:
    """Use ``count`` threads for models loaded from now on (None: back to the default)."""
    global _chosen
    if count is not None and count < 1:
        from engine.errors import EngineError

        raise EngineError(f"--threads must be at least 1, got {count}")
    _chosen = count


def cpu_threads() -> int:
    """``set_cpu_threads``'s count, else RWKV_TUI_THREADS, else :func:`available_cpus`."""
    if _chosen is not None:
        return _chosen
    value = os.environ.get(THREADS_ENV, "").strip()
    if value.isdigit() and int(value) > 0:
        return int(value)
    return available_cpus()


def available_cpus(cgroup_root: Path = _CGROUP_ROOT) -> int:
    """Cores this process can use: its affinity mask, capped by its cgroup's CPU quota."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    quota = _cgroup_quota(cgroup_root)
    if quota is not None:
        cores = min(cores, max(1, math.ceil(quota)))
    return max(1, cores)


def _cgroup_quota(root: Path) -> float | None:
    """CPUs' worth of time the cgroup may use per period, or None when unlimited or unknown."""
    for relative in _own_cgroups():
        v2 = root / relative.lstrip("/") / "cpu.max"
        text = _read(v2) or (_read(root / "cpu.max") if relative == "/" else None)
        if text:
            limit, _, period = text.partition(" ")
            if limit != "max" and limit.isdigit() and period.strip().isdigit() and int(period) > 0:
                return int(limit) / int(period)
            return None
    quota = _read(root / "cpu" / "cpu.cfs_quota_us") or _read(root / "cpu,cpuacct" / "cpu.cfs_quota_us")
    period = _read(root / "cpu" / "cpu.cfs_period_us") or _read(root / "cpu,cpuacct" / "cpu.cfs_period_us")
    if quota and period and quota.lstrip("-").isdigit() and period.isdigit() and int(quota) > 0 and int(period) > 0:
        return int(quota) / int(period)
    return None


def _own_cgroups() -> list[str]:
    """This process's cgroup v2 path(s) from /proc/self/cgroup ("0::/path"), root last."""
    text = _read(Path("/proc/self/cgroup")) or ""
    paths = [line.split("::", 1)[1] for line in text.splitlines() if line.startswith("0::")]
    return [*paths, "/"] if "/" not in paths else paths


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None
