"""Build and cache the CUDA extension (cuda/*.cu + the torch binding) on first use.

The extension is compiled with ``torch.utils.cpp_extension.load`` and ninja into the user's
cache directory, under a name that hashes the sources, the flags, the torch/CUDA versions and
the GPU's compute capability, so it is rebuilt exactly when one of those changes and an old
build is never loaded by mistake. Every reason the backend cannot be used (no GPU, a CPU-only
torch, no nvcc, no ninja, a failed build) becomes one :class:`BackendError` line.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import threading
from pathlib import Path
from types import ModuleType

import torch

from engine.errors import BackendError
from engine.paths import cache_dir, cuda_source_dir

log = logging.getLogger(__name__)

#: Compiled sources, in link order; headers are hashed too.
SOURCES = ("wkv7.cu", "tmix.cu", "gemv.cu", "decode.cu", "rwkv7_binding.cpp")
HEADERS = ("rwkv7.h", "rwkv7_device.cuh", "rwkv7_internal.cuh")
#: No fast-math: the fp32 mode must track the CPU backend to rounding, and the kernels are
#: bound by memory, not by the cost of accurate exp/tanh.
CUDA_FLAGS = ("-O3", "-Xptxas", "-O3", "--extra-device-vectorization", "-lineinfo")
CXX_FLAGS = ("-O3",)

_lock = threading.Lock()
_module: ModuleType | None = None


def gpu_problem() -> str | None:
    """Why torch cannot run CUDA code here, or None if it can."""
    if torch.version.cuda is None:
        return f"this PyTorch build ({torch.__version__}) has no CUDA support"
    if not torch.cuda.is_available():
        return "no CUDA GPU is visible to PyTorch"
    return None


def cuda_home() -> Path | None:
    """A CUDA toolkit root that really has nvcc and the runtime headers.

    torch guesses the root from where ``nvcc`` is on PATH, which is wrong when that is a
    wrapper script (e.g. /usr/local/bin/nvcc exec'ing the real one); the build would then miss
    cuda_runtime.h. Explicit settings come first.
    """
    from torch.utils import cpp_extension

    candidates: list[str | Path | None] = [
        os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), cpp_extension.CUDA_HOME,
    ]
    nvcc = shutil.which("nvcc")
    if nvcc:
        candidates.append(Path(nvcc).resolve().parent.parent)
    candidates.append("/usr/local/cuda")
    for candidate in candidates:
        if candidate and (Path(candidate) / "bin" / "nvcc").exists() and (
            Path(candidate) / "include" / "cuda_runtime.h"
        ).exists():
            return Path(candidate)
    return None


def toolkit_problem() -> str | None:
    """Why the extension cannot be compiled here, or None if it can."""
    from torch.utils import cpp_extension

    if cuda_home() is None:
        return "the CUDA toolkit (nvcc and its headers) was not found; install it or set CUDA_HOME"
    if not cpp_extension.is_ninja_available():
        return "ninja is not installed (pip install ninja)"
    if shutil.which(os.environ.get("CXX", "c++")) is None:
        return "no C++ compiler found (install g++)"
    return None


def source_paths() -> list[Path]:
    directory = cuda_source_dir()
    return [directory / name for name in SOURCES]


def build_key(capability: tuple[int, int] | None = None) -> str:
    """Hash of everything the binary depends on."""
    directory = cuda_source_dir()
    digest = hashlib.sha256()
    for name in (*SOURCES, *HEADERS):
        path = directory / name
        digest.update(name.encode() + b"\0")
        digest.update(path.read_bytes() if path.exists() else b"<missing>")
    digest.update(repr((CUDA_FLAGS, CXX_FLAGS, torch.__version__, torch.version.cuda, capability,
                        os.environ.get("TORCH_CUDA_ARCH_LIST"))).encode())
    return digest.hexdigest()[:16]


def load_extension(device: torch.device | None = None) -> ModuleType:
    """The compiled extension module; builds it on first use (a minute or two), then cached."""
    global _module
    with _lock:
        if _module is not None:
            return _module
        problem = gpu_problem() or toolkit_problem()
        if problem:
            raise BackendError(problem)
        missing = [p.name for p in source_paths() if not p.exists()]
        if missing:
            raise BackendError(f"CUDA kernel sources missing from {cuda_source_dir()}: {', '.join(missing)}")
        capability = torch.cuda.get_device_capability(device)
        name = f"rwkv7_cuda_{build_key(capability)}"
        build_dir = cache_dir() / "cuda" / name
        build_dir.mkdir(parents=True, exist_ok=True)
        log.info("loading CUDA kernels %s (compiled on first use into %s)", name, build_dir)
        from torch.utils import cpp_extension

        home = cuda_home()
        if home is not None and cpp_extension.CUDA_HOME != str(home):
            cpp_extension.CUDA_HOME = str(home)  # torch builds with this module-level root

        try:
            _module = cpp_extension.load(
                name=name,
                sources=[str(p) for p in source_paths()],
                extra_include_paths=[str(cuda_source_dir())],
                extra_cflags=list(CXX_FLAGS),
                extra_cuda_cflags=list(CUDA_FLAGS),
                build_directory=str(build_dir),
                verbose=os.environ.get("RWKV_TUI_CUDA_VERBOSE_BUILD") == "1",
            )
        except Exception as exc:  # compiler and loader failures come in many types
            log_path = build_dir / "build-error.log"
            text = str(exc)
            try:
                log_path.write_text(text)
            except OSError:
                pass
            raise BackendError(f"CUDA kernel build failed ({_summary(text)}); full log: {log_path}") from None
        return _module


def _summary(text: str) -> str:
    """The first compiler error line of a build log, else its first line."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in lines:
        if "error" in line.lower() and not line.lower().startswith("error building extension"):
            return line[:200]
    return (lines[0] if lines else "unknown error")[:200]
