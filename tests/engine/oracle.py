"""The `rwkv` pip package (0.8.32) as an independent reference implementation, CPU fp32."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def load_oracle(checkpoint: Path) -> Any:
    """An ``rwkv.model.RWKV`` for ``checkpoint`` with strategy 'cpu fp32'.

    The package reads its switches from the environment at import time, so they are set first.
    """
    os.environ["RWKV_V7_ON"] = "1"
    os.environ["RWKV_CUDA_ON"] = "0"
    os.environ.setdefault("RWKV_JIT_ON", "1")
    from rwkv.model import RWKV

    return RWKV(model=str(checkpoint)[: -len(".pth")], strategy="cpu fp32")
