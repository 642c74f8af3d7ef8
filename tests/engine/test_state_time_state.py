"""State-tuning (time_state) files: where the matrices land, checked against the reference runtime."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch

from engine import StateError, build_model, load_model
from engine.state import State
from engine.synthetic import random_state_dict, save_checkpoint
from engine.time_state import (
    DEFAULT_ORIENTATION, Orientation, export_time_state, import_time_state, orient,
    probe_orientation, read_time_state_file, state_from_time_states, time_state_dict,
)

TOKENS = list(b"orientation matters")


def _coded_time_state(n_layer: int = 2, n_head: int = 2, n: int = 64) -> torch.Tensor:
    """Entry [i, h, r, c] = i·1e3 + h·1e2 + r + c/100: every position tells where it came from."""
    i = torch.arange(n_layer).view(-1, 1, 1, 1) * 1000.0
    h = torch.arange(n_head).view(1, -1, 1, 1) * 100.0
    r = torch.arange(n).view(1, 1, -1, 1) * 1.0
    c = torch.arange(n).view(1, 1, 1, -1) / 100.0
    return (i + h + r + c).float()


def _write_pth(path: Path, stacked: torch.Tensor, dtype: torch.dtype = torch.bfloat16) -> Path:
    torch.save({f"blocks.{i}.att.time_state": stacked[i].to(dtype) for i in range(stacked.shape[0])}, path)
    return path


@pytest.fixture(scope="module")
def tuned_like(tiny_model) -> torch.Tensor:
    """A realistic, asymmetric WKV state (what a tuned state looks like), as (L, H, N, N)."""
    _, state = tiny_model.forward(list(b"A state-tuned persona: terse, kind, exact."), None)
    return state.wkv.clone()


def test_default_orientation_is_as_stored():
    assert DEFAULT_ORIENTATION is Orientation.AS_STORED


@pytest.mark.parametrize("orientation", list(Orientation))
def test_known_time_state_lands_in_the_right_place(tmp_path, tiny_model, orientation):
    coded = _coded_time_state()
    path = _write_pth(tmp_path / "coded.pth", coded, torch.float32)
    state = import_time_state(path, tiny_model, orientation=orientation)
    for layer, head, row, col in [(0, 0, 0, 1), (1, 1, 5, 60), (1, 0, 63, 2), (0, 1, 17, 17)]:
        file_row, file_col = (row, col) if orientation is Orientation.AS_STORED else (col, row)
        expected = layer * 1000 + head * 100 + file_row + file_col / 100
        assert state.wkv[layer, head, row, col].item() == pytest.approx(expected, rel=1e-6)
    assert not state.att_x.any() and not state.ffn_x.any()
    assert state.meta["orientation"] == orientation.value
    assert state.meta["imported_from"] == "coded.pth"


@pytest.fixture(scope="module")
def oracle(tiny_checkpoint):
    """The ``rwkv`` pip package on the same weights: an independent reference runtime."""
    os.environ["RWKV_V7_ON"] = "1"
    os.environ["RWKV_CUDA_ON"] = "0"
    from rwkv.model import RWKV

    model = RWKV(model=str(tiny_checkpoint)[: -len(".pth")], strategy="cpu fp32")
    assert type(model).__name__ == "RWKV_x070"
    return model


def _oracle_logits(oracle, wkv: torch.Tensor) -> torch.Tensor:
    """Logits of the reference runtime from a state holding ``wkv`` ([h][value][key]) and zero shift."""
    state = oracle.generate_zero_state()
    for i in range(wkv.shape[0]):
        state[3 * i + 1] = wkv[i].clone().float()
    logits, _ = oracle.forward(TOKENS, state)
    return logits.float()


@pytest.mark.parametrize("orientation", list(Orientation))
def test_imported_state_drives_the_model_like_the_reference_runtime(tmp_path, tiny_model, oracle, tuned_like, orientation):
    path = _write_pth(tmp_path / "tuned.pth", tuned_like, torch.float32)
    ours, _ = tiny_model.forward(TOKENS, import_time_state(path, tiny_model, orientation=orientation))
    # The reference runtime's state is [head][value][key]; the orientation says how the file maps to it.
    reference_wkv = tuned_like if orientation is Orientation.AS_STORED else tuned_like.transpose(-1, -2)
    reference = _oracle_logits(oracle, reference_wkv)
    scale = reference.std().item()
    assert (ours - reference).abs().max().item() < 1e-4 * max(scale, 1.0)
    # And the other reading gives a genuinely different model behaviour: the test can fail.
    wrong = _oracle_logits(oracle, reference_wkv.transpose(-1, -2))
    assert (ours - wrong).abs().max().item() > 1e-2 * scale


@pytest.mark.parametrize("orientation", list(Orientation))
def test_export_then_import_round_trips(tmp_path, tiny_model, tuned_like, orientation):
    state = State(att_x=torch.zeros(2, 128), wkv=tuned_like.clone(), ffn_x=torch.zeros(2, 128))
    path = export_time_state(tmp_path / "out.pth", state, orientation=orientation)
    raw = torch.load(path, weights_only=True)
    assert sorted(raw) == ["blocks.0.att.time_state", "blocks.1.att.time_state"]
    assert raw["blocks.1.att.time_state"].shape == (2, 64, 64)
    assert raw["blocks.1.att.time_state"].dtype == torch.float32
    expected_file = tuned_like if orientation is Orientation.AS_STORED else tuned_like.transpose(-1, -2)
    assert torch.equal(raw["blocks.1.att.time_state"], expected_file[1])
    back = import_time_state(path, tiny_model, orientation=orientation)
    assert torch.equal(back.wkv, tuned_like)


def test_export_in_bf16_halves_the_file(tmp_path, tuned_like):
    state = State(att_x=torch.zeros(2, 128), wkv=tuned_like, ffn_x=torch.zeros(2, 128))
    full = export_time_state(tmp_path / "full.pth", state)
    half = export_time_state(tmp_path / "half.pth", state, dtype="bf16")
    assert half.stat().st_size < 0.7 * full.stat().st_size
    assert time_state_dict(state, dtype="bf16")["blocks.0.att.time_state"].dtype == torch.bfloat16


def test_orient_is_its_own_inverse(tuned_like):
    twice = orient(orient(tuned_like, "transposed"), "transposed")
    assert torch.equal(twice, tuned_like)
    assert Orientation.parse("transpose") is Orientation.TRANSPOSED
    with pytest.raises(StateError, match="orientation"):
        Orientation.parse("sideways")


def test_safetensors_time_state_files_are_read_too(tmp_path, tuned_like):
    from safetensors.torch import save_file

    path = tmp_path / "state.st"
    save_file({f"blocks.{i}.att.time_state": tuned_like[i].half().contiguous() for i in range(2)}, str(path))
    assert torch.allclose(read_time_state_file(path), tuned_like, rtol=1e-3, atol=1e-3)


def test_merged_time_state_becomes_the_models_bundled_state(tmp_path, tuned_like):
    weights = random_state_dict(2, 128, 256, seed=7)
    for i in range(2):
        weights[f"blocks.{i}.att.time_state"] = tuned_like[i].to(torch.bfloat16)
    path = save_checkpoint(weights, tmp_path / "tuned-model.pth")
    model = load_model(path, device="cpu", dtype="fp32")
    assert model.bundled_state is not None
    assert torch.equal(model.bundled_state.wkv, tuned_like.to(torch.bfloat16).float())
    assert model.bundled_state.meta["orientation"] == DEFAULT_ORIENTATION.value
    # The same file read as a state-tuning file gives the same state.
    assert torch.equal(import_time_state(path, model).wkv, model.bundled_state.wkv)


@pytest.mark.parametrize(
    "contents, words",
    [
        ({"blocks.0.att.time_state": torch.zeros(2, 64, 64)}, ("1 layers", "2 layers")),
        ({"blocks.0.att.time_state": torch.zeros(2, 64, 64), "blocks.2.att.time_state": torch.zeros(2, 64, 64)}, ("missing",)),
        ({f"blocks.{i}.att.time_state": torch.zeros(2, 64, 32) for i in range(2)}, ("shape",)),
        ({f"blocks.{i}.att.time_state": torch.zeros(4, 32, 32) for i in range(2)}, ("4 heads",)),
        ({f"blocks.{i}.att.time_state": torch.zeros(2, 64, 64, dtype=torch.int32) for i in range(2)}, ("non-float",)),
        ({f"blocks.{i}.att.time_state": torch.full((2, 64, 64), float("nan")) for i in range(2)}, ("nan",)),
        ({"emb.weight": torch.zeros(4, 4)}, ("no blocks.n.att.time_state",)),
    ],
)
def test_bad_time_state_files_are_refused(tmp_path, tiny_model, contents, words):
    path = tmp_path / "bad.pth"
    torch.save(contents, path)
    with pytest.raises(StateError) as info:
        import_time_state(path, tiny_model)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    for word in words:
        assert word in message.lower(), message


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_code_carrying_pth_is_refused_and_never_run(tmp_path, tiny_model):
    marker = tmp_path / "code-ran"
    path = tmp_path / "evil.pth"
    torch.save({"blocks.0.att.time_state": torch.zeros(2, 64, 64), "extra": _Payload(marker)}, path)
    with pytest.raises(StateError, match="refused"):
        import_time_state(path, tiny_model)
    legacy = tmp_path / "evil-legacy.pth"
    legacy.write_bytes(pickle.dumps({"blocks.0.att.time_state": _Payload(marker)}))
    with pytest.raises(StateError):
        import_time_state(legacy, tiny_model)
    assert not marker.exists()


def test_truncated_and_garbage_files_are_refused(tmp_path, tiny_model, tuned_like):
    path = _write_pth(tmp_path / "t.pth", tuned_like)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(StateError):
        import_time_state(path, tiny_model)
    path.write_bytes(os.urandom(1000))
    with pytest.raises(StateError):
        import_time_state(path, tiny_model)
    with pytest.raises(StateError, match="no such file"):
        import_time_state(tmp_path / "nope.pth", tiny_model)


def test_probe_scores_each_orientation_by_likelihood(tiny_model, tuned_like):
    scores = probe_orientation(tiny_model, tuned_like, TOKENS)
    # Independent computation of the as-stored score.
    logits, _ = tiny_model.forward_all(TOKENS, state_from_time_states(tuned_like, "as-stored"))
    log_probs = torch.log_softmax(logits[:-1].double(), dim=-1)
    nll = -log_probs[torch.arange(len(TOKENS) - 1), torch.tensor(TOKENS[1:])].mean().item()
    assert scores[Orientation.AS_STORED] == pytest.approx(nll, rel=1e-9)
    assert scores[Orientation.AS_STORED] != pytest.approx(scores[Orientation.TRANSPOSED], rel=1e-6)
    # Transposing the file swaps the scores: the probe measures the reading, not the file.
    swapped = probe_orientation(tiny_model, tuned_like.transpose(-1, -2), TOKENS)
    assert swapped[Orientation.TRANSPOSED] == pytest.approx(scores[Orientation.AS_STORED], rel=1e-6)
    with pytest.raises(StateError, match="two tokens"):
        probe_orientation(tiny_model, tuned_like, TOKENS[:1])


def test_a_huge_layer_number_is_refused_without_building_every_layer(tmp_path):
    import tracemalloc

    from engine.errors import MAX_MESSAGE_CHARS
    from engine.time_state import stack_time_states

    tensors = {"blocks.0.att.time_state": torch.zeros(2, 64, 64), "blocks.20000000.att.time_state": torch.zeros(2, 64, 64)}
    tracemalloc.start()
    try:
        with pytest.raises(StateError) as info:
            stack_time_states(tensors, "big.pth")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * 1024 * 1024, f"validating two small tensors allocated {peak >> 20} MB"
    message = str(info.value)
    assert "missing" in message and "20000000" in message and len(message) <= MAX_MESSAGE_CHARS


def test_a_layer_number_too_long_for_an_int_is_not_a_crash(tmp_path, tiny_model):
    path = tmp_path / "long.pth"
    torch.save({"blocks.0.att.time_state": torch.zeros(2, 64, 64),
                "blocks." + "9" * 5000 + ".att.time_state": torch.zeros(2, 64, 64)}, path)
    with pytest.raises(StateError):
        import_time_state(path, tiny_model)


@pytest.mark.parametrize("low", [0x0280, 0x0380, 0x0480, 0x0580])
def test_a_safetensors_time_state_whose_header_length_looks_like_a_pickle_is_read(tmp_path, tuned_like, low):
    """The header length's first bytes 80 02..80 05 are not a pickle marker when the JSON parses."""
    from safetensors.torch import save_file

    path = tmp_path / "state.safetensors"
    tensors = {f"blocks.{i}.att.time_state": tuned_like[i].contiguous() for i in range(2)}
    save_file(tensors, str(path), metadata={"note": ""})
    have = int.from_bytes(path.read_bytes()[:8], "little")
    save_file(tensors, str(path), metadata={"note": "n" * (low - have)})
    assert path.read_bytes()[:2] == bytes([0x80, low >> 8])
    assert torch.equal(read_time_state_file(path), tuned_like)


def test_an_unreadable_time_state_file_says_permission_denied(tmp_path, tuned_like, monkeypatch):
    from tests.helpers import deny_reading

    path = _write_pth(tmp_path / "locked.pth", tuned_like)
    deny_reading(path, monkeypatch)
    with pytest.raises(StateError) as info:
        read_time_state_file(path)
    assert "permission denied" in str(info.value).lower()
