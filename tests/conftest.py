"""Shared fixtures: tiny random-weight checkpoints and hermetic user directories."""

from __future__ import annotations

from pathlib import Path

import pytest

from tui.openmp_setup import load_engine_with_passive_openmp

load_engine_with_passive_openmp()  # the test process runs the engine as the app does

from engine.synthetic import random_state_dict, save_checkpoint  # noqa: E402


@pytest.fixture(autouse=True)
def _hermetic_user_dirs(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep config and data writes of the code under test out of the real home directory."""
    base = tmp_path_factory.getbasetemp()
    monkeypatch.setenv("XDG_CONFIG_HOME", str(base / "xdg-config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(base / "xdg-data"))
    monkeypatch.setenv("XDG_STATE_HOME", str(base / "xdg-state"))


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer, 128-wide random x070 model over the 256-token bytes vocabulary."""
    path = tmp_path_factory.mktemp("models") / "tiny-bytes.pth"
    return save_checkpoint(random_state_dict(2, 128, 256, seed=7), path)


@pytest.fixture(scope="session")
def tiny_model(tiny_checkpoint: Path):
    from engine import load_model

    return load_model(tiny_checkpoint, device="cpu", dtype="fp32")
