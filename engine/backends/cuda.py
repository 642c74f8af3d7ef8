"""RWKV-7 forward pass on an NVIDIA GPU with our own kernels (cuda/).

Decoding one token at batch 1 is one call into the extension that launches 6 kernels per
layer (see cuda/decode.cu); it is captured once into a CUDA graph and replayed for every later
token, so the CPU cost per token is a 64-byte copy of the step table and one graph launch.
The state is never updated in place: the kernels read the caller's state and write a fresh
one, whose addresses travel in the step table, so a State stays an immutable value as on the
CPU. Prefill runs a chunk through cuBLAS GEMMs, the fused element-wise kernels and the WKV
sequence kernel, and applies the head to the last token only.

Same interface as :class:`engine.backends.cpu.CpuBackend`. The ``ops`` argument exists for the
tests, which run this exact code on the CPU against an emulator of the kernels.
"""

from __future__ import annotations

import logging
import os
import threading
from contextlib import nullcontext
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F

from engine.backends.cuda_build import load_extension
from engine.backends.cuda_weights import PackedWeights, pack_weights
from engine.checkpoint import ModelConfig
from engine.errors import BackendError
from engine.state import State

log = logging.getLogger(__name__)

_LAYER_NORM_EPS = 1e-5
#: Set to 0 to decode without CUDA graphs (slower for small models; for debugging).
GRAPH_ENV = "RWKV_TUI_CUDA_GRAPH"
#: Head size the kernels are compiled for.
HEAD_SIZE = 64


@dataclass(frozen=True)
class CudaKernels:
    """What ModelInfo.kernels shows."""

    name: str


class CudaBackend:
    """Prepared GPU weights, the decode plan and the forward pass; one per loaded model."""

    def __init__(
        self,
        state_dict: Mapping[str, torch.Tensor],
        config: ModelConfig,
        weight_dtype: torch.dtype,
        device: torch.device | str = "cuda",
        *,
        ops: Any = None,
        use_graph: bool | None = None,
    ) -> None:
        if config.head_size != HEAD_SIZE:
            raise BackendError(
                f"the CUDA kernels need head size {HEAD_SIZE}; this model has {config.head_size}"
            )
        if weight_dtype not in (torch.float16, torch.bfloat16, torch.float32):
            raise BackendError(f"unsupported CUDA weight dtype {weight_dtype}")
        device = torch.device(device)
        # The extension first: it is what reports a missing GPU, toolkit or compiler.
        self.ops: ModuleType | Any = ops if ops is not None else load_extension(device)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        self.device = device
        self.config = config
        self.weight_dtype = weight_dtype
        if use_graph is None:
            use_graph = os.environ.get(GRAPH_ENV, "1") != "0"
        self._use_graph = use_graph and device.type == "cuda"
        self._graph: torch.cuda.CUDAGraph | None = None
        self._fp32_products = True
        #: Inputs of prefill matrix products: fp16 in fp16 mode; fp32 otherwise (bf16 splits them).
        self._activation_dtype = torch.float16 if weight_dtype == torch.float16 else torch.float32
        self._lock = threading.Lock()
        with torch.inference_mode():
            self.weights: PackedWeights = pack_weights(state_dict, config, weight_dtype, device)
            self.plan = self.ops.DecodePlan(
                [
                    config.n_layer, config.n_embd, config.n_head, config.head_size, config.ffn_dim,
                    config.decay_rank, config.iclr_rank, config.gate_rank, config.value_rank,
                    config.vocab, self._sm_count(),
                ],
                self.weights.decode_globals(),
                [layer.decode_fields() for layer in self.weights.layers],
            )
        self.kernels = CudaKernels("cuda+graph" if self._use_graph else "cuda")

    # ------------------------------------------------------------------ public

    def forward(
        self, tokens: Sequence[int], state: State, all_logits: bool = False
    ) -> tuple[torch.Tensor, State]:
        """Logits (last token, or every token with ``all_logits``) and the state after ``tokens``.

        Logits stay on the GPU (fp32); the given state is not modified.
        """
        ids = [int(t) for t in tokens]
        if not ids:
            raise BackendError("forward needs at least one token")
        device_context = torch.cuda.device(self.device) if self.device.type == "cuda" else nullcontext()
        with self._lock, torch.inference_mode(), device_context:
            state = self._on_device(state)
            if len(ids) == 1:
                logits, new = self._decode(ids[0], state)
                return (logits.unsqueeze(0) if all_logits else logits), new
            return self._prefill(ids, state, all_logits)

    @property
    def graph_active(self) -> bool:
        """Whether decoding currently replays a captured CUDA graph."""
        return self._graph is not None

    # ------------------------------------------------------------------ decode

    def _decode(self, token: int, state: State) -> tuple[torch.Tensor, State]:
        new = self._empty_like(state, 1)
        self.plan.set_io(token, state.att_x, new.att_x, state.wkv, new.wkv, state.ffn_x, new.ffn_x)
        if self._graph is not None:
            self._graph.replay()
        else:
            self.plan.step()
            if self._use_graph:
                self._capture()
        return self.plan.logits.clone(), new

    def _capture(self) -> None:
        """Record the decode kernels once (after an eager warm-up step) for replay."""
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph, capture_error_mode="thread_local"):
                self.plan.step()
        except Exception as exc:  # capture is an optimisation: fall back to eager launches
            log.warning("CUDA graph capture failed (%s); decoding without graphs", str(exc).splitlines()[0])
            self._use_graph = False
            self.kernels = CudaKernels("cuda")
            return
        self._graph = graph

    # ------------------------------------------------------------------ prefill

    def _prefill(self, ids: list[int], state: State, all_logits: bool) -> tuple[torch.Tensor, State]:
        """One chunk through the layers.

        Products come out in fp32, and everything between them (token shift, decay, kk, the
        WKV recurrence, GroupNorm, gate) runs on fp32 values; only the inputs of matrix
        products are narrowed, to fp16 in fp16 mode (see _matmul for bf16).
        """
        cfg, w, ops = self.config, self.weights, self.ops
        steps, n_embd, dtype, device = len(ids), cfg.n_embd, self._activation_dtype, self.device
        shape = (n_embd,)
        new = self._empty_like(state, steps)
        mm = self._matmul

        def fp32(*size: int) -> torch.Tensor:
            return torch.empty(*size, dtype=torch.float32, device=device)

        tokens = torch.tensor(ids, dtype=torch.long).to(device)
        x = F.layer_norm(w.emb[tokens].float(), shape, w.ln0_w, w.ln0_b, _LAYER_NORM_EPS)
        mixed = torch.empty(6, steps, n_embd, dtype=dtype, device=device)
        ffn_in = torch.empty(1, steps, n_embd, dtype=dtype, device=device)
        v_first = fp32(steps, n_embd)
        decay, k_wkv, v_wkv, a_wkv, b_wkv, y, gated = (fp32(steps, n_embd) for _ in range(7))
        for i, layer in enumerate(w.layers):
            xn = F.layer_norm(x, shape, layer.ln1_w, layer.ln1_b, _LAYER_NORM_EPS)
            ops.mix_rows(xn, state.att_x[i], layer.att_mix, mixed, new.att_x[i])
            r, k, v = mm(mixed[:3], layer.rkv_t).unbind(0)
            z = mm(torch.tanh(mm(mixed[3], layer.lora_down("w").t())).to(dtype), layer.w2t.t())
            iclr = mm(mm(mixed[4], layer.lora_down("a").t()).to(dtype), layer.a2t.t())
            gate = mm(torch.sigmoid(mm(mixed[5], layer.lora_down("g").t())).to(dtype), layer.g2t.t())
            value_gate = None
            if layer.v2t is not None:
                value_gate = mm(mm(mixed[2], layer.lora_down("v").t()).to(dtype), layer.v2t.t())
            ops.prep_rows(
                k, v, z, iclr, value_gate, layer.w0, layer.a0, layer.v0, layer.k_k, layer.k_a,
                v_first, decay, k_wkv, v_wkv, a_wkv, b_wkv, cfg.n_head,
            )
            ops.wkv_seq(
                state.wkv[i:i + 1], new.wkv[i:i + 1], r.unsqueeze(0), decay.unsqueeze(0),
                k_wkv.unsqueeze(0), v_wkv.unsqueeze(0), a_wkv.unsqueeze(0), b_wkv.unsqueeze(0),
                y.unsqueeze(0),
            )
            ops.gate_rows(y, r, k_wkv, v_wkv, gate, layer.r_k, layer.lnx_w, layer.lnx_b, gated, cfg.n_head)
            x = x + mm(gated.to(dtype), layer.att_out.t())
            xn = F.layer_norm(x, shape, layer.ln2_w, layer.ln2_b, _LAYER_NORM_EPS)
            ops.mix_rows(xn, state.ffn_x[i], layer.ffn_mix.view(1, n_embd), ffn_in, new.ffn_x[i])
            hidden = torch.relu(mm(ffn_in[0], layer.ffn_key.t())).square_()
            x = x + mm(hidden.to(dtype), layer.ffn_value_t)
        if all_logits:
            rows = F.layer_norm(x, shape, w.ln_out_w, w.ln_out_b, _LAYER_NORM_EPS)
            return mm(rows.to(dtype), w.head.t()), new
        last = F.layer_norm(x[-1], shape, w.ln_out_w, w.ln_out_b, _LAYER_NORM_EPS).contiguous()
        logits = fp32(cfg.vocab)
        ops.gemv(w.head, last, logits)
        return logits, new

    def _matmul(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """``a @ b`` for weights ``b`` in the run dtype, returning fp32 accumulated in fp32.

        fp16: fp16 × fp16 on tensor cores, written as fp32 (cuBLAS ``out_dtype``; torch
        versions without it round to fp16 first). bf16: an fp32 activation is split into two
        bf16 terms, hi = bf16(a) and lo = bf16(a - hi), which carry about 16 bits of mantissa,
        and both are multiplied in one GEMM with twice the rows. Rounding activations to
        bf16's 8 bits at every product costs ~2e-2 of logit accuracy on 12-24 layer models;
        the extra rows cost little because prefill chunks of a few hundred tokens are still
        bound by reading the weights. On the CPU (the tests' emulation) products are fp32.
        """
        if b.dtype == torch.float32 or self.device.type != "cuda":
            if b.dtype == torch.bfloat16 and a.dtype == torch.float32:
                hi = a.to(torch.bfloat16).float()
                lo = (a - hi).to(torch.bfloat16).float()
                return torch.matmul(torch.cat((hi, lo), dim=-2), b.float()).unflatten(-2, (2, -1)).sum(-3)
            return torch.matmul(a.float(), b.float())
        if b.dtype == torch.bfloat16:
            hi = a.to(torch.bfloat16)
            lo = (a - hi.float()).to(torch.bfloat16)
            both = self._product(torch.cat((hi, lo), dim=-2), b)
            return both.unflatten(-2, (2, -1)).sum(-3)
        return self._product(a, b)

    def _product(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Same-dtype GEMM with an fp32 result (cuBLAS writes fp32 when torch supports it)."""
        if self._fp32_products:
            try:
                if a.dim() == 3:
                    return torch.bmm(a, b, out_dtype=torch.float32)
                return torch.mm(a, b, out_dtype=torch.float32)
            except (TypeError, RuntimeError, NotImplementedError) as exc:
                log.info("fp32-output GEMM unavailable (%s); prefill products round to %s first",
                         str(exc).splitlines()[0], a.dtype)
                self._fp32_products = False
        return torch.matmul(a, b).float()

    # ------------------------------------------------------------------ helpers

    def _on_device(self, state: State) -> State:
        state = state.to(self.device)
        if all(t.is_contiguous() for t in (state.att_x, state.wkv, state.ffn_x)):
            return state
        return State(
            att_x=state.att_x.contiguous(), wkv=state.wkv.contiguous(), ffn_x=state.ffn_x.contiguous(),
            tokens_seen=state.tokens_seen, meta=dict(state.meta),
        )

    @staticmethod
    def _empty_like(state: State, steps: int) -> State:
        return State(
            att_x=torch.empty_like(state.att_x), wkv=torch.empty_like(state.wkv),
            ffn_x=torch.empty_like(state.ffn_x), tokens_seen=state.tokens_seen + steps,
            meta=dict(state.meta),
        )

    def _sm_count(self) -> int:
        if self.device.type != "cuda":
            return 8
        return torch.cuda.get_device_properties(self.device).multi_processor_count
