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
