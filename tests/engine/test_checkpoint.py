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


# ---------------------------------------------------------------------------------- hostile shapes


def _infer_refuses(state_dict, *fragments: str) -> str:
    with pytest.raises(CheckpointError) as exc:
        infer_config(state_dict, source="m.pth")
    _assert_one_line(exc, "m.pth", *fragments)
    return str(exc.value)


def test_a_huge_layer_index_is_refused_without_listing_every_layer() -> None:
    import tracemalloc

    from engine.errors import MAX_MESSAGE_CHARS

    state_dict = random_state_dict(2, 64, 256)
    state_dict["blocks.9999999.ln1.weight"] = torch.ones(64)
    tracemalloc.start()
    try:
        message = _infer_refuses(state_dict, "missing")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * 1024 * 1024, f"validating a tiny file allocated {peak >> 20} MB"
    assert len(message) <= MAX_MESSAGE_CHARS
    assert "2" in message and "9999999" in message


def test_a_layer_index_too_long_for_an_int_is_refused() -> None:
    state_dict = random_state_dict(1, 64, 256)
    state_dict["blocks." + "9" * 5000 + ".ln1.weight"] = torch.ones(64)
    _infer_refuses(state_dict, "unexpected tensor")


def _every_key():
    return sorted(random_state_dict(2, 64, 256))


@pytest.mark.parametrize("key", _every_key())
@pytest.mark.parametrize("change", ["extra dimension", "one dimension fewer", "scalar"])
def test_every_tensor_of_the_wrong_rank_is_a_one_line_error(key: str, change: str) -> None:
    state_dict = random_state_dict(2, 64, 256)
    tensor = state_dict[key]
    if change == "extra dimension":
        state_dict[key] = tensor.unsqueeze(0).repeat(2, *([1] * tensor.dim()))
    elif change == "one dimension fewer":
        state_dict[key] = tensor.reshape(-1) if tensor.dim() > 1 else tensor.sum()
    else:
        state_dict[key] = torch.tensor(1.0)
    _infer_refuses(state_dict, key)


@pytest.mark.parametrize("key", _every_key())
def test_every_missing_tensor_is_a_one_line_error(key: str) -> None:
    state_dict = random_state_dict(2, 64, 256)
    del state_dict[key]
    if key in ("blocks.0.att.v0", "blocks.0.att.v1", "blocks.0.att.v2"):
        infer_config(state_dict)  # layer 0's value-residual LoRA is optional
        return
    _infer_refuses(state_dict, key)


def test_the_first_layer_r_k_of_the_wrong_rank_is_refused_at_load(tmp_path: Path) -> None:
    state_dict = random_state_dict(2, 64, 256)
    state_dict["blocks.0.att.r_k"] = state_dict["blocks.0.att.r_k"].reshape(1, 1, 64)
    path = save_checkpoint(state_dict, tmp_path / "rank.pth")
    with pytest.raises(CheckpointError) as exc:
        load_model(path, device="cpu")
    _assert_one_line(exc, "rank.pth", "blocks.0.att.r_k")


def test_an_empty_vocabulary_is_refused_at_load(tmp_path: Path) -> None:
    state_dict = random_state_dict(2, 64, 256)
    state_dict["emb.weight"] = torch.zeros(0, 64)
    state_dict["head.weight"] = torch.zeros(0, 64)
    path = save_checkpoint(state_dict, tmp_path / "novocab.pth")
    with pytest.raises(CheckpointError) as exc:
        load_model(path, device="cpu")
    _assert_one_line(exc, "novocab.pth", "vocabulary")


@pytest.mark.parametrize("key", ["emb.weight", "blocks.0.att.r_k", "blocks.0.ffn.key.weight", "blocks.1.att.w1"])
def test_zero_sized_dimensions_are_refused(key: str) -> None:
    state_dict = random_state_dict(2, 64, 256)
    shape = list(state_dict[key].shape)
    shape[-1] = 0
    state_dict[key] = torch.zeros(shape)
    _infer_refuses(state_dict)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("key", ["head.weight", "blocks.1.att.receptance.weight", "blocks.0.att.k_k"])
def test_non_finite_weights_are_refused_at_load(tmp_path: Path, key: str, bad: float) -> None:
    state_dict = random_state_dict(2, 64, 256, dtype=torch.bfloat16)
    state_dict[key].view(-1)[7] = bad
    path = save_checkpoint(state_dict, tmp_path / "nan.pth")
    with pytest.raises(CheckpointError) as exc:
        load_model(path, device="cpu")
    _assert_one_line(exc, "nan.pth", key, "NaN or infinite")


def test_huge_but_finite_weights_are_not_mistaken_for_infinite(tmp_path: Path) -> None:
    state_dict = random_state_dict(2, 64, 256)
    state_dict["blocks.0.att.x_r"].fill_(3e38)  # the sum overflows; every value is finite
    build = __import__("engine").build_model
    build(state_dict, device="cpu", dtype="fp32")


# ---------------------------------------------------------------------------------- honest messages


def test_an_unreadable_file_says_permission_denied(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.helpers import deny_reading

    path = save_checkpoint(random_state_dict(1, 64, 256), tmp_path / "locked.pth")
    deny_reading(path, monkeypatch)
    with pytest.raises(CheckpointError) as exc:
        read_state_dict(path)
    _assert_one_line(exc, "locked.pth")
    assert "permission denied" in str(exc.value).lower() and "truncated" not in str(exc.value)


def test_random_bytes_are_not_called_pickled_code(tmp_path: Path) -> None:
    import random

    path = tmp_path / "noise.pth"
    for seed in range(40):
        rng = random.Random(seed)
        data = bytes(rng.getrandbits(8) for _ in range(512))
        if data[:1] == b"\x80" or data[:2] == b"PK":
            continue
        path.write_bytes(data)
        with pytest.raises(CheckpointError) as exc:
            read_state_dict(path)
        _assert_one_line(exc, "noise.pth", "not a PyTorch checkpoint")
        assert "pickled code" not in str(exc.value)


def test_a_damaged_pickle_is_called_damaged_not_code(tmp_path: Path) -> None:
    path = tmp_path / "damaged.pth"
    path.write_bytes(b"\x80\x02\xfe" + bytes(64))
    with pytest.raises(CheckpointError) as exc:
        read_state_dict(path)
    _assert_one_line(exc, "damaged.pth", "damaged", "Unsupported operand")
    assert "pickled code" not in str(exc.value) and "Weights only load failed" not in str(exc.value)


def test_a_safetensors_model_file_loads_like_its_pth(tmp_path: Path) -> None:
    """Format detection reads safetensors first: such a model loads (nothing in it can run)."""
    from safetensors.torch import save_file

    weights = random_state_dict(2, 64, 256, seed=4)
    path = tmp_path / "weights.safetensors"
    save_file(weights, str(path))
    pth = save_checkpoint(weights, tmp_path / "weights.pth")
    assert load_model(path, device="cpu").info.fingerprint == load_model(pth, device="cpu").info.fingerprint
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(CheckpointError) as exc:
        read_state_dict(path)
    _assert_one_line(exc, "weights.safetensors", "safetensors")


# ---------------------------------------------------------------------------------- fingerprint


def test_models_differing_only_in_the_head_or_a_big_matrix_have_different_fingerprints() -> None:
    base = random_state_dict(2, 64, 256, seed=3)
    head = dict(base)
    head["head.weight"] = base["head.weight"] + 0.01
    lora = dict(base)
    a, b = torch.randn(64, 4), torch.randn(4, 64)
    lora["blocks.1.att.value.weight"] = base["blocks.1.att.value.weight"] + 1e-3 * (a @ b)  # a merged LoRA
    fingerprints = {fingerprint(base), fingerprint(head), fingerprint(lora)}
    assert len(fingerprints) == 3


def test_fingerprint_is_stable_and_ignores_the_storage_dtype() -> None:
    weights = random_state_dict(2, 64, 256, seed=3, dtype=torch.bfloat16)
    widened = {k: v.to(torch.float32) for k, v in weights.items()}
    assert fingerprint(weights) == fingerprint(widened) == fingerprint(dict(reversed(list(weights.items()))))
