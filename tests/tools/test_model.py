"""The training model is the engine's model: same names, same maths, loadable by every reader."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import engine
from engine.checkpoint import infer_config
from engine.synthetic import random_state_dict, save_checkpoint
from tests.engine.oracle import load_oracle
from tools.train.model import RWKV7, ModelShape, init_weights

TOKENS = [3, 250, 17, 17, 99, 0, 128, 64, 5, 200, 31, 7, 7, 7, 180, 42, 11, 255, 1, 90]


@pytest.fixture(scope="module")
def random_weights() -> dict[str, torch.Tensor]:
    # Random weights with realistic magnitudes exercise every term (the initialiser's zeros would not).
    return random_state_dict(3, 128, 256, seed=11)


def test_state_dict_has_exactly_the_official_names_and_shapes() -> None:
    model = RWKV7(ModelShape(3, 128, 256))
    init_weights(model, seed=0)
    official = random_state_dict(3, 128, 256, ranks=(model.shape.decay_rank, model.shape.iclr_rank,
                                                     model.shape.value_rank, model.shape.gate_rank))
    ours = model.state_dict()
    assert set(ours) == set(official)
    for key, tensor in official.items():
        assert tuple(ours[key].shape) == tuple(tensor.shape), key
    config = infer_config(model.checkpoint())
    assert (config.n_layer, config.n_embd, config.n_head, config.vocab, config.ffn_dim) == (3, 128, 2, 256, 512)


@pytest.mark.parametrize("sequential", [False, True])
def test_training_forward_matches_engine_fp32(random_weights: dict[str, torch.Tensor], sequential: bool) -> None:
    model = RWKV7.from_checkpoint(random_weights)
    with torch.no_grad():
        ours = model(torch.tensor([TOKENS]), sequential=sequential)[0]
    reference, _ = engine.build_model(random_weights, device="cpu", dtype="fp32").forward_all(TOKENS)
    assert (ours - reference).abs().max().item() <= 1e-4
    assert reference.std().item() > 0.5  # the comparison is not between two near-constant outputs


def test_saved_checkpoint_loads_in_engine_and_rwkv_pip(tmp_path: Path, random_weights: dict[str, torch.Tensor]) -> None:
    """A checkpoint as the trainer writes it (bf16 storage) reads the same in both loaders."""
    model = RWKV7.from_checkpoint(random_weights)
    path = save_checkpoint(model.checkpoint(torch.bfloat16), tmp_path / "trained.pth")

    ours = engine.load_model(path, device="cpu", dtype="fp32")
    assert ours.info.n_layer == 3 and ours.info.vocab == 256
    ours_logits, _ = ours.forward_all(TOKENS)

    oracle = load_oracle(path)
    oracle_logits, _ = oracle.forward(TOKENS, None, full_output=True)
    assert (oracle_logits.float() - ours_logits).abs().max().item() <= 1e-4

    # And the bf16-rounded weights are what the training model computes with after reloading.
    reloaded = RWKV7.from_checkpoint(torch.load(path, weights_only=True))
    with torch.no_grad():
        train_logits = reloaded(torch.tensor([TOKENS]))[0]
    assert (train_logits - ours_logits).abs().max().item() <= 1e-4


def test_initialised_model_is_a_valid_checkpoint_with_sane_logits() -> None:
    model = RWKV7(ModelShape(2, 128, 300))
    init_weights(model, seed=3)
    loaded = engine.build_model(model.checkpoint(torch.float32), device="cpu", dtype="fp32")
    logits, _ = loaded.forward(TOKENS)
    # Zero output projections make every block the identity at first: near-uniform predictions.
    assert logits.abs().max().item() < 5.0
    assert torch.isfinite(logits).all()


def test_init_is_deterministic_per_seed() -> None:
    a, b, c = (RWKV7(ModelShape(2, 64, 50)) for _ in range(3))
    init_weights(a, 1)
    init_weights(b, 1)
    init_weights(c, 2)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert not torch.equal(a.head.weight, c.head.weight)
