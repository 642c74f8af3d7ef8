"""Where the engine keeps files of its own (compiled kernels), following the XDG conventions.

``RWKV_TUI_CACHE_DIR`` overrides the location, which tests use to stay hermetic.
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

APP_NAME = "rwkv-tui"


def cache_dir() -> Path:
    """Directory for rebuildable artefacts such as compiled kernels."""
    override = os.environ.get("RWKV_TUI_CACHE_DIR")
    return Path(override) if override else Path(platformdirs.user_cache_dir(APP_NAME))


def bundled_dir(repo_dir: str, installed_package: str) -> Path:
    """A data folder that lives at the repository root (``cuda/``, ``themes/``).

    In a source checkout or editable install it is found beside the packages; a wheel installs
    it as ``installed_package`` (see pyproject's package-dir mapping).
    """
    beside = Path(__file__).resolve().parent.parent / repo_dir
    if beside.is_dir():
        return beside
    # Resolve through the parent package: the data folder has no __init__.py (``cuda`` must not
    # shadow NVIDIA's ``cuda`` namespace), and importlib.resources gives namespace packages a
    # MultiplexedPath rather than a directory.
    import importlib.util

    parent, _, child = installed_package.rpartition(".")
    spec = importlib.util.find_spec(parent)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(f"cannot locate package {parent} for {installed_package}")
    return Path(spec.origin).resolve().parent / child


def cuda_source_dir() -> Path:
    """Where the CUDA kernel sources are."""
    return bundled_dir("cuda", "engine.cuda_sources")
