"""Block-quantized weight matrices: 8-bit (``int8``) and 4-bit (``q4``) storage for the CPU.

Decoding one token reads every weight once, so the bytes per weight set its speed. Both
formats cut each row into blocks of :data:`GROUP` consecutive inputs with one fp16 scale per
block (and one fp32 scale per matrix, so that block scales never fall out of fp16's normal
range): 8.5 bits per weight for ``int8``, 4.5 for ``q4``, the sizes of llama.cpp's Q8_0 and
Q4_0. A group of 32 was measured against 64 on the demo chat model: 32 has 25 % less KL for
int8 (1.1e-4 vs 1.5e-4 nats) and 30 % less for q4 (0.024 vs 0.034), for 3 % more bytes.

``q4`` is the Q4_0 scheme: the block's largest-magnitude weight maps to -8 exactly, the others
round to the nearest of the 16 levels. An error-minimising scale search made the demo model's
KL worse (0.026), and an offset/min per block (Q4_1-style) gained 5 % of KL for 11 % more
bytes, so neither is used.

This module is the reference (pure torch): the native kernels in ``backends/cpu_native.c``
read the same layout, and tests hold them to :meth:`QuantizedMatrix.dequantize`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Mapping

import torch

from engine.errors import EngineError

#: Inputs per block of one scale. The native kernels are built for this value.
GROUP = 32

#: Names of the quantized weight formats, as ``--dtype`` accepts them.
FORMATS = ("int8", "q4")

_Q4_OFFSET = 8


@dataclass(frozen=True)
class QuantizedMatrix:
    """A (rows, cols) weight matrix, ``weight[r, c] = scale * d[r, c // GROUP] * (q[r, c] - offset)``.

    * ``int8``: ``q`` is int8 of shape (rows, stride), offset 0.
    * ``q4``: ``q`` is uint8 of shape (rows, stride // 2); byte k of a block's 16 holds element
      k in its low nibble and element k + 16 in its high one; offset 8.

    Rows are zero-padded to ``stride`` (a multiple of GROUP) columns, so every block is whole.
    ``transposed``: the matrix is the transpose of the checkpoint tensor it was made from (the
    CPU backend keeps LoRA and FFN value matrices so), which a file records.
    """

    format: str
    q: torch.Tensor
    d: torch.Tensor  # float16, (rows, stride // GROUP)
    scale: float
    shape: tuple[int, int]
    transposed: bool = False

    @property
    def stride(self) -> int:
        return self.d.shape[1] * GROUP

    @property
    def nbytes(self) -> int:
        return self.q.numel() * self.q.element_size() + self.d.numel() * 2

    def numel(self) -> int:
        return self.shape[0] * self.shape[1]

    @property
    def checkpoint_shape(self) -> tuple[int, int]:
        """The shape of the checkpoint tensor this matrix stands for."""
        return (self.shape[1], self.shape[0]) if self.transposed else self.shape

    def checkpoint_tensor(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The checkpoint tensor this matrix stands for, dequantized (for backends without
        quantized kernels)."""
        values = self.dequantize(dtype)
        return values.t().contiguous() if self.transposed else values

    def as_transposed(self) -> "QuantizedMatrix":
        """The same data, marked as the transpose of its checkpoint tensor."""
        return replace(self, transposed=True)

    @classmethod
    def quantize(cls, weight: torch.Tensor, format: str) -> "QuantizedMatrix":
        """Quantize a 2-D float tensor (any float dtype) along its rows."""
        if format not in FORMATS:
            raise EngineError(f"unknown quantized format {format!r}; use {' or '.join(FORMATS)}")
        if weight.dim() != 2:
            raise EngineError(f"only matrices can be quantized, got shape {tuple(weight.shape)}")
        rows, cols = weight.shape
        stride = -(-cols // GROUP) * GROUP
        w = weight.detach().to(torch.float32)
        if stride != cols:
            w = torch.nn.functional.pad(w, (0, stride - cols))
        blocks = w.reshape(rows, stride // GROUP, GROUP)
        if format == "int8":
            block_scale = blocks.abs().amax(-1) / 127.0
        else:  # the signed weight of largest magnitude lands on -8
            peak = blocks.gather(-1, blocks.abs().argmax(-1, keepdim=True)).squeeze(-1)
            block_scale = peak / -float(_Q4_OFFSET)
        scale = float(block_scale.abs().max()) if block_scale.numel() else 0.0
        if not torch.isfinite(torch.tensor(scale)):
            raise EngineError("cannot quantize weights that are not finite (inf or NaN)")
        if scale == 0.0:
            scale = 1.0
        d = (block_scale / scale).to(torch.float16)
        effective = d.to(torch.float32) * scale
        inverse = torch.where(effective != 0, 1.0 / effective, torch.zeros_like(effective)).unsqueeze(-1)
        if format == "int8":
            q = (blocks * inverse).round_().clamp_(-127, 127).to(torch.int8).reshape(rows, stride)
        else:
            levels = (blocks * inverse).round_().add_(_Q4_OFFSET).clamp_(0, 15).to(torch.uint8)
            half = GROUP // 2
            q = (levels[..., :half] | (levels[..., half:] << 4)).reshape(rows, stride // 2)
        return cls(format, q.contiguous(), d.contiguous(), scale, (rows, cols))

    def levels(self) -> torch.Tensor:
        """The integer level of every weight, offset removed: (rows, stride) int16."""
        rows = self.shape[0]
        if self.format == "int8":
            return self.q.to(torch.int16)
        packed = self.q.reshape(rows, -1, GROUP // 2)
        nibbles = torch.cat((packed & 15, packed >> 4), dim=-1).to(torch.int16)
        return nibbles.reshape(rows, self.stride) - _Q4_OFFSET

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The matrix as plain floats, (rows, cols)."""
        rows, cols = self.shape
        blocks = self.levels().reshape(rows, -1, GROUP).to(torch.float32)
        values = blocks * (self.d.to(torch.float32) * self.scale).unsqueeze(-1)
        return values.reshape(rows, self.stride)[:, :cols].to(dtype).contiguous()

    def rows(self, index: torch.Tensor) -> torch.Tensor:
        """Selected rows as fp32 (an embedding lookup), without widening the whole matrix."""
        picked = replace(self, q=self.q[index], d=self.d[index], shape=(len(index), self.shape[1]))
        return picked.dequantize()


def is_quantized_format(name: object) -> bool:
    return isinstance(name, str) and name in FORMATS


def shape_view(weights: Mapping[str, torch.Tensor | QuantizedMatrix]) -> dict[str, torch.Tensor]:
    """Weights with every quantized matrix replaced by a zero tensor of its checkpoint shape
    that occupies no memory, for code that only reads shapes (engine.checkpoint.infer_config)."""
    return {
        key: torch.zeros((), dtype=torch.float32).expand(value.checkpoint_shape)
        if isinstance(value, QuantizedMatrix) else value
        for key, value in weights.items()
    }


def dense_weights(weights: Mapping[str, torch.Tensor | QuantizedMatrix]) -> dict[str, torch.Tensor]:
    """Weights with every quantized matrix dequantized into its checkpoint layout (fp32)."""
    return {
        key: value.checkpoint_tensor() if isinstance(value, QuantizedMatrix) else value
        for key, value in weights.items()
    }
