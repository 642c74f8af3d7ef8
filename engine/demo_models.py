"""The small demo models shipped inside the package, so the app works with no download.

They are trained by ``tools/train`` (see each model card in ``engine/models/``). Official
RWKV-7 weights are loaded with ``--model``; these are here so a fresh install can chat and
make music at once.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from engine.errors import CheckpointError

if TYPE_CHECKING:
    from engine.sampling import SamplingParams

MODELS_DIR = Path(__file__).resolve().parent / "models"

#: kind → file name inside engine/models/. Each has a model card ``<stem>.md`` and a sidecar
#: ``<stem>.json`` naming its tokenizer.
DEMO_MODELS: dict[str, str] = {
    "chat": "rwkv7-demo-chat-bytes.pth",
    "abc": "rwkv7-demo-ABC-folk.pth",
    "midi": "rwkv7-demo-MIDI-folk.pth",
}


def demo_model_path(kind: str) -> Path:
    """Path of a shipped demo model ('chat', 'abc' or 'midi'); a clear error if it is missing."""
    if kind not in DEMO_MODELS:
        raise CheckpointError(f"unknown demo model {kind!r}; choose one of {', '.join(DEMO_MODELS)}")
    path = MODELS_DIR / DEMO_MODELS[kind]
    if not path.is_file():
        raise CheckpointError(
            f"the built-in {kind} demo model is missing ({path}); reinstall rwkv-tui or pass --model"
        )
    return path


def available_demo_models() -> dict[str, Path]:
    """The demo models present in this installation."""
    return {kind: MODELS_DIR / name for kind, name in DEMO_MODELS.items() if (MODELS_DIR / name).is_file()}


def suggested_sampling(model_path: str | Path) -> "SamplingParams | None":
    """The sampling a model's sidecar ``<stem>.json`` recommends, or None without one.

    The chat demo model is byte-level: it must answer greedily and without repetition
    penalties (a penalty on repeated bytes garbles its replies), so a front end should use
    these settings instead of its general chat defaults when it runs a demo model.
    """
    import json

    from engine.sampling import SamplingParams

    sidecar = Path(model_path).with_suffix(".json")
    if not sidecar.is_file():
        return None
    try:
        data = json.loads(sidecar.read_text(encoding="utf-8")).get("sampling")
    except (OSError, ValueError, AttributeError):
        return None
    return SamplingParams.from_dict(data) if isinstance(data, dict) else None
