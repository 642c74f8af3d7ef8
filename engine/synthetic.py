"""Random-weight x070 checkpoints with the official layout.

Official weights cannot be downloaded everywhere, yet numerics and speed must be checked on
realistic shapes. Magnitudes are chosen so that every part of the block matters to the logits
(decays spread over (0.55, 1), gates neither saturated nor dead), which makes comparisons
against a reference meaningful rather than dominated by one term.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

#: (n_layer, n_embd) of the released sizes; vocab is 65536 for all of them.
OFFICIAL_SHAPES: dict[str, tuple[int, int]] = {
    "0.1b": (12, 768), "0.4b": (24, 1024), "1.5b": (24, 2048),
    "2.9b": (32, 2560), "7.2b": (32, 4096),
}


def default_ranks(n_embd: int) -> tuple[int, int, int, int]:
    """LoRA ranks (decay, in-context rate, value residual, gate) of the training code's formula."""
    def rank(factor: float) -> int:
        return max(32, round(factor * math.sqrt(n_embd) / 32) * 32)
    return rank(2.5), rank(2.5), rank(1.7), rank(5.0)


def random_state_dict(
    n_layer: int = 2,
    n_embd: int = 128,
    vocab: int = 1024,
    *,
    head_size: int = 64,
    ffn_dim: int | None = None,
    ranks: tuple[int, int, int, int] | None = None,
    layer0_value_residual: bool = True,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """A complete x070 state dict with random weights."""
    if n_embd % head_size:
        raise ValueError("n_embd must be a multiple of head_size")
    gen = torch.Generator().manual_seed(seed)
    C, H, N = n_embd, n_embd // head_size, head_size
    F = ffn_dim or 4 * C
    Dw, Da, Dv, Dg = ranks or default_ranks(C)

    def randn(*shape: int, scale: float = 1.0, shift: float = 0.0) -> torch.Tensor:
        return torch.randn(*shape, generator=gen) * scale + shift

    def uniform(*shape: int, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
        return torch.rand(*shape, generator=gen) * (high - low) + low

    sd: dict[str, torch.Tensor] = {
        "emb.weight": randn(vocab, C),
        "blocks.0.ln0.weight": randn(C, scale=0.1, shift=1.0),
        "blocks.0.ln0.bias": randn(C, scale=0.1),
        "ln_out.weight": randn(C, scale=0.1, shift=1.0),
        "ln_out.bias": randn(C, scale=0.1),
        "head.weight": randn(vocab, C, scale=2.0 / math.sqrt(C)),
    }
    for i in range(n_layer):
        p = f"blocks.{i}."
        for name in ("ln1", "ln2"):
            sd[p + name + ".weight"] = randn(C, scale=0.1, shift=1.0)
            sd[p + name + ".bias"] = randn(C, scale=0.1)
        for name in ("x_r", "x_w", "x_k", "x_v", "x_a", "x_g"):
            sd[p + "att." + name] = uniform(1, 1, C)
        sd[p + "att.w0"] = randn(1, 1, C, scale=1.0, shift=-0.5)
        sd[p + "att.w1"] = randn(C, Dw, scale=1.0 / math.sqrt(C))
        sd[p + "att.w2"] = randn(Dw, C, scale=0.5 / math.sqrt(Dw))
        sd[p + "att.a0"] = randn(1, 1, C, scale=0.5)
        sd[p + "att.a1"] = randn(C, Da, scale=1.0 / math.sqrt(C))
        sd[p + "att.a2"] = randn(Da, C, scale=0.5 / math.sqrt(Da))
        if i > 0 or layer0_value_residual:
            sd[p + "att.v0"] = randn(1, 1, C, scale=0.5, shift=0.5)
            sd[p + "att.v1"] = randn(C, Dv, scale=1.0 / math.sqrt(C))
            sd[p + "att.v2"] = randn(Dv, C, scale=0.5 / math.sqrt(Dv))
        sd[p + "att.g1"] = randn(C, Dg, scale=1.0 / math.sqrt(C))
        sd[p + "att.g2"] = randn(Dg, C, scale=1.0 / math.sqrt(Dg))
        sd[p + "att.k_k"] = randn(1, 1, C, scale=0.1, shift=0.85)
        sd[p + "att.k_a"] = randn(1, 1, C, scale=0.1, shift=1.0)
        sd[p + "att.r_k"] = randn(H, N, scale=0.3)
        for name in ("receptance", "key", "value"):
            sd[p + f"att.{name}.weight"] = randn(C, C, scale=1.0 / math.sqrt(C))
        sd[p + "att.output.weight"] = randn(C, C, scale=0.5 / math.sqrt(C))
        sd[p + "att.ln_x.weight"] = randn(C, scale=0.1, shift=1.0)
        sd[p + "att.ln_x.bias"] = randn(C, scale=0.1)
        sd[p + "ffn.x_k"] = uniform(1, 1, C)
        sd[p + "ffn.key.weight"] = randn(F, C, scale=1.0 / math.sqrt(C))
        sd[p + "ffn.value.weight"] = randn(C, F, scale=1.0 / math.sqrt(F))
    return {k: v.to(dtype).contiguous() for k, v in sd.items()}


def official_shape_state_dict(size: str, *, dtype: torch.dtype = torch.bfloat16, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights shaped like a released model ('0.1b', '1.5b', ...), stored in bf16 like releases."""
    n_layer, n_embd = OFFICIAL_SHAPES[size]
    return random_state_dict(n_layer, n_embd, 65536, dtype=dtype, seed=seed)


def save_checkpoint(state_dict: dict[str, torch.Tensor], path: str | Path) -> Path:
    """Write a state dict as a ``.pth`` file the way releases are written."""
    path = Path(path)
    torch.save(state_dict, path)
    return path
