"""RWKV-7 forward pass on the CPU.

Activations, the WKV recurrence and the state are fp32 whatever the weight dtype: storing the
large matrices in bf16 halves the memory traffic that bounds decoding speed, while fp32
arithmetic keeps the logits within bf16 rounding of the fp32 reference. The quantized formats
(``int8``, ``q4``: engine/quant.py) store every matrix, the LoRA matrices and the head
included, in blocks with per-block scales (measured on the demo chat model, quantizing the LoRA
matrices too changes the KL to fp32 by under 1 %, while they are 6 % of a layer's weights); the
embedding, read one row per token, is kept finer (_EMBEDDING_FORMAT).

Many tokens (prefill) run op by op in torch: the matrix-matrix products are compute-bound and
torch's GEMM serves them well. One token (decode) goes to the native library's whole-model
kernel when it is available, because op by op the hundreds of tiny vector operations of a step
cost as much as streaming the weights; the op-by-op path remains the fallback (no C compiler)
and the reference the fused kernel is tested against.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Mapping, Sequence

import torch
import torch.nn.functional as F

from engine.backends.cpu_layer import CpuLayer
from engine.backends.cpu_native import TorchKernels, get_kernels
from engine.checkpoint import ModelConfig
from engine.cpu_threads import cpu_threads
from engine.quant import QuantizedMatrix, is_quantized_format
from engine.state import State

#: A weight as the backend keeps it: a plain tensor, or a block-quantized matrix.
Weight = torch.Tensor | QuantizedMatrix
#: How a quantized model stores its embedding. It is read one row per token, so it costs
#: memory but no bandwidth: bf16 beside int8 (at 8 bits it alone gave max|Δlogit|/std 0.02-0.03
#: on random models), and 8-bit beside q4 (at 4 bits it was 40 % of the demo chat model's KL).
_EMBEDDING_FORMAT: dict[str, torch.dtype | str] = {"int8": torch.bfloat16, "q4": "int8"}

#: exp(-0.5): the decay is w = exp(-e^-0.5 · σ(z)), so every channel keeps at least 54.5 %.
_DECAY_SCALE = 0.6065306597126334
_GROUP_NORM_EPS = 64e-5
_LAYER_NORM_EPS = 1e-5
_MIX_ORDER = ("x_r", "x_w", "x_k", "x_v", "x_a", "x_g")


def compute_threads() -> int:
    """Threads for the heavy kernels: ``--threads`` / RWKV_TUI_THREADS, else the cores this
    process may use (engine/cpu_threads.py)."""
    return cpu_threads()


@contextmanager
def _torch_threads(count: int) -> Iterator[None]:
    """Run torch's own ops on ``count`` threads for a while.

    Decoding one token issues dozens of tiny torch ops per layer. Each multi-threaded op is an
    OpenMP barrier, and when another thread (the UI, another program) holds a core, every
    barrier waits for a descheduled thread: measured here, 2 threads made decoding 7× slower
    on a busy 2-core machine. The few large products run in our kernels, which take the thread
    count explicitly.
    """
    previous = torch.get_num_threads()
    if previous != count:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        if previous != count:
            torch.set_num_threads(previous)


def _successor(state: State, tokens: int) -> State:
    """Uninitialised tensors for the state after ``tokens`` more tokens (the input stays intact)."""
    return State(
        att_x=torch.empty_like(state.att_x),
        wkv=torch.empty_like(state.wkv),
        ffn_x=torch.empty_like(state.ffn_x),
        tokens_seen=state.tokens_seen + tokens,
        meta=dict(state.meta),
    )


#: Checkpoint matrices the backend keeps transposed: the FFN value matrix so that the rows a
#: token's non-zero activations pick are contiguous, the LoRA pairs so that one token's LoRA is
#: a matrix-vector product in the same row-major layout as every other weight.
_TRANSPOSED = ("att.w1", "att.w2", "att.a1", "att.a2", "att.v1", "att.v2", "att.g1", "att.g2", "ffn.value.weight")
_LAYER_MATRICES = _TRANSPOSED + (
    "att.receptance.weight", "att.key.weight", "att.value.weight", "att.output.weight", "ffn.key.weight",
)


def _prepare(
    kernels: TorchKernels, threads: int, value: Weight, target: torch.dtype | str, transpose: bool
) -> Weight:
    """One matrix in the backend's layout (transposed if asked) and storage type ``target``.

    A quantized matrix already in that format and layout (from a saved quantized model) is used
    as it is; any other is widened to its checkpoint tensor first.
    """
    if isinstance(value, QuantizedMatrix):
        if value.format == target and value.transposed == transpose:
            return value
        value = value.checkpoint_tensor()
    if transpose:
        value = value.detach().t()
    if is_quantized_format(target):
        matrix = kernels.quantize(value, target, threads)
        return matrix.as_transposed() if transpose else matrix
    return value.detach().to(target).contiguous()


def quantize_weights(
    state_dict: Mapping[str, Weight], fmt: str, kernels: TorchKernels | None = None, threads: int | None = None
) -> dict[str, Weight]:
    """A checkpoint with every matrix in the quantized format ``fmt`` and the backend's layout,
    the embedding in its own format, and every other tensor as it was: what the backend runs
    and what a quantized model file (engine/model_file.py) stores."""
    kernels = kernels or get_kernels()
    threads = threads or compute_threads()
    out: dict[str, Weight] = {}
    for key, value in state_dict.items():
        if key == "head.weight" or (key.startswith("blocks.") and key.endswith(_LAYER_MATRICES)):
            out[key] = _prepare(kernels, threads, value, fmt, transpose=key.endswith(_TRANSPOSED))
        elif key == "emb.weight":
            out[key] = _prepare(kernels, threads, value, _EMBEDDING_FORMAT[fmt], transpose=False)
        else:
            out[key] = value
    return out


class CpuBackend:
    """Prepared weights plus the forward pass; one instance per loaded model."""

    device = torch.device("cpu")

    def __init__(
        self,
        state_dict: Mapping[str, Weight],
        config: ModelConfig,
        weight_dtype: torch.dtype | str,
        kernels: TorchKernels | None = None,
    ) -> None:
        self.config = config
        self.weight_dtype = weight_dtype
        self.kernels = kernels or get_kernels()
        self.threads = compute_threads()
        self._plan: tuple[object, object] | None = None

        def small(name: str) -> torch.Tensor:
            return state_dict[name].detach().to(torch.float32).reshape(-1).contiguous()

        quantized = is_quantized_format(weight_dtype)
        if quantized:
            state_dict = quantize_weights(state_dict, weight_dtype, self.kernels, self.threads)

        def lora(name: str) -> Weight:
            # In the weight dtype like the big matrices: a token reads every LoRA matrix too
            # (about 4 % of a 0.1B step's bytes in fp32), and official files store them in bf16.
            return _prepare(self.kernels, self.threads, state_dict[name], weight_dtype, transpose=True)

        def big(name: str) -> Weight:
            return _prepare(self.kernels, self.threads, state_dict[name], weight_dtype, transpose=False)

        self.emb = state_dict["emb.weight"] if quantized else big("emb.weight")
        self.ln0 = (small("blocks.0.ln0.weight"), small("blocks.0.ln0.bias"))
        self.ln_out = (small("ln_out.weight"), small("ln_out.bias"))
        self.head = big("head.weight")
        self.layers: list[CpuLayer] = []
        for i in range(config.n_layer):
            p = f"blocks.{i}."
            has_residual = i > 0
            self.layers.append(
                CpuLayer(
                    ln1=(small(p + "ln1.weight"), small(p + "ln1.bias")),
                    ln2=(small(p + "ln2.weight"), small(p + "ln2.bias")),
                    mix=torch.stack([small(p + "att." + m) for m in _MIX_ORDER]),
                    w0=small(p + "att.w0"), w1t=lora(p + "att.w1"), w2t=lora(p + "att.w2"),
                    a0=small(p + "att.a0"), a1t=lora(p + "att.a1"), a2t=lora(p + "att.a2"),
                    v0=small(p + "att.v0") if has_residual else None,
                    v1t=lora(p + "att.v1") if has_residual else None,
                    v2t=lora(p + "att.v2") if has_residual else None,
                    g1t=lora(p + "att.g1"), g2t=lora(p + "att.g2"),
                    k_k=small(p + "att.k_k"), k_a=small(p + "att.k_a"), r_k=small(p + "att.r_k"),
                    receptance=big(p + "att.receptance.weight"), key=big(p + "att.key.weight"),
                    value=big(p + "att.value.weight"), output=big(p + "att.output.weight"),
                    ln_x=(small(p + "att.ln_x.weight"), small(p + "att.ln_x.bias")),
                    ffn_mix=small(p + "ffn.x_k"),
                    ffn_key=big(p + "ffn.key.weight"),
                    ffn_value_t=_prepare(self.kernels, self.threads, state_dict[p + "ffn.value.weight"], weight_dtype, transpose=True),
                )
            )

    # ------------------------------------------------------------------ public

    def forward(
        self, tokens: Sequence[int], state: State, all_logits: bool = False
    ) -> tuple[torch.Tensor, State]:
        """Logits (last token, or every token with ``all_logits``) and the state after ``tokens``."""
        decode = getattr(self.kernels, "decode", None)
        if len(tokens) == 1 and decode is not None:
            return self._decode_fused(tokens[0], state, all_logits)
        with torch.inference_mode(), _torch_threads(1 if len(tokens) == 1 else self.threads):
            ids = torch.tensor(list(tokens), dtype=torch.long)
            rows = self.emb.rows(ids) if isinstance(self.emb, QuantizedMatrix) else self.emb[ids].float()
            x = F.layer_norm(rows, (self.config.n_embd,), *self.ln0, _LAYER_NORM_EPS)
            new = _successor(state, len(ids))
            v_first: torch.Tensor | None = None
            for i, layer in enumerate(self.layers):
                xn = F.layer_norm(x, (self.config.n_embd,), *layer.ln1, _LAYER_NORM_EPS)
                att, new.wkv[i], v_first = self._time_mix(layer, xn, state.att_x[i], state.wkv[i], v_first)
                new.att_x[i] = xn[-1]
                x = x + att
                xn = F.layer_norm(x, (self.config.n_embd,), *layer.ln2, _LAYER_NORM_EPS)
                x = x + self._channel_mix(layer, xn, state.ffn_x[i])
                new.ffn_x[i] = xn[-1]
            rows = x if all_logits else x[-1:]
            rows = F.layer_norm(rows, (self.config.n_embd,), *self.ln_out, _LAYER_NORM_EPS)
            logits = self._linear(rows, self.head)
            return (logits if all_logits else logits[0]), new

    # ----------------------------------------------------------------- helpers

    def _decode_fused(self, token: int, state: State, all_logits: bool) -> tuple[torch.Tensor, State]:
        """One token through the native whole-model kernel: the decode hot path."""
        kernels = self.kernels
        if self._plan is None or self._plan[0] is not kernels:
            self._plan = (kernels, kernels.decode_plan(self))
        new = _successor(state, 1)
        logits = kernels.decode(self._plan[1], int(token), state, new, self.threads)
        return (logits.unsqueeze(0) if all_logits else logits), new

    def _linear(self, x: torch.Tensor, weight: Weight) -> torch.Tensor:
        """``x @ weight.T`` for x of shape (T, in); a streaming kernel when T == 1."""
        if x.shape[0] == 1:
            return self.kernels.matvec(weight, x[0], self.threads).unsqueeze(0)
        return F.linear(x, self._dense(weight))

    def _dense(self, weight: Weight) -> torch.Tensor:
        """A weight as an fp32 tensor, for the matrix-matrix products of prefill."""
        if isinstance(weight, QuantizedMatrix):
            return self.kernels.dequantize(weight, self.threads)
        return weight if weight.dtype == torch.float32 else weight.float()

    def _lora(self, x: torch.Tensor, transposed: Weight) -> torch.Tensor:
        """One half of a LoRA pair, stored transposed: ``x @ transposed.T``, in fp32."""
        return F.linear(x, self._dense(transposed))

    @staticmethod
    def _shifted(xn: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
        """The token-shift input: each row's predecessor, the state's vector for the first row."""
        if xn.shape[0] == 1:
            return previous.unsqueeze(0)
        return torch.cat((previous.unsqueeze(0), xn[:-1]))

    def _time_mix(
        self,
        layer: CpuLayer,
        xn: torch.Tensor,
        att_prev: torch.Tensor,
        wkv: torch.Tensor,
        v_first: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        cfg = self.config
        steps = xn.shape[0]
        delta = self._shifted(xn, att_prev) - xn
        xr, xw, xk, xv, xa, xg = torch.addcmul(xn.unsqueeze(0), delta.unsqueeze(0), layer.mix.unsqueeze(1))

        r = self._linear(xr, layer.receptance)
        k = self._linear(xk, layer.key)
        v = self._linear(xv, layer.value)
        decay = torch.exp(-_DECAY_SCALE * torch.sigmoid(layer.w0 + self._lora(torch.tanh(self._lora(xw, layer.w1t)), layer.w2t)))
        iclr = torch.sigmoid(layer.a0 + self._lora(self._lora(xa, layer.a1t), layer.a2t))
        gate = self._lora(torch.sigmoid(self._lora(xg, layer.g1t)), layer.g2t)

        heads = (steps, cfg.n_head, cfg.head_size)
        removal = F.normalize((k * layer.k_k).view(heads), dim=-1, p=2.0).view(steps, -1)
        k = k * (1 + (iclr - 1) * layer.k_a)
        if v_first is None:
            v_first = v
        else:
            assert layer.v0 is not None and layer.v1t is not None and layer.v2t is not None
            mix = torch.sigmoid(layer.v0 + self._lora(self._lora(xv, layer.v1t), layer.v2t))
            v = v + (v_first - v) * mix

        y, new_wkv = self.kernels.wkv7(wkv, r, decay, k, v, -removal, removal * iclr, self.threads)
        y = F.group_norm(y, cfg.n_head, *layer.ln_x, eps=_GROUP_NORM_EPS)
        bonus = ((r * k * layer.r_k).view(heads).sum(-1, keepdim=True) * v.view(heads)).view(steps, -1)
        return self._linear((y + bonus) * gate, layer.output), new_wkv, v_first

    def _channel_mix(self, layer: CpuLayer, xn: torch.Tensor, ffn_prev: torch.Tensor) -> torch.Tensor:
        mixed = torch.addcmul(xn, self._shifted(xn, ffn_prev) - xn, layer.ffn_mix)
        hidden = torch.relu(self._linear(mixed, layer.ffn_key)).square_()
        if hidden.shape[0] == 1:
            return self.kernels.sparse_vecmat(layer.ffn_value_t, hidden[0], self.threads).unsqueeze(0)
        return hidden @ self._dense(layer.ffn_value_t)
