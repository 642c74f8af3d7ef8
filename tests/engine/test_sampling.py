"""Sampling rules (ChatRWKV order), penalties, bans, hooks and seeded repeatability."""

from __future__ import annotations

import math

import pytest
import torch

from engine import EngineError, Sampler, SamplingParams
from engine.sampling import restore_sampler, snapshot_sampler, truncate_and_sample


def _reference_distribution(logits: torch.Tensor, temperature: float, top_p: float, top_k: int) -> torch.Tensor:
    """ChatRWKV's PIPELINE.sample_logits as an explicit probability vector (full sort).

    One deliberate difference: top_p = 1 means "no truncation". ChatRWKV degenerates to greedy
    there whenever rounding keeps the cumulative sum below 1.0.
    """
    probs = torch.softmax(logits.double(), dim=-1)
    sorted_probs, order = torch.sort(probs, descending=True)
    if top_p < 1.0:
        cumulative = torch.cumsum(sorted_probs, dim=-1)
        cutoff = sorted_probs[int(torch.argmax((cumulative >= top_p).to(torch.uint8)))]
        probs = torch.where(probs < cutoff, 0.0, probs)
    if 0 < top_k < len(probs):
        probs[order[top_k:]] = 0
    probs = probs ** (1.0 / temperature)
    return probs / probs.sum()


@pytest.mark.parametrize(("temperature", "top_p", "top_k"), [(1.0, 0.7, 0), (0.6, 0.9, 0), (1.3, 0.95, 5), (1.0, 1.0, 3)])
def test_empirical_distribution_matches_reference(temperature: float, top_p: float, top_k: int) -> None:
    logits = torch.randn(40, generator=torch.Generator().manual_seed(3)) * 2
    expected = _reference_distribution(logits, temperature, top_p, top_k)
    gen = torch.Generator().manual_seed(11)
    draws = 8000
    counts = torch.zeros(40)
    for _ in range(draws):
        counts[truncate_and_sample(logits, temperature, top_p, top_k, gen)] += 1
    observed = counts / draws
    assert torch.all(observed[expected == 0] == 0), "sampled a token the rules exclude"
    assert (observed - expected.float()).abs().max().item() < 0.02


def test_large_vocabulary_matches_full_sort_reference() -> None:
    logits = torch.randn(65536, generator=torch.Generator().manual_seed(5)) * 3
    expected = _reference_distribution(logits, 1.0, 0.3, 0)
    support = set(torch.nonzero(expected).squeeze(1).tolist())
    assert 5 < len(support) < 150
    gen = torch.Generator().manual_seed(1)
    seen = {truncate_and_sample(logits, 1.0, 0.3, 0, gen) for _ in range(2000)}
    assert seen <= support and len(seen) >= 0.9 * len(support)


def test_zero_temperature_and_zero_top_p_are_greedy() -> None:
    logits = torch.tensor([0.1, 3.0, 2.9, -1.0])
    gen = torch.Generator().manual_seed(0)
    assert all(truncate_and_sample(logits, 0.0, 0.9, 0, gen) == 1 for _ in range(50))
    assert all(truncate_and_sample(logits, 1.0, 0.0, 0, gen) == 1 for _ in range(50))


def test_penalties_follow_chatrwkv_formula() -> None:
    params = SamplingParams(presence_penalty=0.5, frequency_penalty=0.25, penalty_decay=0.5)
    sampler = Sampler(params, vocab_size=4)
    sampler.observe(2)
    sampler.observe(2)
    sampler.observe(3)
    # counts after decay-then-add: token 2: (1*0.5 + 1)*0.5 = 0.75, token 3: 1.0
    adjusted = sampler.adjust(torch.zeros(4))
    assert adjusted[0] == 0 and adjusted[1] == 0
    assert math.isclose(adjusted[2].item(), -(0.5 + 0.75 * 0.25), rel_tol=1e-6)
    assert math.isclose(adjusted[3].item(), -(0.5 + 1.0 * 0.25), rel_tol=1e-6)


def test_occurrence_weight_hook_counts_tokens_differently() -> None:
    sampler = Sampler(SamplingParams(presence_penalty=0, frequency_penalty=1, penalty_decay=1), 4, penalty_exempt=lambda t: 0.3 if t == 1 else 0.0)
    sampler.observe(1)
    sampler.observe(2)
    adjusted = sampler.adjust(torch.zeros(4))
    assert math.isclose(adjusted[1].item(), -0.3, rel_tol=1e-6) and adjusted[2] == 0


def test_bans_and_hooks() -> None:
    calls = []

    def hook(logits: torch.Tensor, step: int) -> None:
        calls.append(step)
        logits[3] += 100

    sampler = Sampler(SamplingParams(temperature=0, ban_tokens=(0,), presence_penalty=0, frequency_penalty=0), 5, logit_hooks=[hook])
    logits = torch.tensor([50.0, 1, 2, 0, 0])
    assert sampler.sample(logits) == 3
    assert sampler.sample(logits) == 3
    assert calls == [0, 1]


def test_everything_banned_is_a_clear_error() -> None:
    sampler = Sampler(SamplingParams(ban_tokens=(0, 1)), 2)
    with pytest.raises(EngineError, match="nothing left to sample"):
        sampler.sample(torch.zeros(2))


def test_seed_repeats_exactly_and_snapshots_resume() -> None:
    logits = torch.randn(1000, generator=torch.Generator().manual_seed(2))
    params = SamplingParams(temperature=1.2, top_p=0.95, seed=42)
    first = Sampler(params, 1000)
    a = [first.sample(logits) for _ in range(30)]
    second = Sampler(params, 1000)
    b = [second.sample(logits) for _ in range(15)]
    snap = snapshot_sampler(second)
    b += [second.sample(logits) for _ in range(15)]
    assert a == b
    restore_sampler(second, snap)
    assert [second.sample(logits) for _ in range(15)] == a[15:]


@pytest.mark.parametrize(
    ("field", "value"),
    [("temperature", -1), ("top_p", 1.5), ("top_k", -2), ("penalty_decay", 2.0), ("max_tokens", 0), ("seed", -3),
     ("seed", 2**64)],
)
def test_invalid_settings_are_rejected(field: str, value: float) -> None:
    with pytest.raises(EngineError, match="invalid sampling setting"):
        SamplingParams(**{field: value}).validate()


def test_the_largest_seed_is_accepted_and_works() -> None:
    """A seed past 64 bits used to pass validation and fail inside torch at the first token."""
    params = SamplingParams(seed=2**64 - 1).validate()
    assert 0 <= Sampler(params, 16).sample(torch.zeros(16)) < 16


def test_params_roundtrip_through_dict() -> None:
    params = SamplingParams(temperature=0.7, ban_tokens=(0, 5), seed=9)
    assert SamplingParams.from_dict(params.to_dict()) == params
