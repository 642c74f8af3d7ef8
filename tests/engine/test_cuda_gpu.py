"""The CUDA backend on a real NVIDIA GPU (skipped without one).

Oracles: our CPU backend in fp32 (checked against the rwkv pip package elsewhere) and the rwkv
pip package itself in its CUDA fp16 mode, run in a subprocess because it is configured by
environment variables read at import. Deviation is max|Δ| / std(reference logits).
Run them all with benchmarks/run_cuda_checks.sh tests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from engine import build_model
from engine.backends.cpu_native import TorchKernels
from engine.checkpoint import infer_config
from engine.state import State
from engine.synthetic import official_shape_state_dict, random_state_dict, save_checkpoint

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU visible to torch"),
]

TOLERANCE = 2e-2


def _relative(got: torch.Tensor, want: torch.Tensor) -> float:
    got, want = got.float().cpu(), want.float().cpu()
    assert torch.isfinite(got).all(), "non-finite logits"
    return ((got - want).abs().max() / want.std()).item()


def _prompt(length: int, vocab: int, seed: int) -> list[int]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(1, vocab, (length,), generator=gen).tolist()


def _free_gpu() -> None:
    import gc

    gc.collect()
    torch.cuda.empty_cache()


@pytest.fixture(scope="module")
def extension():
    from engine.backends.cuda_build import load_extension

    return load_extension()


# ---------------------------------------------------------------- kernels


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_wkv_sequence_kernel_matches_the_cpu_recurrence(extension, dtype):
    gen = torch.Generator().manual_seed(0)
    batch, steps, heads, n = 3, 67, 4, 64
    channels = heads * n
    r = torch.randn(batch, steps, channels, generator=gen)
    k = torch.randn(batch, steps, channels, generator=gen) * 0.3
    v = torch.randn(batch, steps, channels, generator=gen)
    kk = torch.nn.functional.normalize(torch.randn(batch, steps, heads, n, generator=gen), dim=-1)
    iclr = torch.rand(batch, steps, heads, n, generator=gen)
    a, b = -kk.reshape(batch, steps, channels), (kk * iclr).reshape(batch, steps, channels)
    w = torch.exp(-0.6065306597126334 * torch.rand(batch, steps, channels, generator=gen))
    state = torch.randn(batch, heads, n, n, generator=gen)
    narrow = [t.to(dtype) for t in (r, k, v, a, b)]

    dev = [t.cuda() for t in narrow]
    state_out = torch.empty(batch, heads, n, n, device="cuda")
    y = torch.empty(batch, steps, channels, device="cuda")
    extension.wkv_seq(state.cuda(), state_out, dev[0], w.cuda(), dev[1], dev[2], dev[3], dev[4], y)
    torch.cuda.synchronize()

    for e in range(batch):
        want_y, want_state = TorchKernels().wkv7(
            state[e], narrow[0][e].float(), w[e], narrow[1][e].float(), narrow[2][e].float(),
            narrow[3][e].float(), narrow[4][e].float(),
        )
        assert torch.allclose(y[e].cpu(), want_y, rtol=1e-4, atol=1e-4)
        assert torch.allclose(state_out[e].cpu(), want_state, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------- logits vs references


@pytest.fixture(scope="module", params=["0.1b", "1.5b"])
def shaped(request):
    """A random checkpoint with a released model's shapes, and CPU fp32 reference logits
    for a 64-token prompt followed by 4 decoded tokens."""
    size = request.param
    state_dict = official_shape_state_dict(size, seed=1)
    prompt = _prompt(64, 65536, seed=2)
    follow = _prompt(4, 65536, seed=3)
    cpu = build_model(state_dict, device="cpu", dtype="fp32")
    logits, state = cpu.forward(prompt)
    reference = [logits]
    for token in follow:
        logits, state = cpu.forward([token], state)
        reference.append(logits)
    del cpu
    yield size, state_dict, prompt, follow, reference


@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
def test_logits_match_the_cpu_fp32_path(shaped, dtype):
    size, state_dict, prompt, follow, reference = shaped
    model = build_model(state_dict, device="cuda", dtype=dtype)
    assert model.info.device.startswith("cuda") and model.info.device_note == ""
    logits, state = model.forward(prompt)
    deviations = [_relative(logits, reference[0])]
    for token, want in zip(follow, reference[1:]):
        logits, state = model.forward([token], state)
        deviations.append(_relative(logits, want))
    del model
    _free_gpu()
    assert max(deviations) <= TOLERANCE, f"{size} {dtype}: prefill, decode deviations {deviations}"


_PIP_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    os.environ["RWKV_V7_ON"] = "1"
    os.environ["RWKV_CUDA_ON"] = "1"
    import torch
    from rwkv.model import RWKV
    path, prompt, follow, out = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3]), sys.argv[4]
    model = RWKV(model=path[:-4], strategy="cuda fp16")
    logits, state = model.forward(prompt, None)
    rows = [logits.float().cpu()]
    for token in follow:
        logits, state = model.forward([token], state)
        rows.append(logits.float().cpu())
    torch.save(torch.stack(rows), out)
    """
)


def test_fp16_logits_match_the_rwkv_pip_package_in_cuda_fp16_mode(shaped, tmp_path):
    pytest.importorskip("rwkv", reason="the rwkv pip package (test extra) is not installed")
    size, state_dict, prompt, follow, _ = shaped
    path = save_checkpoint(state_dict, tmp_path / f"random-{size}.pth")
    out = tmp_path / "pip-logits.pt"
    result = subprocess.run(
        [sys.executable, "-c", _PIP_SCRIPT, str(path), json.dumps(prompt), json.dumps(follow), str(out)],
        capture_output=True, text=True, timeout=1200,
        env={**os.environ, "RWKV_V7_ON": "1", "RWKV_CUDA_ON": "1"},
    )
    assert result.returncode == 0, f"rwkv pip package failed:\n{result.stderr[-3000:]}"
    theirs = torch.load(out, weights_only=True)

    model = build_model(state_dict, device="cuda", dtype="fp16")
    logits, state = model.forward(prompt)
    deviations = [_relative(logits, theirs[0])]
    for token, want in zip(follow, theirs[1:]):
        logits, state = model.forward([token], state)
        deviations.append(_relative(logits, want))
    del model
    _free_gpu()
    assert max(deviations) <= TOLERANCE, f"{size}: prefill, decode deviations {deviations}"


# ---------------------------------------------------------------- exactness and graphs


@pytest.fixture(scope="module")
def small_dict():
    return random_state_dict(4, 256, 1024, seed=21)


def test_greedy_512_tokens_in_fp32_on_the_gpu_equal_the_cpu_fp32_path(small_dict):
    cpu = build_model(small_dict, device="cpu", dtype="fp32")
    gpu = build_model(small_dict, device="cuda", dtype="fp32")
    prompt = _prompt(20, 1024, seed=5)
    cpu_logits, cpu_state = cpu.forward(prompt)
    gpu_logits, gpu_state = gpu.forward(prompt)
    cpu_tokens, gpu_tokens = [], []
    for _ in range(512):
        cpu_tokens.append(int(cpu_logits.argmax()))
        gpu_tokens.append(int(gpu_logits.argmax()))
        cpu_logits, cpu_state = cpu.forward([cpu_tokens[-1]], cpu_state)
        gpu_logits, gpu_state = gpu.forward([gpu_tokens[-1]], gpu_state)
    first_difference = next((i for i, (a, b) in enumerate(zip(cpu_tokens, gpu_tokens)) if a != b), None)
    assert first_difference is None, f"tokens differ from position {first_difference}"


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_graph_replay_equals_eager_launches_bit_for_bit(extension, small_dict, dtype):
    from engine.backends.cuda import CudaBackend

    config = infer_config(small_dict)
    graphed = CudaBackend(small_dict, config, dtype, "cuda", use_graph=True)
    eager = CudaBackend(small_dict, config, dtype, "cuda", use_graph=False)
    prompt = _prompt(37, 1024, seed=6)
    g_logits, g_state = graphed.forward(prompt, State.zeros(config))
    e_logits, e_state = eager.forward(prompt, State.zeros(config))
    assert torch.equal(g_logits, e_logits) and g_state.equal(e_state)
    for step in range(24):
        token = int(g_logits.argmax())
        g_logits, g_state = graphed.forward([token], g_state)
        e_logits, e_state = eager.forward([token], e_state)
        assert torch.equal(g_logits, e_logits), f"logits differ at step {step}"
        assert g_state.equal(e_state), f"state differs at step {step}"
    assert graphed.graph_active and not eager.graph_active


def test_states_are_values_and_move_between_cpu_and_gpu(small_dict):
    """A state is never modified by forward, and a GPU state continues on the CPU."""
    cpu = build_model(small_dict, device="cpu", dtype="fp32")
    gpu = build_model(small_dict, device="cuda", dtype="fp32")
    prompt = _prompt(300, 1024, seed=8)  # more than one 256-token chunk
    _, state = gpu.forward(prompt)
    before = state.clone()
    first, _ = gpu.forward([5], state)
    second, _ = gpu.forward([5], state)
    assert torch.equal(first, second) and state.equal(before)
    cpu_next, _ = cpu.forward([5], state.to("cpu"))
    assert _relative(first, cpu_next) < 1e-4
    _, cpu_state = cpu.forward(prompt)
    assert (cpu_state.wkv - state.wkv.cpu()).abs().max() < 1e-3


def test_auto_picks_the_gpu(small_dict):
    model = build_model(small_dict, device="auto")
    assert model.info.device.startswith("cuda")
    assert model.info.dtype == "fp16" and model.info.device_note == ""
    assert model.info.kernels.startswith("cuda")
    rows, _ = model.forward_all([1, 2, 3])
    assert rows.shape == (3, 1024) and rows.device.type == "cpu"
