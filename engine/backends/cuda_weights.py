"""Weights laid out the way the CUDA kernels read them.

Decoding one token reads every weight once, so the layout is chosen for the decode kernels:
all matrices in [out][in] row-major order (one thread group streams one row), the six
projections of the mixed inputs in one matrix (one launch for all of them), and the FFN value
matrix transposed so the rows that squared ReLU zeroes are simply skipped. Prefill uses views
of the same storage, so nothing is stored twice. Pure torch: the tests pack on the CPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import torch

from engine.checkpoint import ModelConfig

#: Order of the token-shift coefficients in ``att_mix`` (and of the mixed inputs): the first
#: three feed receptance, key and value, so prefill multiplies them with one batched GEMM.
MIX_ORDER = ("x_r", "x_k", "x_v", "x_w", "x_a", "x_g")

#: Fields of one layer in the order the binding's DecodePlan takes them (= rwkv7_layer in rwkv7.h).
LAYER_FIELDS = (
    "att_in", "w2t", "a2t", "g2t", "v2t", "att_out", "ffn_key", "ffn_value_t",
    "ln1_w", "ln1_b", "ln2_w", "ln2_b", "att_mix",
    "w0", "a0", "v0", "k_k", "k_a", "r_k", "lnx_w", "lnx_b", "ffn_mix",
)
#: Model-wide tensors in the order DecodePlan takes them.
GLOBAL_FIELDS = ("emb", "head", "ln0_w", "ln0_b", "ln_out_w", "ln_out_b")


@dataclass
class PackedLayer:
    """One block's weights; matrices in the run dtype, vectors in fp32."""

    att_in: torch.Tensor  # [3C + Dw + Da + Dg + Dv, C]: R, K, V, w1ᵀ, a1ᵀ, g1ᵀ, v1ᵀ
    w2t: torch.Tensor  # [C, Dw]
    a2t: torch.Tensor  # [C, Da]
    g2t: torch.Tensor  # [C, Dg]
    v2t: torch.Tensor | None  # [C, Dv]; None in layer 0 (no value residual)
    att_out: torch.Tensor  # [C, C]
    ffn_key: torch.Tensor  # [F, C]
    ffn_value_t: torch.Tensor  # [F, C]
    ln1_w: torch.Tensor
    ln1_b: torch.Tensor
    ln2_w: torch.Tensor
    ln2_b: torch.Tensor
    att_mix: torch.Tensor  # [6, C] in MIX_ORDER
    w0: torch.Tensor
    a0: torch.Tensor
    v0: torch.Tensor | None
    k_k: torch.Tensor
    k_a: torch.Tensor
    r_k: torch.Tensor  # [C]
    lnx_w: torch.Tensor
    lnx_b: torch.Tensor
    ffn_mix: torch.Tensor  # [C]
    ranks: tuple[int, int, int, int]  # Dw, Da, Dg, Dv

    # ---- prefill views of att_in ------------------------------------------------------

    @property
    def rkv_t(self) -> torch.Tensor:
        """Receptance, key and value as a [3, in, out] batch for one bmm of the first 3 mixes."""
        n_embd = self.att_in.shape[1]
        return self.att_in[: 3 * n_embd].view(3, n_embd, n_embd).transpose(1, 2)

    def lora_down(self, which: str) -> torch.Tensor:
        """w1ᵀ, a1ᵀ, g1ᵀ or v1ᵀ ([rank, C]) for F.linear."""
        n_embd = self.att_in.shape[1]
        dw, da, dg, dv = self.ranks
        starts = {"w": 0, "a": dw, "g": dw + da, "v": dw + da + dg}
        sizes = {"w": dw, "a": da, "g": dg, "v": dv}
        first = 3 * n_embd + starts[which]
        return self.att_in[first: first + sizes[which]]

    def decode_fields(self) -> list[torch.Tensor | None]:
        return [getattr(self, name) for name in LAYER_FIELDS]


@dataclass
class PackedWeights:
    dtype: torch.dtype
    device: torch.device
    emb: torch.Tensor  # [V, C]
    head: torch.Tensor  # [V, C]
    ln0_w: torch.Tensor
    ln0_b: torch.Tensor
    ln_out_w: torch.Tensor
    ln_out_b: torch.Tensor
    layers: list[PackedLayer]

    def decode_globals(self) -> list[torch.Tensor]:
        return [getattr(self, name) for name in GLOBAL_FIELDS]

    @property
    def nbytes(self) -> int:
        tensors = [self.emb, self.head, self.ln0_w, self.ln0_b, self.ln_out_w, self.ln_out_b]
        for layer in self.layers:
            tensors += [t for t in layer.decode_fields() if t is not None]
        return sum(t.numel() * t.element_size() for t in tensors)


def pack_weights(
    state_dict: Mapping[str, torch.Tensor],
    config: ModelConfig,
    dtype: torch.dtype,
    device: torch.device,
) -> PackedWeights:
    """Convert a checkpoint's tensors into the kernels' layout on ``device``.

    Each tensor moves to the device in its stored dtype first and is converted there, which
    keeps host memory flat and is fastest for multi-GB checkpoints.
    """

    def fetch(name: str) -> torch.Tensor:
        return state_dict[name].detach().to(device)

    def vector(name: str) -> torch.Tensor:
        return fetch(name).to(torch.float32).reshape(-1).contiguous()

    def matrix(name: str) -> torch.Tensor:
        return fetch(name).to(dtype).contiguous()

    def transposed(name: str) -> torch.Tensor:
        return fetch(name).to(dtype).t().contiguous()

    layers: list[PackedLayer] = []
    for i in range(config.n_layer):
        p = f"blocks.{i}."
        residual = i > 0
        down = [matrix(p + f"att.{name}.weight") for name in ("receptance", "key", "value")]
        down += [transposed(p + f"att.{name}1") for name in ("w", "a", "g")]
        if residual:
            down.append(transposed(p + "att.v1"))
        layers.append(
            PackedLayer(
                att_in=torch.cat(down).contiguous(),
                w2t=transposed(p + "att.w2"),
                a2t=transposed(p + "att.a2"),
                g2t=transposed(p + "att.g2"),
                v2t=transposed(p + "att.v2") if residual else None,
                att_out=matrix(p + "att.output.weight"),
                ffn_key=matrix(p + "ffn.key.weight"),
                ffn_value_t=transposed(p + "ffn.value.weight"),
                ln1_w=vector(p + "ln1.weight"), ln1_b=vector(p + "ln1.bias"),
                ln2_w=vector(p + "ln2.weight"), ln2_b=vector(p + "ln2.bias"),
                att_mix=torch.stack([vector(p + "att." + m) for m in MIX_ORDER]).contiguous(),
                w0=vector(p + "att.w0"), a0=vector(p + "att.a0"),
                v0=vector(p + "att.v0") if residual else None,
                k_k=vector(p + "att.k_k"), k_a=vector(p + "att.k_a"), r_k=vector(p + "att.r_k"),
                lnx_w=vector(p + "att.ln_x.weight"), lnx_b=vector(p + "att.ln_x.bias"),
                ffn_mix=vector(p + "ffn.x_k"),
                ranks=(config.decay_rank, config.iclr_rank, config.gate_rank,
                       config.value_rank if residual else 0),
            )
        )
    return PackedWeights(
        dtype=dtype,
        device=device,
        emb=matrix("emb.weight"),
        head=matrix("head.weight"),
        ln0_w=vector("blocks.0.ln0.weight"), ln0_b=vector("blocks.0.ln0.bias"),
        ln_out_w=vector("ln_out.weight"), ln_out_b=vector("ln_out.bias"),
        layers=layers,
    )
