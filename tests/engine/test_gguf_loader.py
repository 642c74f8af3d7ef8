"""llama.cpp's rwkv7 GGUF files (engine/gguf_loader.py), written here from random checkpoints
with the gguf package in the layout of llama.cpp's converter (conversion/rwkv.py, Rwkv7Model):
the same weights give the same logits as the .pth, Q8_0/Q4_0 blocks are taken over bit for bit,
K-quants are widened with a note, and damaged files fail in one line."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

gguf = pytest.importorskip("gguf")

from engine import load_model  # noqa: E402
from engine.checkpoint import read_state_dict  # noqa: E402
from engine.errors import CheckpointError  # noqa: E402
from engine.gguf_loader import read_gguf, write_gguf  # noqa: E402
from engine.quant import QuantizedMatrix  # noqa: E402
from engine.synthetic import random_state_dict, save_checkpoint  # noqa: E402

TOKENS = [5, 17, 200, 3, 3, 99, 250, 1]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> tuple[dict[str, torch.Tensor], Path]:
    sd = random_state_dict(2, 128, 300, dtype=torch.bfloat16, seed=21)
    folder = tmp_path_factory.mktemp("gguf")
    return sd, save_checkpoint(sd, folder / "model.pth")


def _logits(path: Path, dtype: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    model = load_model(path, device="cpu", dtype=dtype)
    prefill, state = model.forward(TOKENS)
    step, _ = model.forward([42], state)
    return prefill, step


@pytest.mark.parametrize("matrix_type,dtype", [("F32", "fp32"), ("BF16", "bf16")])
def test_float_gguf_gives_the_logits_of_the_same_pth(checkpoint, tmp_path, matrix_type, dtype) -> None:
    sd, pth = checkpoint
    path = write_gguf(sd, tmp_path / f"model-{matrix_type}.gguf", matrix_type)
    model = load_model(path, device="cpu")
    assert model.info.dtype == dtype and model.config == load_model(pth, device="cpu").config
    for ours, theirs in zip(_logits(path), _logits(pth, dtype)):
        assert torch.equal(ours, theirs)


@pytest.mark.parametrize("matrix_type,fmt", [("Q8_0", "int8"), ("Q4_0", "q4")])
def test_q8_0_and_q4_0_blocks_are_taken_over_bit_for_bit(checkpoint, tmp_path, matrix_type, fmt) -> None:
    sd, _ = checkpoint
    path = write_gguf(sd, tmp_path / f"model-{matrix_type}.gguf", matrix_type)
    loaded = read_gguf(path)
    assert loaded.dtype == fmt and loaded.tokenizer == "world" and loaded.note == ""
    reader = gguf.GGUFReader(str(path))
    stored = {t.name: t for t in reader.tensors}
    for ours, theirs, transposed in [("head.weight", "output.weight", False),
                                     ("blocks.1.att.key.weight", "blk.1.time_mix_key.weight", False),
                                     ("blocks.1.att.w1", "blk.1.time_mix_w1.weight", True)]:
        matrix = loaded.weights[ours]
        assert isinstance(matrix, QuantizedMatrix) and matrix.format == fmt and matrix.transposed == transposed
        expected = gguf.quants.dequantize(np.asarray(stored[theirs].data), gguf.GGMLQuantizationType[matrix_type])
        assert torch.equal(matrix.dequantize(), torch.from_numpy(expected.reshape(matrix.shape)))


@pytest.mark.parametrize("matrix_type", ["Q8_0", "Q4_0"])
def test_quantized_gguf_runs_close_to_its_own_weights_in_fp32(checkpoint, tmp_path, matrix_type) -> None:
    """Against the very weights the file holds, widened: only our input rounding and the FFN
    value matrix's re-blocking separate the two."""
    sd, _ = checkpoint
    path = write_gguf(sd, tmp_path / f"model-{matrix_type}.gguf", matrix_type)
    dense = {k: (v.checkpoint_tensor() if isinstance(v, QuantizedMatrix) else v) for k, v in read_gguf(path).weights.items()}
    reference = save_checkpoint(dense, tmp_path / "widened.pth")
    ours, theirs = _logits(path), _logits(reference, "fp32")
    bound = 0.05 if matrix_type == "Q8_0" else 0.5
    for a, b in zip(ours, theirs):
        assert (a - b).abs().max().item() / b.std().item() <= bound


def test_k_quants_are_widened_to_our_nearest_format_with_a_note(checkpoint, tmp_path, caplog) -> None:
    sd, _ = checkpoint
    path = write_gguf(sd, tmp_path / "model-bf16.gguf", "BF16")
    # rewrite with a Q6_K head: random levels, sane fp16 scales (the gguf package cannot quantize K-quants)
    reader = gguf.GGUFReader(str(path))
    out = tmp_path / "model-q6k.gguf"
    writer = gguf.GGUFWriter(str(out), "rwkv7")
    for field in reader.fields.values():
        if field.name.startswith("GGUF.") or field.name == "general.architecture":
            continue
        writer.add_key_value(field.name, field.contents(), field.types[0], sub_type=field.types[-1] if len(field.types) > 1 else None)
    rng = np.random.default_rng(0)
    for t in reader.tensors:
        if t.name == "output.weight":
            # Q6_K blocks are 256 wide, the head 128: this head has 256 columns (shape checks come later)
            blocks = rng.integers(0, 256, size=(300, 210), dtype=np.uint8)
            blocks[:, 208:210] = np.frombuffer(np.float16(0.001).tobytes(), dtype=np.uint8)
            writer.add_tensor(t.name, blocks, raw_dtype=gguf.GGMLQuantizationType.Q6_K)
        else:
            writer.add_tensor(t.name, np.asarray(t.data), raw_dtype=gguf.GGMLQuantizationType(t.tensor_type))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with caplog.at_level(logging.WARNING):
        loaded = read_gguf(out)
    assert "Q6_K" in loaded.note and "widened" in loaded.note and "Q6_K" in caplog.text
    assert loaded.weights["head.weight"].shape == (300, 256)


def test_damaged_or_foreign_gguf_files_fail_in_one_line(checkpoint, tmp_path) -> None:
    sd, _ = checkpoint
    path = write_gguf(sd, tmp_path / "model.gguf", "Q4_0")
    data = path.read_bytes()
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt") as raised:
        load_model(truncated, device="cpu")
    assert "\n" not in str(raised.value)
    other = tmp_path / "llama.gguf"
    writer = gguf.GGUFWriter(str(other), "llama")
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(CheckpointError, match="architecture 'llama', not RWKV-7"):
        load_model(other, device="cpu")


def test_quantize_command_accepts_a_gguf_source(checkpoint, tmp_path) -> None:
    from engine.model_file import quantize_checkpoint

    sd, _ = checkpoint
    path = write_gguf(sd, tmp_path / "model.gguf", "BF16")
    saved = quantize_checkpoint(path, "int8")
    a, _ = load_model(saved, device="cpu").forward(TOKENS)
    b, _ = load_model(path, device="cpu", dtype="int8").forward(TOKENS)
    assert torch.equal(a, b)
