"""Quantized model files (engine/model_file.py): saved once, reloaded without quantizing again,
equal to quantizing at load time, and refused in one line when damaged."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch

from engine import load_model
from engine.backends.cpu_native import TorchKernels, get_kernels
from engine.checkpoint import fingerprint, read_state_dict
from engine.errors import CheckpointError
from engine.model_file import FORMAT, is_safetensors, quantize_checkpoint, read_model_file
from engine.synthetic import random_state_dict, save_checkpoint

FORMATS = ["int8", "q4"]


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    sd = random_state_dict(2, 128, 300, dtype=torch.bfloat16, seed=11)
    return save_checkpoint(sd, tmp_path_factory.mktemp("model_file") / "rwkv7-test.pth")


@pytest.fixture(scope="module")
def saved(source: Path) -> dict[str, Path]:
    return {fmt: quantize_checkpoint(source, fmt) for fmt in FORMATS}


TOKENS = [5, 17, 200, 3, 3, 99, 250]


@pytest.mark.parametrize("fmt", FORMATS)
def test_saved_model_equals_quantizing_at_load_time(source, saved, fmt) -> None:
    path = saved[fmt]
    assert path == source.with_name(f"rwkv7-test-{fmt}.safetensors") and is_safetensors(path)
    from_file = load_model(path, device="cpu")
    at_load = load_model(source, device="cpu", dtype=fmt)
    assert from_file.info.dtype == fmt
    assert from_file.info.fingerprint == at_load.info.fingerprint == fingerprint(read_state_dict(source))
    prefill_file, state_file = from_file.forward(TOKENS)
    prefill_load, state_load = at_load.forward(TOKENS)
    assert torch.equal(prefill_file, prefill_load) and state_file.equal(state_load)
    step_file, _ = from_file.forward([7], state_file)
    step_load, _ = at_load.forward([7], state_load)
    assert torch.equal(step_file, step_load)


@pytest.mark.parametrize("fmt", FORMATS)
def test_reloading_does_not_quantize_again(saved, fmt, monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("quantized again")

    kernels = get_kernels()
    monkeypatch.setattr(type(kernels), "quantize", refuse)
    monkeypatch.setattr(TorchKernels, "quantize", refuse)
    logits, _ = load_model(saved[fmt], device="cpu").forward(TOKENS)
    assert logits.isfinite().all()


def test_another_dtype_can_be_asked_of_a_quantized_file(source, saved) -> None:
    widened = load_model(saved["int8"], device="cpu", dtype="fp32")
    assert widened.info.dtype == "fp32"
    direct = load_model(source, device="cpu", dtype="int8")
    a, _ = widened.forward(TOKENS)
    b, _ = direct.forward(TOKENS)
    assert (a - b).abs().max().item() <= 1e-3 * b.std().item()  # the same weights, unrounded input
    requantized = load_model(saved["int8"], device="cpu", dtype="q4")
    assert requantized.info.dtype == "q4" and requantized.forward(TOKENS)[0].isfinite().all()


def test_a_plain_safetensors_checkpoint_loads_like_its_pth(source, tmp_path) -> None:
    from safetensors.torch import save_file

    plain = tmp_path / "plain.safetensors"
    save_file({k: v.contiguous() for k, v in read_state_dict(source).items()}, str(plain))
    a, _ = load_model(plain, device="cpu", dtype="fp32").forward(TOKENS)
    b, _ = load_model(source, device="cpu", dtype="fp32").forward(TOKENS)
    assert torch.equal(a, b)


def test_quantizing_refuses_to_overwrite_its_source_and_keeps_a_failed_target_intact(source, saved, tmp_path) -> None:
    with pytest.raises(CheckpointError, match="would overwrite"):
        quantize_checkpoint(saved["q4"], "q4", saved["q4"])
    blocked = tmp_path / "blocked"
    blocked.mkdir()
    with pytest.raises(CheckpointError, match="is a directory"):
        quantize_checkpoint(source, "int8", blocked)
    assert blocked.is_dir() and not list(tmp_path.glob(".*.tmp"))


# ----------------------------------------------------------------- damaged files, one line each


def _rewrite_header(path: Path, out: Path, edit) -> Path:
    data = path.read_bytes()
    length = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + length])
    edit(header)
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    out.write_bytes(struct.pack("<Q", len(raw)) + raw + data[8 + length:])
    return out


def _meta(**changes):
    def edit(header):
        header["__metadata__"].update(changes)
    return edit


def _matrices(change):
    def edit(header):
        matrices = json.loads(header["__metadata__"]["matrices"])
        change(matrices)
        header["__metadata__"]["matrices"] = json.dumps(matrices)
    return edit


DAMAGE = {
    "newer format": (_meta(format_version="99"), "newer rwkv-tui"),
    "other group size": (_meta(group_size="64"), "group size"),
    "unknown dtype": (_meta(dtype="q3"), "unknown quantized format"),
    "other architecture": (_meta(architecture="llama"), "unsupported architecture"),
    "bad fingerprint": (_meta(source_fingerprint="zz"), "source_fingerprint"),
    "matrices not json": (_meta(matrices="{"), "matrices"),
    "shape lies": (_matrices(lambda m: m["head.weight"].update(shape=[300, 64])), "head.weight"),
    "format lies": (_matrices(lambda m: m["head.weight"].update(format="q4")), "head.weight"),
    "layout lies": (_matrices(lambda m: m["blocks.0.ffn.value.weight"].update(transposed=False)), "ffn.value"),
    "matrix forgotten": (_matrices(lambda m: m.pop("head.weight")), "head.weight"),
    "no metadata field": (lambda h: h["__metadata__"].pop("dtype"), "metadata lacks dtype"),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_damaged_headers_are_refused_in_one_line(saved, tmp_path, case) -> None:
    edit, expected = DAMAGE[case]
    path = _rewrite_header(saved["int8"], tmp_path / "damaged.safetensors", edit)
    with pytest.raises(CheckpointError) as raised:
        load_model(path, device="cpu")
    message = str(raised.value)
    assert expected in message and "\n" not in message and str(path) in message


def test_non_finite_scales_are_refused(saved, tmp_path) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(saved["q4"]))
    from safetensors import safe_open

    with safe_open(str(saved["q4"]), "pt") as handle:
        metadata = handle.metadata()
    tensors["head.weight.d"][3, 1] = float("inf")
    path = tmp_path / "inf.safetensors"
    save_file(tensors, str(path), metadata)
    with pytest.raises(CheckpointError, match="NaN, infinite"):
        read_model_file(path)


def test_truncated_and_foreign_files_are_refused(saved, tmp_path) -> None:
    data = saved["q4"].read_bytes()
    for name, content, expected in [
        ("cut.safetensors", data[: len(data) // 2], "corrupt or truncated"),
        ("head.safetensors", data[:100], "truncated"),
        ("tiny.safetensors", b"\x01\x00", "too short"),
    ]:
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(CheckpointError, match=expected):
            read_model_file(path)


def test_the_header_names_the_format(saved) -> None:
    from safetensors import safe_open

    with safe_open(str(saved["q4"]), "pt") as handle:
        meta = handle.metadata()
    assert meta["format"] == FORMAT and meta["dtype"] == "q4" and meta["group_size"] == "32"
    assert meta["source"] == "rwkv7-test.pth" and json.loads(meta["matrices"])["head.weight"]["shape"] == [300, 128]
