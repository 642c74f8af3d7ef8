"""Build, cache and call the C kernels in ``cpu_native.c``; fall back to torch without a compiler.

The library is compiled once per machine into the user's cache directory, keyed by a hash of
the source, the compiler and the CPU, so an upgrade or a different CPU never reuses a stale
binary. ctypes keeps the build to a second or two: no torch headers are involved.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import torch

from engine.paths import cache_dir

log = logging.getLogger(__name__)

_SOURCE = Path(__file__).with_name("cpu_native.c")
_ABI = 4
_DTYPE_CODES = {torch.float32: 0, torch.bfloat16: 1, torch.float16: 2}
_DISABLE_ENV = "RWKV_TUI_NATIVE"


class TorchKernels:
    """Reference implementations in plain torch: always available, slower."""

    name = "torch"

    def matvec(self, weight: torch.Tensor, x: torch.Tensor, threads: int = 1) -> torch.Tensor:
        """``weight @ x`` for a (rows, cols) weight of any float dtype; fp32 result."""
        if weight.dtype == torch.float32:
            return torch.mv(weight, x)
        return torch.mv(weight, x.to(weight.dtype)).float()

    def sparse_vecmat(self, weight_t: torch.Tensor, h: torch.Tensor, threads: int = 1) -> torch.Tensor:
        """``h @ weight_t`` for a (inner, cols) weight; fp32 result."""
        nonzero = torch.nonzero(h).squeeze(1)
        return h[nonzero] @ weight_t[nonzero].float()

    def wkv7(
        self,
        state: torch.Tensor,
        r: torch.Tensor, w: torch.Tensor, k: torch.Tensor,
        v: torch.Tensor, a: torch.Tensor, b: torch.Tensor,
        threads: int = 1,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the WKV-7 recurrence over T tokens; inputs (T, C) fp32, state (H, N, N).

        Returns (y of shape (T, C), new state); the given state is not modified.
        """
        n_head, head_size, _ = state.shape
        steps = r.shape[0]
        view = (steps, n_head, head_size)
        r, w, k, v, a, b = (t.reshape(view) for t in (r, w, k, v, a, b))
        s = state.clone()
        out = torch.empty(view, dtype=torch.float32)
        for t in range(steps):
            sa = torch.matmul(s, a[t].unsqueeze(-1))
            s = s * w[t].unsqueeze(1) + sa * b[t].unsqueeze(1) + v[t].unsqueeze(-1) * k[t].unsqueeze(1)
            out[t] = torch.matmul(s, r[t].unsqueeze(-1)).squeeze(-1)
        return out.reshape(steps, n_head * head_size), s


class NativeKernels(TorchKernels):
    """The same operations through the compiled C library."""

    name = "native"

    def __init__(self, library: ctypes.CDLL) -> None:
        self._lib = library
        ptr, i64, c_int = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
        library.rwkv_matvec.argtypes = [ptr, c_int, ptr, ptr, ptr, ptr, i64, i64, c_int]
        library.rwkv_matvec.restype = None
        library.rwkv_sparse_vecmat.argtypes = [ptr, c_int, ptr, ptr, i64, i64, ptr, c_int]
        library.rwkv_sparse_vecmat.restype = None
        library.rwkv_wkv7.argtypes = [i64, i64, i64, ptr, ptr] + [ptr] * 7 + [c_int]
        library.rwkv_wkv7.restype = None

    def matvec(self, weight: torch.Tensor, x: torch.Tensor, threads: int = 1) -> torch.Tensor:
        rows, cols = weight.shape
        x = x.contiguous()
        out = torch.empty(rows, dtype=torch.float32)
        if weight.dtype == torch.bfloat16 and cols % 16 == 0:
            even, odd = x[0::2].contiguous(), x[1::2].contiguous()
        else:
            even = odd = x
        self._lib.rwkv_matvec(
            weight.data_ptr(), _DTYPE_CODES[weight.dtype], x.data_ptr(), even.data_ptr(),
            odd.data_ptr(), out.data_ptr(), rows, cols, threads,
        )
        return out

    def sparse_vecmat(self, weight_t: torch.Tensor, h: torch.Tensor, threads: int = 1) -> torch.Tensor:
        inner, cols = weight_t.shape
        h = h.contiguous()
        out = torch.empty(cols, dtype=torch.float32)
        scratch = torch.empty(inner, dtype=torch.int64)
        self._lib.rwkv_sparse_vecmat(
            weight_t.data_ptr(), _DTYPE_CODES[weight_t.dtype], h.data_ptr(), out.data_ptr(),
            inner, cols, scratch.data_ptr(), threads,
        )
        return out

    def wkv7(
        self,
        state: torch.Tensor,
        r: torch.Tensor, w: torch.Tensor, k: torch.Tensor,
        v: torch.Tensor, a: torch.Tensor, b: torch.Tensor,
        threads: int = 1,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        n_head, head_size, _ = state.shape
        steps = r.shape[0]
        tensors = [t.contiguous() for t in (r, w, k, v, a, b)]
        state_in = state.contiguous()
        state_out = torch.empty_like(state_in)
        out = torch.empty(steps, n_head * head_size, dtype=torch.float32)
        self._lib.rwkv_wkv7(
            steps, n_head, head_size, state_in.data_ptr(), state_out.data_ptr(),
            *(t.data_ptr() for t in tensors), out.data_ptr(), threads,
        )
        return out, state_out


_lock = threading.Lock()
_kernels: TorchKernels | None = None
_status = "not loaded"


def get_kernels() -> TorchKernels:
    """The fastest available kernels; builds the native library on first call."""
    global _kernels, _status
    with _lock:
        if _kernels is None:
            _kernels, _status = _load()
            if _kernels.name != "native":
                log.warning("CPU native kernels unavailable (%s); using torch kernels", _status)
        return _kernels


def kernel_status() -> str:
    """One line saying which CPU kernels are in use and why."""
    get_kernels()
    return _status


def _load() -> tuple[TorchKernels, str]:
    if os.environ.get(_DISABLE_ENV, "1") == "0":
        return TorchKernels(), f"disabled by {_DISABLE_ENV}=0"
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if not compiler:
        return TorchKernels(), "no C compiler found (install gcc for faster CPU inference)"
    try:
        library_path = _build(compiler)
        library = ctypes.CDLL(str(library_path))
        if library.rwkv_native_abi() != _ABI:
            return TorchKernels(), f"stale kernel library at {library_path}"
        return NativeKernels(library), f"native kernels ({library_path.name})"
    except (OSError, subprocess.SubprocessError, RuntimeError) as exc:
        return TorchKernels(), f"native kernel build failed: {str(exc).splitlines()[0][:160]}"


def _cpu_identity() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return platform.processor() or platform.machine()
    wanted = [line for line in text.splitlines() if line.startswith(("model name", "flags", "Features"))]
    return "\n".join(sorted(set(wanted)))


def _flag_sets() -> list[list[str]]:
    base = ["-O3", "-std=c11", "-shared", "-fPIC", "-pthread", "-fopenmp-simd"]
    machine = ["-march=native"] if platform.machine() in ("x86_64", "AMD64", "i686") else ["-mcpu=native"]
    return [base + machine, base]


def _build(compiler: str) -> Path:
    source = _SOURCE.read_bytes()
    directory = cache_dir() / "kernels"
    directory.mkdir(parents=True, exist_ok=True)
    last_error = ""
    for flags in _flag_sets():
        key = hashlib.sha256(
            source + repr(flags).encode() + compiler.encode() + _cpu_identity().encode()
        ).hexdigest()[:16]
        target = directory / f"rwkv_cpu_{key}.so"
        if target.exists():
            return target
        with tempfile.TemporaryDirectory(dir=directory) as tmp:
            partial = Path(tmp) / target.name
            result = subprocess.run(
                [compiler, *flags, str(_SOURCE), "-o", str(partial), "-lm"],
                capture_output=True, text=True, timeout=300,
            )
            if result.returncode == 0:
                os.replace(partial, target)
                return target
            last_error = (result.stderr or result.stdout).strip()
    raise RuntimeError(last_error or "compiler failed")
