"""Logits of our CPU engine against the `rwkv` pip package on random weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from engine import load_model
from engine.backends.cpu_native import TorchKernels, get_kernels
from engine.synthetic import random_state_dict, save_checkpoint
from tests.engine.oracle import load_oracle

FP32_TOLERANCE = 1e-4
BF16_RELATIVE_TOLERANCE = 5e-2

SHAPES = {
    # name: (n_layer, n_embd, vocab, ranks or None, layer-0 v0/v1/v2 present)
    "c64-l1-v256": (1, 64, 256, None, True),
    "c128-l2-v1000-uneven": (2, 128, 1000, (40, 24, 16, 56), False),
    "c256-l3-v4096": (3, 256, 4096, (32, 48, 32, 96), True),
    "c768-l4-v65536": (4, 768, 65536, None, False),
}


@pytest.fixture(scope="module", params=list(SHAPES))
def case(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    n_layer, n_embd, vocab, ranks, layer0_v = SHAPES[request.param]
    sd = random_state_dict(
        n_layer, n_embd, vocab, ranks=ranks, layer0_value_residual=layer0_v,
        dtype=torch.bfloat16, seed=n_layer * 7 + n_embd,
    )
    path = save_checkpoint(sd, tmp_path_factory.mktemp("numerics") / f"{request.param}.pth")
    tokens = torch.randint(0, vocab, (48,), generator=torch.Generator().manual_seed(n_embd)).tolist()
    oracle = load_oracle(path)
    reference_seq, _ = oracle.forward(tokens, None)
    reference_steps = []
    state = None
    for token in tokens[:12]:
        logits, state = oracle.forward([token], state)
        reference_steps.append(logits.clone())
    return path, tokens, reference_seq, reference_steps


@pytest.fixture(params=["native", "torch"])
def kernels(request: pytest.FixtureRequest):
    if request.param == "native":
        native = get_kernels()
        if native.name != "native":
            pytest.skip("no C compiler: native kernels unavailable")
        return native
    return TorchKernels()


def _model(path: Path, dtype: str, kernels):
    model = load_model(path, device="cpu", dtype=dtype)
    model.backend.kernels = kernels
    return model


def test_fp32_sequence_matches_reference(case, kernels) -> None:
    path, tokens, reference_seq, _ = case
    logits, state = _model(path, "fp32", kernels).forward(tokens)
    assert logits.dtype == torch.float32 and logits.shape == reference_seq.shape
    assert (logits - reference_seq).abs().max().item() <= FP32_TOLERANCE
    assert state.tokens_seen == len(tokens)


def test_fp32_token_by_token_matches_reference(case, kernels) -> None:
    path, tokens, _, reference_steps = case
    model = _model(path, "fp32", kernels)
    state = None
    for token, reference in zip(tokens, reference_steps):
        logits, state = model.forward([token], state)
        assert (logits - reference).abs().max().item() <= FP32_TOLERANCE


def test_fp32_state_carried_across_calls_matches_reference(case, kernels) -> None:
    path, tokens, reference_seq, _ = case
    model = _model(path, "fp32", kernels)
    state = None
    for piece in (tokens[:5], tokens[5:6], tokens[6:30], tokens[30:]):
        logits, state = model.forward(piece, state)
    assert (logits - reference_seq).abs().max().item() <= FP32_TOLERANCE


def test_prefill_chunking_does_not_change_results(case) -> None:
    path, tokens, reference_seq, _ = case
    model = load_model(path, device="cpu", dtype="fp32")
    model.chunk_len = 7
    logits, _ = model.forward(tokens)
    assert (logits - reference_seq).abs().max().item() <= FP32_TOLERANCE


def test_bf16_within_tolerance_of_fp32_reference(case, kernels) -> None:
    path, tokens, reference_seq, reference_steps = case
    model = _model(path, "bf16", kernels)
    logits, _ = model.forward(tokens)
    scale = reference_seq.std().item()
    assert (logits - reference_seq).abs().max().item() / scale <= BF16_RELATIVE_TOLERANCE
    state = None
    for token, reference in zip(tokens, reference_steps):
        logits, state = model.forward([token], state)
        assert (logits - reference).abs().max().item() / reference.std().item() <= BF16_RELATIVE_TOLERANCE


def test_fp16_weights_within_bf16_tolerance(case) -> None:
    path, tokens, reference_seq, _ = case
    logits, _ = load_model(path, device="cpu", dtype="fp16").forward(tokens)
    assert (logits - reference_seq).abs().max().item() / reference_seq.std().item() <= BF16_RELATIVE_TOLERANCE


def test_forward_never_mutates_the_given_state(tiny_model) -> None:
    _, state = tiny_model.forward([1, 2, 3])
    before = state.clone()
    tiny_model.forward([4, 5, 6, 7], state)
    tiny_model.forward([8], state)
    assert state.equal(before) and state.tokens_seen == before.tokens_seen


def test_forward_all_matches_stepwise(tiny_model) -> None:
    tokens = [3, 1, 4, 1, 5, 9, 2, 6]
    all_logits, final = tiny_model.forward_all(tokens)
    state = None
    for i, token in enumerate(tokens):
        logits, state = tiny_model.forward([token], state)
        assert torch.allclose(all_logits[i], logits, atol=1e-4)
    assert torch.allclose(final.wkv, state.wkv, atol=1e-5)


def test_out_of_vocabulary_token_is_a_clear_error(tiny_model) -> None:
    from engine import EngineError

    with pytest.raises(EngineError, match="outside this model's vocabulary"):
        tiny_model.forward([1, 256])
    with pytest.raises(EngineError, match="at least one token"):
        tiny_model.forward([])


def test_mismatched_state_is_rejected(tiny_model, tmp_path: Path) -> None:
    from engine import StateError

    other = load_model(save_checkpoint(random_state_dict(1, 64, 256), tmp_path / "o.pth"), device="cpu")
    with pytest.raises(StateError, match="does not fit this model"):
        tiny_model.forward([1], other.zero_state())
