"""Choosing the device: 'auto' degrades to the CPU with one line saying why; 'cuda' fails loudly.

The GPU-less situations (no GPU, no nvcc, a failed kernel build) are simulated by patching
what the engine asks torch and the build, so the same checks run on CPU and GPU machines.
"""

from __future__ import annotations

import logging

import pytest
import torch
import torch.utils.cpp_extension

import engine.backends.cuda_build as cuda_build
import engine.model as model_module
from engine import BackendError, build_model
from engine.synthetic import random_state_dict


@pytest.fixture
def tiny_dict():
    return random_state_dict(1, 64, 32, seed=1)


@pytest.fixture(autouse=True)
def _fresh(monkeypatch, tmp_path):
    """Hermetic kernel cache, no extension already loaded, and fallback warnings not yet given."""
    monkeypatch.setenv("RWKV_TUI_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(cuda_build, "_module", None)
    monkeypatch.setattr(model_module, "_logged", set())


def _pretend_gpu(monkeypatch) -> None:
    """A visible GPU as far as the engine asks (the build fails before touching it)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(cuda_build, "gpu_problem", lambda: None)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))


def _check_one_line_note(model, caplog, *fragments: str, level: int = logging.WARNING) -> None:
    """The note is one line, and logged exactly once at ``level`` (INFO when there is simply no
    GPU, which is normal; WARNING when a GPU is there but cannot be used)."""
    note = model.info.device_note
    assert model.info.device == "cpu"
    assert "\n" not in note and note.endswith("running on the CPU")
    for fragment in fragments:
        assert fragment in note
    records = [r for r in caplog.records if r.name == "engine.model"]
    assert [(r.levelno, r.getMessage()) for r in records] == [(level, note)]


def test_auto_without_a_gpu_runs_on_the_cpu_and_says_why(monkeypatch, caplog, tiny_dict):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with caplog.at_level(logging.INFO):
        model = build_model(tiny_dict, device="auto")
        again = build_model(tiny_dict, device="auto")
    _check_one_line_note(model, caplog, "CUDA backend unavailable", level=logging.INFO)
    assert again.info.device_note == model.info.device_note  # shown every time, logged once
    logits, _ = model.forward([1, 2])
    assert logits.shape == (32,)


def test_explicit_cuda_without_a_gpu_is_a_one_line_backend_error(monkeypatch, tiny_dict):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(BackendError) as info:
        build_model(tiny_dict, device="cuda")
    message = str(info.value)
    assert message.startswith("CUDA backend unavailable:") and "\n" not in message


def test_auto_with_a_gpu_but_no_toolkit_falls_back(monkeypatch, caplog, tiny_dict):
    _pretend_gpu(monkeypatch)
    monkeypatch.setattr(cuda_build, "toolkit_problem",
                        lambda: "the CUDA toolkit (nvcc) was not found; install it or set CUDA_HOME")
    with caplog.at_level(logging.WARNING):
        model = build_model(tiny_dict, device="auto")
    _check_one_line_note(model, caplog, "nvcc", "CUDA_HOME")


def test_failed_kernel_build_falls_back_and_keeps_the_full_log(monkeypatch, caplog, tiny_dict, tmp_path):
    _pretend_gpu(monkeypatch)
    monkeypatch.setattr(cuda_build, "toolkit_problem", lambda: None)
    log_text = (
        "Error building extension 'rwkv7_cuda_0123':\n[1/5] nvcc -c wkv7.cu\n"
        'wkv7.cu(12): error: identifier "bar" is undefined\nninja: build stopped: subcommand failed.'
    )

    def failing_load(**kwargs):
        assert str(tmp_path / "cache") in kwargs["build_directory"]
        raise RuntimeError(log_text)

    monkeypatch.setattr(torch.utils.cpp_extension, "load", failing_load)
    with caplog.at_level(logging.WARNING):
        model = build_model(tiny_dict, device="auto")
    _check_one_line_note(model, caplog, "CUDA kernel build failed", 'wkv7.cu(12): error: identifier "bar"')
    logs = list((tmp_path / "cache" / "cuda").glob("*/build-error.log"))
    assert len(logs) == 1 and logs[0].read_text() == log_text
    assert str(logs[0]) in model.info.device_note

    with pytest.raises(BackendError, match="CUDA kernel build failed") as info:
        build_model(tiny_dict, device="cuda")
    assert "\n" not in str(info.value)


def test_build_name_changes_with_the_sources(monkeypatch, tmp_path):
    """The cache key covers the kernel sources, so an edited kernel is rebuilt, not reused."""
    source = tmp_path / "cuda"
    source.mkdir()
    for name in (*cuda_build.SOURCES, *cuda_build.HEADERS):
        (source / name).write_text("// v1\n")
    monkeypatch.setattr(cuda_build, "cuda_source_dir", lambda: source)
    first = cuda_build.build_key((9, 0))
    assert cuda_build.build_key((9, 0)) == first
    (source / "wkv7.cu").write_text("// v2\n")
    assert cuda_build.build_key((9, 0)) != first
    assert cuda_build.build_key((8, 0)) != cuda_build.build_key((9, 0))


def test_toolkit_root_needs_nvcc_and_headers(monkeypatch, tmp_path):
    """A directory with only an nvcc wrapper is not a toolkit (torch would build without
    cuda_runtime.h); CUDA_HOME pointing at a real one wins."""
    wrapper = tmp_path / "wrapper"
    (wrapper / "bin").mkdir(parents=True)
    (wrapper / "bin" / "nvcc").write_text("#!/bin/sh\n")
    real = tmp_path / "toolkit"
    (real / "bin").mkdir(parents=True)
    (real / "include").mkdir()
    (real / "bin" / "nvcc").write_text("#!/bin/sh\n")
    (real / "include" / "cuda_runtime.h").write_text("")
    monkeypatch.setattr(torch.utils.cpp_extension, "CUDA_HOME", str(wrapper))
    monkeypatch.setenv("CUDA_HOME", str(real))
    assert cuda_build.cuda_home() == real
    monkeypatch.setenv("CUDA_HOME", str(wrapper))
    monkeypatch.delenv("CUDA_PATH", raising=False)
    found = cuda_build.cuda_home()
    assert found != wrapper
    assert found is None or (found / "include" / "cuda_runtime.h").exists()
