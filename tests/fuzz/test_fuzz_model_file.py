"""Damaged quantized model files: load_model succeeds or raises one of our one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hypothesis import given

from engine import load_model
from engine.errors import EngineError
from engine.model_file import quantize_checkpoint
from engine.synthetic import random_state_dict, save_checkpoint
from tests.fuzz.conftest import FUZZ
from tests.fuzz.mutations import digest, mutated, no_hang


@pytest.fixture(scope="module")
def seed_file(tmp_path_factory) -> bytes:
    folder = tmp_path_factory.mktemp("fuzz_model_file")
    source = save_checkpoint(random_state_dict(1, 64, 64, dtype=torch.bfloat16, seed=3), folder / "m.pth")
    return quantize_checkpoint(source, "q4").read_bytes()


def _load(path: Path) -> None:
    model = load_model(path, device="cpu")
    logits, _ = model.forward([1, 2])
    model.forward([3], _)


def test_damaged_quantized_model_files_fail_in_one_line(seed_file, tmp_path_factory) -> None:
    folder = tmp_path_factory.mktemp("fuzz_cases")

    @FUZZ
    @given(data=mutated(seed_file))
    def check(data: bytes) -> None:
        path = folder / "model.safetensors"
        path.write_bytes(data)
        before = digest(path)
        try:
            no_hang(_load, path)
        except EngineError as error:
            assert "\n" not in str(error)
        assert digest(path) == before

    check()


def test_damaged_gguf_files_fail_in_one_line(tmp_path_factory) -> None:
    pytest.importorskip("gguf")
    from engine.gguf_loader import write_gguf

    folder = tmp_path_factory.mktemp("fuzz_gguf")
    seed = write_gguf(random_state_dict(1, 64, 64, dtype=torch.bfloat16, seed=5), folder / "seed.gguf", "Q4_0").read_bytes()

    @FUZZ
    @given(data=mutated(seed))
    def check(data: bytes) -> None:
        path = folder / "model.gguf"
        path.write_bytes(data)
        before = digest(path)
        try:
            no_hang(_load, path)
        except EngineError as error:
            assert "\n" not in str(error)
        assert digest(path) == before

    check()
