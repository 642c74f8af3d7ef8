"""The chunked WKV-7 form used for training must be the recurrence of rwkv7-engine.md §2.2."""

from __future__ import annotations

import pytest
import torch

from tools.train.wkv import wkv_chunked, wkv_sequential


def _inputs(batch: int, steps: int, heads: int, size: int, dtype: torch.dtype, seed: int = 0) -> list[torch.Tensor]:
    """Realistic operands: decays in (0.545, 1), a = −kk and b = kk·iclr with ‖kk‖ = 1."""
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen, dtype=dtype)

    shape = (batch, steps, heads, size)
    kk = torch.nn.functional.normalize(randn(*shape), dim=-1)
    iclr = torch.sigmoid(randn(*shape))
    log_w = -0.6065306597126334 * torch.sigmoid(2 * randn(*shape))
    return [randn(*shape), log_w, randn(*shape), randn(*shape), -kk, kk * iclr]


@pytest.mark.parametrize("steps", [1, 15, 16, 37, 64])
def test_chunked_equals_sequential_in_float64(steps: int) -> None:
    args = _inputs(2, steps, 3, 16, torch.float64)
    state = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    y_ref, s_ref = wkv_sequential(*args, state=state)
    y, s = wkv_chunked(*args, state=state, chunk=16)
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(s, s_ref, rtol=1e-10, atol=1e-10)


def test_chunked_float32_stays_close_over_a_long_sequence() -> None:
    """fp32 training precision: 256 tokens with the strongest decays still match to ~1e-5 relative."""
    args64 = _inputs(1, 256, 1, 64, torch.float64, seed=3)
    args64[1] = torch.full_like(args64[1], -0.6065306597126334)  # every channel at the fastest decay
    y_ref, _ = wkv_sequential(*args64)
    y, _ = wkv_chunked(*[a.float() for a in args64])
    assert (y.double() - y_ref).abs().max().item() <= 1e-5 * max(1.0, y_ref.abs().max().item())


def test_gradcheck_on_a_tiny_case() -> None:
    args = [a.requires_grad_() for a in _inputs(1, 5, 1, 3, torch.float64, seed=1)]
    state = torch.randn(1, 1, 3, 3, dtype=torch.float64, requires_grad=True)

    def fn(*xs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return wkv_chunked(*xs[:6], state=xs[6], chunk=2)

    assert torch.autograd.gradcheck(fn, (*args, state), eps=1e-6, atol=1e-6)


def test_gradients_match_the_sequential_loop() -> None:
    base = _inputs(2, 40, 2, 8, torch.float64, seed=2)
    weights = torch.randn(2, 40, 2, 8, dtype=torch.float64)
    grads = []
    for fn in (wkv_sequential, wkv_chunked):
        args = [a.clone().requires_grad_() for a in base]
        y, s = fn(*args)
        ((y * weights).sum() + s.square().sum()).backward()
        grads.append([a.grad for a in args])
    for g_ref, g in zip(*grads):
        torch.testing.assert_close(g, g_ref, rtol=1e-9, atol=1e-9)
