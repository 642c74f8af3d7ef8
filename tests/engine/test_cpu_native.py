"""The native CPU kernels against plain torch, and the fused one-token decode against the
op-by-op forward pass it replaces.

The model-level numerics tests (test_model_numerics.py) hold both paths to the `rwkv` pip
package on realistic shapes; these tests aim at the edges a realistic shape never reaches:
widths that are not a multiple of the vector length, row counts that are not a multiple of the
row block, empty and full sparsity, and the thread count.
"""

from __future__ import annotations

import pytest
import torch

from engine import load_model
from engine.backends.cpu_native import NativeKernels, get_kernels
from engine.state import State
from engine.synthetic import random_state_dict, save_checkpoint

DTYPES = [torch.float32, torch.bfloat16, torch.float16]


@pytest.fixture(scope="module")
def native() -> NativeKernels:
    kernels = get_kernels()
    if not isinstance(kernels, NativeKernels):
        pytest.skip("no C compiler: native kernels unavailable")
    return kernels


class _OpByOp(NativeKernels):
    """The native kernels without the fused decode, so the backend takes its per-op path."""

    decode = None  # type: ignore[assignment]

    def __init__(self, native: NativeKernels) -> None:
        self.__dict__.update(native.__dict__)


def _reference_product(weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return (weight.double() @ x.double()).float()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows,cols", [(1, 16), (7, 40), (64, 768), (130, 100), (5, 3)])
def test_matvec_matches_torch(native, dtype, rows, cols) -> None:
    gen = torch.Generator().manual_seed(rows * cols)
    weight = torch.randn(rows, cols, generator=gen).to(dtype)
    x = torch.randn(cols, generator=gen)
    for threads in (1, 2):
        got = native.matvec(weight, x, threads)
        assert torch.allclose(got, _reference_product(weight.float(), x), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cols", [768, 40, 100, 3])
@pytest.mark.parametrize("nonzero", [0, 1, 3, 37, 500, 1000])
def test_sparse_vecmat_matches_a_dense_product(native, dtype, cols, nonzero) -> None:
    inner = 1000
    gen = torch.Generator().manual_seed(cols + nonzero)
    weight_t = torch.randn(inner, cols, generator=gen).to(dtype)
    h = torch.zeros(inner)
    picked = torch.randperm(inner, generator=gen)[:nonzero]
    h[picked] = torch.rand(nonzero, generator=gen) + 0.1
    expected = (h.double() @ weight_t.double()).float()
    for threads in (1, 2, 3):
        got = native.sparse_vecmat(weight_t, h, threads)
        assert torch.allclose(got, expected, rtol=1e-5, atol=1e-4), (threads, (got - expected).abs().max())
    if nonzero == 0:
        assert not got.any()


def test_wkv7_matches_the_torch_recurrence(native) -> None:
    from engine.backends.cpu_native import TorchKernels

    gen = torch.Generator().manual_seed(3)
    H, N, T = 3, 16, 5
    state = torch.randn(H, N, N, generator=gen)
    r, k, v = (torch.randn(T, H * N, generator=gen) for _ in range(3))
    w = torch.rand(T, H * N, generator=gen) * 0.4 + 0.55
    kk = torch.nn.functional.normalize(torch.randn(T, H, N, generator=gen), dim=-1).view(T, -1)
    a, b = -kk, kk * torch.rand(T, H * N, generator=gen)
    y_ref, s_ref = TorchKernels().wkv7(state, r, w, k, v, a, b)
    y, s = native.wkv7(state, r, w, k, v, a, b, 2)
    assert torch.allclose(y, y_ref, atol=1e-4) and torch.allclose(s, s_ref, atol=1e-5)


# ------------------------------------------------------------------ fused one-token decode

# (n_layer, n_embd, head_size, vocab, ffn_dim, ranks, layer-0 v0/v1/v2)
FUSED_SHAPES = {
    "narrow-odd": (2, 40, 8, 257, 100, (8, 12, 4, 20), True),
    "one-layer": (1, 64, 64, 300, None, (16, 16, 16, 32), False),
    "uneven-ranks": (3, 128, 32, 1000, None, (40, 24, 16, 56), True),
}


@pytest.fixture(scope="module", params=list(FUSED_SHAPES))
def fused_case(request, tmp_path_factory):
    n_layer, n_embd, head_size, vocab, ffn_dim, ranks, layer0_v = FUSED_SHAPES[request.param]
    sd = random_state_dict(
        n_layer, n_embd, vocab, head_size=head_size, ffn_dim=ffn_dim, ranks=ranks,
        layer0_value_residual=layer0_v, seed=n_embd + n_layer,
    )
    return save_checkpoint(sd, tmp_path_factory.mktemp("fused") / f"{request.param}.pth")


def _warm_state(model) -> State:
    """A non-zero state (prefill), so token shift and WKV state both matter to the step."""
    _, state = model.forward([3, 1, 4, 1, 5, 9, 2, 6])
    return state


@pytest.mark.parametrize("dtype", ["fp32", "bf16", "fp16", "int8", "q4"])
def test_fused_decode_matches_the_op_by_op_forward(native, fused_case, dtype) -> None:
    fused = load_model(fused_case, device="cpu", dtype=dtype)
    fused.backend.kernels = native
    op_by_op = load_model(fused_case, device="cpu", dtype=dtype)
    op_by_op.backend.kernels = _OpByOp(native)
    state_fused = state_ops = _warm_state(op_by_op)
    # Quantized products round their input to 16 bits per block, which the op-by-op LoRA
    # products (torch, on dequantized weights) do not.
    tolerance = 1e-3 if dtype in ("int8", "q4") else 1e-4
    for token in [0, 7, fused.info.vocab - 1, 42, 42, 13]:
        logits_fused, state_fused = fused.forward([token], state_fused)
        logits_ops, state_ops = op_by_op.forward([token], state_ops)
        scale = logits_ops.std().item()
        assert (logits_fused - logits_ops).abs().max().item() <= tolerance * scale
        for name in ("att_x", "wkv", "ffn_x"):
            ours, theirs = getattr(state_fused, name), getattr(state_ops, name)
            assert (ours - theirs).abs().max().item() <= tolerance * (theirs.abs().max().item() + 1e-6), name
        assert state_fused.tokens_seen == state_ops.tokens_seen


@pytest.mark.parametrize("dtype", ["bf16", "int8", "q4"])
def test_fused_decode_does_not_depend_on_the_thread_count(native, fused_case, dtype) -> None:
    """Seeded generation must repeat exactly, whatever RWKV_TUI_THREADS says."""
    model = load_model(fused_case, device="cpu", dtype=dtype)
    model.backend.kernels = native
    warm = _warm_state(model)
    results = []
    for threads in (1, 2, 3):
        model.backend.threads = threads
        logits, state = model.forward([11], warm)
        logits, state = model.forward([12], state)
        results.append((logits, state))
    for logits, state in results[1:]:
        assert torch.equal(logits, results[0][0]) and state.equal(results[0][1])


def test_fused_decode_leaves_the_given_state_alone_and_agrees_with_forward_all(native, fused_case) -> None:
    model = load_model(fused_case, device="cpu", dtype="fp32")
    model.backend.kernels = native
    state = _warm_state(model)
    before = state.clone()
    logits, after = model.forward([5], state)
    every, after_all = model.forward_all([5], state)
    assert state.equal(before)
    assert every.shape == (1, model.info.vocab) and torch.equal(every[0], logits)
    assert after.equal(after_all) and not after.equal(before)


@pytest.mark.parametrize("shape", [(12, 12, 64, 64), (3, 5), (2, 1, 7, 1025)])
def test_layer_change_matches_torch_norms(native, shape) -> None:
    gen = torch.Generator().manual_seed(len(shape))
    current = torch.randn(*shape, generator=gen)
    previous = current + 0.01 * torch.randn(*shape, generator=gen)
    norms, deltas = native.layer_change(current, previous)
    flat_current, flat_delta = current.reshape(shape[0], -1).double(), (current - previous).reshape(shape[0], -1).double()
    assert torch.allclose(norms, flat_current.norm(dim=1), rtol=1e-6)
    assert torch.allclose(deltas, flat_delta.norm(dim=1), rtol=1e-5)
