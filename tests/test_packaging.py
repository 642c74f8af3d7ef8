"""A wheel must carry the data the code looks for at run time, not only the Python modules."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from engine.demo_models import DEMO_MODELS, MODELS_DIR

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel_names(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    out = tmp_path_factory.mktemp("wheel")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(ROOT)],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    (wheel,) = out.glob("rwkv_tui-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        return set(archive.namelist())


def test_wheel_has_kernel_sources_and_themes(wheel_names: set[str]) -> None:
    assert "engine/backends/cpu_native.c" in wheel_names
    for source in (ROOT / "cuda").iterdir():
        assert f"engine/cuda_sources/{source.name}" in wheel_names
    for theme in (ROOT / "themes").iterdir():
        assert f"tui/themes/{theme.name}" in wheel_names


def test_wheel_has_the_demo_models_present_in_the_tree(wheel_names: set[str]) -> None:
    for name in DEMO_MODELS.values():
        if (MODELS_DIR / name).exists():
            stem = name.removesuffix(".pth")
            for suffix in (".pth", ".json", ".md"):
                assert f"engine/models/{stem}{suffix}" in wheel_names


def test_wheel_has_every_python_package(wheel_names: set[str]) -> None:
    for init in ROOT.glob("*/**/__init__.py"):
        relative = init.relative_to(ROOT).as_posix()
        if relative.startswith(("engine/", "tui/")):
            assert relative in wheel_names, f"{relative} missing: add the package to pyproject.toml"


def test_wheel_has_the_model_catalog(wheel_names: set[str]) -> None:
    assert "engine/catalog.json" in wheel_names
