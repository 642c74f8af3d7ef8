"""The CUDA kernels and the CUDA backend's Python code, checked on the CPU.

The unchanged .cu sources run on a CPU emulator (tests/engine/cuda_emu), and CudaBackend runs
its real prefill/decode code on top of them with CPU tensors. The oracle is our CPU backend in
fp32 (itself checked against the rwkv pip package). What this cannot check, a GPU test does:
races between blocks, the torch binding, CUDA graphs and speed (test_cuda_gpu.py).
"""

from __future__ import annotations

from functools import lru_cache

import pytest
import torch

from engine.backends.cpu import CpuBackend
from engine.backends.cpu_native import TorchKernels
from engine.backends.cuda import CudaBackend
from engine.checkpoint import infer_config
from engine.state import State
from engine.synthetic import random_state_dict


@lru_cache(maxsize=1)
def _ops():
    from tests.engine.cuda_emu.ops import EmulatedOps

    return EmulatedOps()


@pytest.fixture(scope="module")
def ops():
    try:
        return _ops()
    except RuntimeError as exc:
        pytest.skip(f"CUDA emulator unavailable: {exc}")


def _relative(got: torch.Tensor, want: torch.Tensor) -> float:
    return ((got.float() - want.float()).abs().max() / want.float().std()).item()


def _random_state(config, seed: int = 0) -> State:
    gen = torch.Generator().manual_seed(seed)
    state = State.zeros(config)
    state.att_x.normal_(generator=gen)
    state.ffn_x.normal_(generator=gen)
    state.wkv.normal_(generator=gen).mul_(0.5)
    return state


def _model(n_layer=2, n_embd=128, vocab=256, seed=7, dtype=torch.float32, **kwargs):
    state_dict = random_state_dict(n_layer, n_embd, vocab, seed=seed, dtype=dtype, **kwargs)
    return state_dict, infer_config(state_dict)


# ---------------------------------------------------------------- the WKV sequence kernel


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_wkv_sequence_kernel_matches_the_cpu_recurrence_for_a_batch(ops, dtype):
    """Batch of 2 with a batch stride larger than one state (states inside a bigger buffer)."""
    gen = torch.Generator().manual_seed(1)
    batch, steps, heads, n = 2, 9, 2, 64
    channels = heads * n

    def rand(*shape, scale=1.0):
        return (torch.randn(*shape, generator=gen) * scale).to(dtype)

    r, k, v = rand(batch, steps, channels), rand(batch, steps, channels, scale=0.3), rand(batch, steps, channels)
    kk = torch.nn.functional.normalize(torch.randn(batch, steps, heads, n, generator=gen), dim=-1)
    iclr = torch.rand(batch, steps, heads, n, generator=gen)
    a = (-kk).reshape(batch, steps, channels).to(dtype)
    b = (kk * iclr).reshape(batch, steps, channels).to(dtype)
    w = torch.exp(-0.6065306597126334 * torch.rand(batch, steps, channels, generator=gen))
    storage = torch.randn(batch, heads + 1, n, n, generator=gen)  # one spare head per sequence
    state_in = storage[:, :heads]
    state_out = torch.zeros(batch, heads + 1, n, n)[:, :heads]
    y = torch.empty(batch, steps, channels)

    ops.wkv_seq(state_in, state_out, r, w, k, v, a, b, y)

    reference = TorchKernels()
    for e in range(batch):
        want_y, want_state = reference.wkv7(
            state_in[e], *(t[e].float() for t in (r, w, k, v, a, b))
        )
        assert torch.allclose(y[e], want_y, rtol=1e-4, atol=1e-4)
        assert torch.allclose(state_out[e], want_state, rtol=1e-4, atol=1e-4)


def test_wkv_sequence_kernel_updates_in_place_exactly_as_out_of_place(ops):
    gen = torch.Generator().manual_seed(2)
    steps, channels = 5, 128
    inputs = [torch.randn(1, steps, channels, generator=gen) * 0.3 for _ in range(6)]
    inputs[1] = torch.rand(1, steps, channels, generator=gen) * 0.4 + 0.55  # decay in (0.55, 0.95)
    state = torch.randn(1, 2, 64, 64, generator=gen)
    separate, y1, y2 = torch.empty_like(state), torch.empty(1, steps, channels), torch.empty(1, steps, channels)
    ops.wkv_seq(state, separate, *inputs, y1)
    in_place = state.clone()
    ops.wkv_seq(in_place, in_place, *inputs, y2)
    assert torch.equal(in_place, separate) and torch.equal(y1, y2)


# ---------------------------------------------------------------- the whole backend


@pytest.mark.parametrize(
    "dtype, tolerance",
    [(torch.float32, 1e-4), (torch.float16, 2e-2), (torch.bfloat16, 2e-2)],
)
def test_prefill_then_decode_matches_the_cpu_fp32_backend(ops, dtype, tolerance):
    """Prefill (sequence kernels) and three decoded tokens (decode driver) from a non-zero
    state; checkpoint in bf16 like released models. Unequal LoRA ranks, one not a multiple of
    8, exercise the segmented GEMV's scalar path and its segment bookkeeping."""
    state_dict, config = _model(3, 128, 300, seed=11, dtype=torch.bfloat16, ranks=(24, 20, 40, 32))
    cpu = CpuBackend(state_dict, config, torch.float32)
    gpu = CudaBackend(state_dict, config, dtype, "cpu", ops=ops)
    start = _random_state(config)
    prompt = [5, 17, 99, 3, 200, 41, 0, 299, 17]

    want, want_state = cpu.forward(prompt, start)
    got, got_state = gpu.forward(prompt, start)
    assert _relative(got, want) <= tolerance
    for name in ("att_x", "wkv", "ffn_x"):
        assert _relative(getattr(got_state, name), getattr(want_state, name)) <= tolerance
    assert got_state.tokens_seen == start.tokens_seen + len(prompt)

    for token in (7, 250, 7):
        want, want_state = cpu.forward([token], want_state)
        got, got_state = gpu.forward([token], got_state)
        assert _relative(got, want) <= tolerance
        assert _relative(got_state.wkv, want_state.wkv) <= tolerance


def test_decode_never_modifies_the_state_it_is_given(ops):
    state_dict, config = _model()
    gpu = CudaBackend(state_dict, config, torch.float16, "cpu", ops=ops)
    start = _random_state(config)
    before = start.clone()
    gpu.forward([3], start)
    gpu.forward([3, 4, 5], start)
    assert start.equal(before)


def test_decoding_twice_gives_bit_identical_results(ops):
    """The last-block epilogues re-arm their counters; a stale counter would skip or repeat
    a LayerNorm on the next token."""
    state_dict, config = _model()
    gpu = CudaBackend(state_dict, config, torch.float32, "cpu", ops=ops)
    start = _random_state(config)
    first, first_state = gpu.forward([42], start)
    second, second_state = gpu.forward([42], start)
    assert torch.equal(first, second) and first_state.equal(second_state)


def test_all_logits_has_one_row_per_token_and_ends_with_forward(ops):
    state_dict, config = _model()
    gpu = CudaBackend(state_dict, config, torch.float32, "cpu", ops=ops)
    cpu = CpuBackend(state_dict, config, torch.float32)
    tokens = [1, 2, 3, 4]
    rows, _ = gpu.forward(tokens, State.zeros(config), all_logits=True)
    want, _ = cpu.forward(tokens, State.zeros(config), all_logits=True)
    assert rows.shape == (4, config.vocab)
    assert _relative(rows, want) < 1e-4
    last, _ = gpu.forward(tokens, State.zeros(config))
    assert torch.allclose(rows[-1], last, atol=1e-4)
    one, _ = gpu.forward([9], State.zeros(config), all_logits=True)
    assert one.shape == (1, config.vocab)


def test_greedy_continuation_in_fp32_matches_the_cpu_token_for_token(ops):
    """The GPU test runs 512 tokens; 32 keep this emulated version fast."""
    state_dict, config = _model(2, 128, 256, seed=5)
    cpu = CpuBackend(state_dict, config, torch.float32)
    gpu = CudaBackend(state_dict, config, torch.float32, "cpu", ops=ops)
    prompt = [10, 20, 30]
    cpu_logits, cpu_state = cpu.forward(prompt, State.zeros(config))
    gpu_logits, gpu_state = gpu.forward(prompt, State.zeros(config))
    cpu_tokens, gpu_tokens = [], []
    for _ in range(32):
        cpu_tokens.append(int(cpu_logits.argmax()))
        gpu_tokens.append(int(gpu_logits.argmax()))
        cpu_logits, cpu_state = cpu.forward([cpu_tokens[-1]], cpu_state)
        gpu_logits, gpu_state = gpu.forward([gpu_tokens[-1]], gpu_state)
    assert gpu_tokens == cpu_tokens


def test_sparse_ffn_with_mostly_zero_activations(ops):
    """Zero most FFN key rows so whole chunks of the split-F product have nothing to add."""
    state_dict, config = _model(2, 128, 256, seed=3)
    for i in range(config.n_layer):
        key = state_dict[f"blocks.{i}.ffn.key.weight"]
        key[torch.arange(key.shape[0]) % 10 != 3] = 0.0
    cpu = CpuBackend(state_dict, config, torch.float32)
    gpu = CudaBackend(state_dict, config, torch.float32, "cpu", ops=ops)
    start = _random_state(config, seed=4)
    want, _ = cpu.forward([77], start)
    got, _ = gpu.forward([77], start)
    assert _relative(got, want) < 1e-4


def test_wide_model_uses_several_column_tiles(ops):
    """C = 1088 in fp32 needs two 256-thread column tiles in the sparse FFN kernel and
    17 heads; a single layer keeps it quick."""
    state_dict, config = _model(1, 1088, 64, seed=9)
    cpu = CpuBackend(state_dict, config, torch.float32)
    gpu = CudaBackend(state_dict, config, torch.float32, "cpu", ops=ops)
    start = _random_state(config, seed=1)
    want, want_state = cpu.forward([5], start)
    got, got_state = gpu.forward([5], start)
    assert _relative(got, want) < 1e-4
    assert _relative(got_state.ffn_x, want_state.ffn_x) < 1e-4


def test_unsupported_head_size_is_a_one_line_backend_error(ops):
    from engine.errors import BackendError

    state_dict, config = _model(1, 128, 64, head_size=32)
    with pytest.raises(BackendError, match="head size 64"):
        CudaBackend(state_dict, config, torch.float16, "cpu", ops=ops)


@pytest.mark.parametrize("n_layer", [1, 3])
def test_a_decoded_token_costs_six_launches_per_layer_plus_two(ops, n_layer):
    """Launch gaps bound small models at batch 1, so the fusion is part of the design:
    embedding + 6 per layer (LayerNorms run as last-block epilogues) + head."""
    state_dict, config = _model(n_layer, 128, 64)
    gpu = CudaBackend(state_dict, config, torch.float16, "cpu", ops=ops)
    before = ops.launch_count()
    gpu.forward([3], State.zeros(config))
    assert ops.launch_count() - before == 6 * n_layer + 2
