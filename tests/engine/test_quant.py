"""Block-quantized weights: the reference format (engine/quant.py) and the native kernels that
read it, on every instruction-set path this machine can run (its best, AVX2 without AVX-512,
and the portable C), at the edges a model shape never reaches: widths that are not a multiple
of the block, row counts that are not a multiple of the row group, all-zero blocks, sparsity
from none to full, and the thread count."""

from __future__ import annotations

import platform

import pytest
import torch

from engine.backends.cpu_native import NativeKernels, TorchKernels, build_variant, get_kernels
from engine.errors import EngineError
from engine.quant import GROUP, QuantizedMatrix

FORMATS = ["int8", "q4"]
SHAPES = [(1, 16), (7, 40), (64, 768), (130, 100), (5, 3), (9, 64)]


@pytest.fixture(scope="module", params=["best", "avx2", "portable"])
def native(request) -> NativeKernels:
    """The kernels as built for this CPU, and as built for lesser ones."""
    best = get_kernels()
    if not isinstance(best, NativeKernels):
        pytest.skip("no C compiler: native kernels unavailable")
    if request.param == "best":
        return best
    if platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip("instruction-set variants are x86 flags")
    return build_variant(["-march=haswell"] if request.param == "avx2" else [])


def _weights(rows: int, cols: int, seed: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, cols, generator=gen) * 0.05
    w[0, : min(cols, GROUP)] = 0.0  # an all-zero block
    if rows > 3:
        w[3, -1] = 0.9  # an outlier that sets its block's scale
    return w.to(dtype)


# ---------------------------------------------------------------------- the reference format


@pytest.mark.parametrize("fmt", FORMATS)
def test_rounding_error_is_at_most_half_a_level(fmt) -> None:
    w = _weights(33, 100, 1)
    q = QuantizedMatrix.quantize(w, fmt)
    back = q.dequantize()
    assert back.shape == w.shape and q.stride == 128
    step = (q.d.float() * q.scale).abs().repeat_interleave(GROUP, dim=1)[:, :100]
    # Q4_0 maps the block's largest weight to -8, so +peak lands at +7: one level off at most there
    bound = step * (0.5 if fmt == "int8" else 1.0) + 1e-7
    assert ((back - w).abs() <= bound).all()


def test_q4_is_q4_0_nibbles_in_column_order() -> None:
    w = torch.arange(GROUP, dtype=torch.float32).unsqueeze(0) - 8.0  # -8 … 23: peak 23 → d = 23/-8
    q = QuantizedMatrix.quantize(w, "q4")
    levels = q.levels()[0]
    assert levels[-1] == -8 and q.q.dtype == torch.uint8 and q.q.shape == (1, GROUP // 2)
    low, high = q.q[0] & 15, q.q[0] >> 4
    assert torch.equal(torch.cat((low, high)).to(torch.int16) - 8, levels)


@pytest.mark.parametrize("fmt", FORMATS)
def test_padding_and_zero_blocks_stay_zero(fmt) -> None:
    w = torch.zeros(2, 40)
    w[1, 35] = -1.5
    q = QuantizedMatrix.quantize(w, fmt)
    assert torch.equal(q.levels()[0], torch.zeros(64, dtype=torch.int16))
    assert q.levels()[1, 40:].eq(0).all() and q.dequantize()[1, 35].item() == pytest.approx(-1.5, rel=1e-3)
    assert QuantizedMatrix.quantize(torch.zeros(3, 8), fmt).dequantize().eq(0).all()


@pytest.mark.parametrize("fmt", FORMATS)
def test_non_finite_weights_are_refused(native, fmt) -> None:
    w = _weights(4, 64, 2)
    w[2, 7] = float("nan")
    for kernels in (TorchKernels(), native):
        with pytest.raises(EngineError, match="not finite"):
            kernels.quantize(w, fmt)


# ---------------------------------------------------------------------- native kernels


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("rows,cols", SHAPES)
def test_native_quantizer_equals_the_reference_bit_for_bit(native, fmt, dtype, rows, cols) -> None:
    w = _weights(rows, cols, rows + cols, dtype)
    ours, reference = native.quantize(w, fmt, 2), QuantizedMatrix.quantize(w, fmt)
    assert torch.equal(ours.q, reference.q) and torch.equal(ours.d, reference.d)
    assert ours.scale == reference.scale and ours.shape == reference.shape


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("rows,cols", SHAPES)
def test_native_dequantize_matches_the_reference(native, fmt, rows, cols) -> None:
    q = QuantizedMatrix.quantize(_weights(rows, cols, 3), fmt)
    assert torch.allclose(native.dequantize(q, 2), q.dequantize(), rtol=1e-6, atol=0)


def _bound(dense: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """What rounding x to 16 bits per block may cost a product: each x[i] moves by at most half
    a step of its block (max|x| / 32767), plus fp32 rounding of the sums."""
    cols = x.shape[0]
    padded = torch.nn.functional.pad(x.abs(), (0, -cols % GROUP)).view(-1, GROUP)
    step = (padded.amax(1) / 32767).repeat_interleave(GROUP)[:cols]
    magnitude = dense.abs().double() @ x.abs().double()
    return (dense.abs().double() @ (0.5 * step).double() + magnitude * 1e-6).float() + 1e-6


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("rows,cols", SHAPES)
def test_matvec_matches_the_dequantized_product(native, fmt, rows, cols) -> None:
    q = QuantizedMatrix.quantize(_weights(rows, cols, rows * cols), fmt)
    dense = q.dequantize()
    x = torch.randn(cols, generator=torch.Generator().manual_seed(cols))
    x[: min(cols, GROUP)] *= 1000.0  # blocks of very different magnitude
    expected = (dense.double() @ x.double()).float()
    results = [native.matvec(q, x, threads) for threads in (1, 2, 3)]
    assert ((results[0] - expected).abs() <= _bound(dense, x)).all(), (results[0] - expected).abs().max()
    for other in results[1:]:
        assert torch.equal(other, results[0])


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("cols", [768, 40, 100, 3, 64])
@pytest.mark.parametrize("nonzero", [0, 1, 3, 37, 500, 1000])
def test_sparse_vecmat_matches_a_dense_product(native, fmt, cols, nonzero) -> None:
    inner = 1000
    gen = torch.Generator().manual_seed(cols + nonzero)
    q = QuantizedMatrix.quantize(_weights(inner, cols, cols), fmt)
    h = torch.zeros(inner)
    picked = torch.randperm(inner, generator=gen)[:nonzero]
    h[picked] = torch.rand(nonzero, generator=gen) + 0.1
    expected = (h.double() @ q.dequantize().double()).float()
    results = [native.sparse_vecmat(q, h, threads) for threads in (1, 2, 3)]
    assert torch.allclose(results[0], expected, rtol=1e-5, atol=1e-5), (results[0] - expected).abs().max()
    for other in results[1:]:
        assert torch.equal(other, results[0])
    if nonzero == 0:
        assert not results[0].any()


@pytest.mark.parametrize("fmt", FORMATS)
def test_torch_kernels_read_quantized_weights_too(fmt) -> None:
    q = QuantizedMatrix.quantize(_weights(12, 70, 5), fmt)
    x, h = torch.randn(70), torch.relu(torch.randn(12))
    torch_kernels = TorchKernels()
    assert torch.allclose(torch_kernels.matvec(q, x), q.dequantize() @ x, atol=1e-5)
    assert torch.allclose(torch_kernels.sparse_vecmat(q, h), h @ q.dequantize(), atol=1e-5)


# ---------------------------------------------------------------------- whole models


class _OpByOp(NativeKernels):
    """Given kernels without the fused decode, so the backend takes its per-op path."""

    decode = None  # type: ignore[assignment]

    def __init__(self, kernels: NativeKernels) -> None:
        self.__dict__.update(kernels.__dict__)


@pytest.fixture(scope="module")
def odd_model_path(tmp_path_factory):
    """Widths and ranks that are not multiples of the block (40, 100; ranks 8/12/4/20)."""
    from engine.synthetic import random_state_dict, save_checkpoint

    sd = random_state_dict(2, 40, 257, head_size=8, ffn_dim=100, ranks=(8, 12, 4, 20), seed=4)
    return save_checkpoint(sd, tmp_path_factory.mktemp("quant") / "odd.pth")


@pytest.mark.parametrize("fmt", FORMATS)
def test_fused_decode_on_every_path_matches_its_op_by_op_forward(native, odd_model_path, fmt) -> None:
    from engine import load_model

    fused = load_model(odd_model_path, device="cpu", dtype=fmt)
    fused.backend.kernels = native
    op_by_op = load_model(odd_model_path, device="cpu", dtype=fmt)
    op_by_op.backend.kernels = _OpByOp(native)
    _, state = op_by_op.forward([3, 1, 4, 1, 5])
    fused_state = state
    for token in [0, 9, 256, 42]:
        logits, fused_state = fused.forward([token], fused_state)
        expected, state = op_by_op.forward([token], state)
        # The op-by-op path runs the LoRA products in torch on unrounded inputs; the fused
        # kernel rounds every product's input to 16 bits per block (2^-16 of the block's max).
        assert (logits - expected).abs().max().item() <= 1e-3 * expected.std().item()
        assert (fused_state.wkv - state.wkv).abs().max().item() <= 1e-3 * state.wkv.abs().max().item()
