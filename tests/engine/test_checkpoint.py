"""Safe checkpoint loading: every bad file gets a clear one-line error, no pickled code runs."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch

from engine import CheckpointError, load_model
from engine.checkpoint import fingerprint, infer_config, read_state_dict
from engine.synthetic import random_state_dict, save_checkpoint


def _assert_one_line(exc: pytest.ExceptionInfo[BaseException], *fragments: str) -> None:
    message = str(exc.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError) as exc:
        load_model(tmp_path / "absent.pth", device="cpu")
    _assert_one_line(exc, "absent.pth", "no such file")


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.pth"
    path.write_bytes(b"")
    with pytest.raises(CheckpointError) as exc:
        load_model(path, device="cpu")
    _assert_one_line(exc, "empty")


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError) as exc:
        load_model(tmp_path, device="cpu")
    _assert_one_line(exc, "directory")


def test_truncated_checkpoint(tmp_path: Path) -> None:
    whole = save_checkpoint(random_state_dict(1, 64, 256), tmp_path / "whole.pth").read_bytes()
    path = tmp_path / "cut.pth"
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(CheckpointError) as exc:
        load_model(path, device="cpu")
    _assert_one_line(exc, "cut.pth", "truncated or not a PyTorch checkpoint")


def test_text_file_is_not_a_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "notes.pth"
    path.write_text("this is not a model\n" * 50)
    with pytest.raises(CheckpointError) as exc:
        load_model(path, device="cpu")
    _assert_one_line(exc, "notes.pth")


class _Exploit:
    """Unpickling this would create a marker file; a safe loader must refuse it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("zip_format", [True, False])
def test_code_carrying_pickle_is_refused_and_never_runs(tmp_path: Path, zip_format: bool) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    payload = {"emb.weight": torch.zeros(2, 2), "evil": _Exploit(marker)}
    torch.save(payload, path, _use_new_zipfile_serialization=zip_format)
    with pytest.raises(CheckpointError) as exc:
        load_model(path, device="cpu")
    _assert_one_line(exc, "evil.pth", "refused")
    assert not marker.exists(), "pickled code was executed"


def test_plain_pickle_with_code_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "raw.pth"
    path.write_bytes(pickle.dumps(_Exploit(marker)))
    with pytest.raises(CheckpointError):
        load_model(path, device="cpu")
    assert not marker.exists()


def test_non_dict_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "list.pth"
    torch.save([torch.zeros(3)], path)
    with pytest.raises(CheckpointError) as exc:
        load_model(path, device="cpu")
    _assert_one_line(exc, "expected a dict of tensors", "list")


@pytest.mark.parametrize(
    ("extra_key", "expected"),
    [
        ("blocks.0.att.time_maa_x", "RWKV-6"),
        ("blocks.0.att.time_faaaa", "RWKV-5"),
        ("blocks.0.att.time_first", "RWKV-4"),
        ("blocks.0.ffn.s_emb.weight", "DeepEmbed"),
    ],
)
def test_other_rwkv_architectures_are_named(tmp_path: Path, extra_key: str, expected: str) -> None:
    sd = random_state_dict(1, 64, 256)
    sd[extra_key] = torch.zeros(64)
    path = save_checkpoint(sd, tmp_path / "other.pth")
    with pytest.raises(CheckpointError) as exc:
        load_model(path, device="cpu")
    _assert_one_line(exc, "unsupported model", expected)


def test_transformer_checkpoint_is_named(tmp_path: Path) -> None:
    path = save_checkpoint({"model.layers.0.self_attn.q_proj.weight": torch.zeros(4, 4)}, tmp_path / "llama.pth")
    with pytest.raises(CheckpointError) as exc:
        load_model(path, device="cpu")
    _assert_one_line(exc, "Hugging Face transformer")


def test_missing_tensor(tmp_path: Path) -> None:
    sd = random_state_dict(2, 64, 256)
    del sd["blocks.1.att.key.weight"]
    with pytest.raises(CheckpointError) as exc:
        infer_config(sd)
    _assert_one_line(exc, "missing tensor blocks.1.att.key.weight")


def test_wrong_shape(tmp_path: Path) -> None:
    sd = random_state_dict(2, 64, 256)
    sd["blocks.1.ffn.value.weight"] = torch.zeros(64, 100)
    with pytest.raises(CheckpointError) as exc:
        infer_config(sd)
    _assert_one_line(exc, "blocks.1.ffn.value.weight", "shape")


def test_unexpected_tensor() -> None:
    sd = random_state_dict(1, 64, 256)
    sd["blocks.0.att.mystery"] = torch.zeros(3)
    with pytest.raises(CheckpointError) as exc:
        infer_config(sd)
    _assert_one_line(exc, "unexpected tensor blocks.0.att.mystery")


def test_integer_tensor_rejected() -> None:
    sd = random_state_dict(1, 64, 256)
    sd["ln_out.bias"] = torch.zeros(64, dtype=torch.int32)
    with pytest.raises(CheckpointError) as exc:
        infer_config(sd)
    _assert_one_line(exc, "non-float dtype")


def test_missing_layer() -> None:
    sd = random_state_dict(3, 64, 256)
    for key in [k for k in sd if k.startswith("blocks.1.")]:
        del sd[key]
    with pytest.raises(CheckpointError) as exc:
        infer_config(sd)
    _assert_one_line(exc, "layers [1] are missing")


def test_config_from_shapes_with_uneven_ranks() -> None:
    sd = random_state_dict(3, 192, 300, ranks=(40, 24, 16, 56), ffn_dim=500, layer0_value_residual=False)
    cfg = infer_config(sd)
    assert (cfg.n_layer, cfg.n_embd, cfg.n_head, cfg.head_size, cfg.vocab) == (3, 192, 3, 64, 300)
    assert (cfg.ffn_dim, cfg.decay_rank, cfg.iclr_rank, cfg.value_rank, cfg.gate_rank) == (500, 40, 24, 16, 56)
    assert cfg.state_bytes == 4 * 3 * (2 * 192 + 3 * 64 * 64)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_any_float_storage_loads(tmp_path: Path, dtype: torch.dtype) -> None:
    path = save_checkpoint(random_state_dict(1, 64, 256, dtype=dtype), tmp_path / "m.pth")
    model = load_model(path, device="cpu")
    logits, _ = model.forward([1, 2, 3])
    assert logits.shape == (256,) and logits.dtype == torch.float32
    assert torch.isfinite(logits).all()


def test_legacy_pickle_format_loads(tmp_path: Path) -> None:
    path = tmp_path / "legacy.pth"
    torch.save(random_state_dict(1, 64, 256), path, _use_new_zipfile_serialization=False)
    assert read_state_dict(path)["emb.weight"].shape == (256, 64)


def test_fingerprint_tracks_weights_not_file() -> None:
    a = random_state_dict(1, 64, 256, seed=1)
    b = random_state_dict(1, 64, 256, seed=2)
    assert fingerprint(a) == fingerprint({k: v.clone() for k, v in a.items()})
    assert fingerprint(a) != fingerprint(b)


def test_model_info(tmp_path: Path) -> None:
    path = save_checkpoint(random_state_dict(2, 128, 512), tmp_path / "info.pth")
    info = load_model(path, device="cpu", dtype="fp32").info
    assert (info.n_layer, info.n_embd, info.n_head, info.head_size, info.vocab) == (2, 128, 2, 64, 512)
    assert info.dtype == "fp32" and info.device == "cpu" and info.name == "info"
