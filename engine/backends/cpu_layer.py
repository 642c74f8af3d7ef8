"""The weights of one RWKV-7 block in the CPU backend's layout.

Shared by the op-by-op forward pass (engine/backends/cpu.py) and the description of the model
handed to the native one-token kernel (engine/backends/cpu_native.py), which must agree on it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from engine.quant import QuantizedMatrix

#: A matrix as the backend keeps it: in a float dtype, or block-quantized.
Matrix = torch.Tensor | QuantizedMatrix


@dataclass
class CpuLayer:
    """One block's weights as the CPU backend keeps them (and the fused decode kernel reads them)."""

    ln1: tuple[torch.Tensor, torch.Tensor]
    ln2: tuple[torch.Tensor, torch.Tensor]
    mix: torch.Tensor  # (6, C): token-shift coefficients for r, w, k, v, a, g
    # LoRA pairs are stored transposed, down (rank, C) and up (C, rank), so that one token's
    # LoRA is a matrix-vector product in the same row-major layout as every other weight.
    w0: torch.Tensor
    w1t: Matrix
    w2t: Matrix
    a0: torch.Tensor
    a1t: Matrix
    a2t: Matrix
    v0: torch.Tensor | None
    v1t: Matrix | None
    v2t: Matrix | None
    g1t: Matrix
    g2t: Matrix
    k_k: torch.Tensor
    k_a: torch.Tensor
    r_k: torch.Tensor  # flattened (C,)
    receptance: Matrix  # (C, C) in the weight dtype, nn.Linear layout
    key: Matrix
    value: Matrix
    output: Matrix
    ln_x: tuple[torch.Tensor, torch.Tensor]
    ffn_mix: torch.Tensor
    ffn_key: Matrix  # (F, C)
    ffn_value_t: Matrix  # (F, C): transposed so rows picked by non-zero activations are contiguous
