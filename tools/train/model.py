"""RWKV-7 ("x070") as a trainable PyTorch module whose state dict is the official checkpoint.

Parameter names and shapes are those of a released ``.pth`` (rwkv7-engine.md §1.1), so
``model.state_dict()`` *is* a checkpoint: no renaming layer that could drift. The maths is
§2 applied to whole sequences (§3.1), with the WKV recurrence in the chunked form of
``tools.train.wkv``. ``blocks.0.att.v0/v1/v2`` exist (the official trainer writes them and some
loaders look for them) but layer 0 never uses them.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from tools.train.wkv import DEFAULT_CHUNK, wkv_chunked, wkv_sequential

#: The decay is w = exp(−e^−0.5 · σ(z)): every channel keeps at least 54.5 % per token.
DECAY_SCALE = math.exp(-0.5)
GROUP_NORM_EPS = 64e-5


@dataclass(frozen=True)
class ModelShape:
    """Hyper-parameters of a model; LoRA ranks default to the official trainer's formula."""

    n_layer: int
    n_embd: int
    vocab: int
    head_size: int = 64
    ffn_mult: int = 4
    decay_rank: int = 0
    iclr_rank: int = 0
    value_rank: int = 0
    gate_rank: int = 0

    def __post_init__(self) -> None:
        if self.n_embd % self.head_size:
            raise ValueError(f"n_embd {self.n_embd} is not a multiple of head_size {self.head_size}")
        for name, factor in (("decay_rank", 2.5), ("iclr_rank", 2.5), ("value_rank", 1.7), ("gate_rank", 5.0)):
            if getattr(self, name) <= 0:
                object.__setattr__(self, name, _suggested_rank(self.n_embd, factor))

    @property
    def n_head(self) -> int:
        return self.n_embd // self.head_size

    @property
    def ffn_dim(self) -> int:
        return self.ffn_mult * self.n_embd

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def _suggested_rank(n_embd: int, factor: float) -> int:
    return max(32, round(factor * math.sqrt(n_embd) / 32) * 32)


class TimeMix(nn.Module):
    """The attention-like half of a block; see rwkv7-engine.md §2.2 for each step."""

    def __init__(self, shape: ModelShape, layer_id: int) -> None:
        super().__init__()
        C, H, N = shape.n_embd, shape.n_head, shape.head_size
        self.layer_id = layer_id
        self.n_head, self.head_size = H, N
        for name in ("x_r", "x_w", "x_k", "x_v", "x_a", "x_g", "w0", "a0", "v0", "k_k", "k_a"):
            setattr(self, name, nn.Parameter(torch.empty(1, 1, C)))
        self.w1 = nn.Parameter(torch.empty(C, shape.decay_rank))
        self.w2 = nn.Parameter(torch.empty(shape.decay_rank, C))
        self.a1 = nn.Parameter(torch.empty(C, shape.iclr_rank))
        self.a2 = nn.Parameter(torch.empty(shape.iclr_rank, C))
        self.v1 = nn.Parameter(torch.empty(C, shape.value_rank))
        self.v2 = nn.Parameter(torch.empty(shape.value_rank, C))
        self.g1 = nn.Parameter(torch.empty(C, shape.gate_rank))
        self.g2 = nn.Parameter(torch.empty(shape.gate_rank, C))
        self.r_k = nn.Parameter(torch.empty(H, N))
        self.receptance = nn.Linear(C, C, bias=False)
        self.key = nn.Linear(C, C, bias=False)
        self.value = nn.Linear(C, C, bias=False)
        self.output = nn.Linear(C, C, bias=False)
        self.ln_x = nn.GroupNorm(H, C, eps=GROUP_NORM_EPS)

    def forward(
        self, x: torch.Tensor, v_first: torch.Tensor | None, sequential: bool = False, chunk: int = DEFAULT_CHUNK
    ) -> tuple[torch.Tensor, torch.Tensor]:
        B, T, C = x.shape
        H, N = self.n_head, self.head_size
        delta = F.pad(x, (0, 0, 1, -1)) - x  # previous token minus current; zeros before the first
        xr = x + delta * self.x_r
        xw = x + delta * self.x_w
        xk = x + delta * self.x_k
        xv = x + delta * self.x_v
        xa = x + delta * self.x_a
        xg = x + delta * self.x_g

        r = self.receptance(xr)
        log_w = -DECAY_SCALE * torch.sigmoid(self.w0 + torch.tanh(xw @ self.w1) @ self.w2)
        k = self.key(xk)
        v = self.value(xv)
        iclr = torch.sigmoid(self.a0 + (xa @ self.a1) @ self.a2)
        gate = torch.sigmoid(xg @ self.g1) @ self.g2

        kk = F.normalize((k * self.k_k).view(B, T, H, N), dim=-1, p=2.0).view(B, T, C)
        k = k * (1 + (iclr - 1) * self.k_a)
        if self.layer_id == 0:
            v_first = v
        else:
            assert v_first is not None
            v = v + (v_first - v) * torch.sigmoid(self.v0 + (xv @ self.v1) @ self.v2)

        heads = (B, T, H, N)
        args = (r.view(heads), log_w.view(heads), k.view(heads), v.view(heads), (-kk).view(heads), (kk * iclr).view(heads))
        y, _ = wkv_sequential(*args) if sequential else wkv_chunked(*args, chunk=chunk)
        y = self.ln_x(y.reshape(B * T, C)).view(B, T, C)
        bonus = ((r * k * self.r_k.view(C)).view(heads).sum(-1, keepdim=True) * v.view(heads)).view(B, T, C)
        return self.output((y + bonus) * gate), v_first


class ChannelMix(nn.Module):
    """The feed-forward half: token shift, squared ReLU, no receptance gate (§2.3)."""

    def __init__(self, shape: ModelShape) -> None:
        super().__init__()
        self.x_k = nn.Parameter(torch.empty(1, 1, shape.n_embd))
        self.key = nn.Linear(shape.n_embd, shape.ffn_dim, bias=False)
        self.value = nn.Linear(shape.ffn_dim, shape.n_embd, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        delta = F.pad(x, (0, 0, 1, -1)) - x
        return self.value(torch.relu(self.key(x + delta * self.x_k)) ** 2)


class Block(nn.Module):
    def __init__(self, shape: ModelShape, layer_id: int) -> None:
        super().__init__()
        C = shape.n_embd
        if layer_id == 0:
            self.ln0 = nn.LayerNorm(C)
        self.ln1 = nn.LayerNorm(C)
        self.ln2 = nn.LayerNorm(C)
        self.att = TimeMix(shape, layer_id)
        self.ffn = ChannelMix(shape)


class RWKV7(nn.Module):
    """The whole model; ``forward(ids)`` returns logits for every position."""

    def __init__(self, shape: ModelShape) -> None:
        super().__init__()
        self.shape = shape
        self.emb = nn.Embedding(shape.vocab, shape.n_embd)
        self.blocks = nn.ModuleList(Block(shape, i) for i in range(shape.n_layer))
        self.ln_out = nn.LayerNorm(shape.n_embd)
        self.head = nn.Linear(shape.n_embd, shape.vocab, bias=False)

    def forward(self, ids: torch.Tensor, sequential: bool = False, chunk: int = DEFAULT_CHUNK) -> torch.Tensor:
        """Logits (B, T, V) for token ids (B, T), every sequence starting from the zero state."""
        x = self.blocks[0].ln0(self.emb(ids))
        v_first = None
        for block in self.blocks:
            out, v_first = block.att(block.ln1(x), v_first, sequential=sequential, chunk=chunk)
            x = x + out
            x = x + block.ffn(block.ln2(x))
        return self.head(self.ln_out(x))

    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def checkpoint(self, dtype: torch.dtype = torch.bfloat16) -> dict[str, torch.Tensor]:
        """The weights as an official-layout state dict (detached CPU copies in ``dtype``)."""
        return {k: v.detach().to("cpu", dtype).contiguous().clone() for k, v in self.state_dict().items()}

    @classmethod
    def from_checkpoint(cls, state_dict: dict[str, torch.Tensor]) -> "RWKV7":
        """Rebuild a trainable model from a checkpoint (shapes read from the tensors)."""
        vocab, n_embd = state_dict["emb.weight"].shape
        n_head, head_size = state_dict["blocks.0.att.r_k"].shape
        n_layer = 1 + max(int(k.split(".")[1]) for k in state_dict if k.startswith("blocks."))
        shape = ModelShape(
            n_layer=n_layer, n_embd=n_embd, vocab=vocab, head_size=head_size,
            ffn_mult=state_dict["blocks.0.ffn.key.weight"].shape[0] // n_embd,
            decay_rank=state_dict["blocks.0.att.w1"].shape[1],
            iclr_rank=state_dict["blocks.0.att.a1"].shape[1],
            value_rank=state_dict["blocks.0.att.v1"].shape[1] if "blocks.0.att.v1" in state_dict
            else state_dict["blocks.1.att.v1"].shape[1],
            gate_rank=state_dict["blocks.0.att.g1"].shape[1],
        )
        model = cls(shape)
        own = model.state_dict()
        missing = set(own) - set(state_dict)
        # Layer 0's value-residual LoRA is unused; accept files without it.
        if missing - {"blocks.0.att.v0", "blocks.0.att.v1", "blocks.0.att.v2"}:
            raise KeyError(f"checkpoint lacks {sorted(missing)}")
        with torch.no_grad():
            for name, tensor in own.items():
                if name in state_dict:
                    tensor.copy_(state_dict[name].to(tensor.dtype))
        return model


# --------------------------------------------------------------------------- initialisation

def init_weights(model: RWKV7, seed: int) -> None:
    """Initialise like the official RWKV-7 trainer: per-layer token-shift and decay ramps,
    zero output projections (every block starts as the identity), small LoRAs, tiny embeddings.

    Starting each block as the identity and decays spread from fast to slow across channels is
    what lets a deep-and-narrow RWKV train stably at a high learning rate.
    """
    shape = model.shape
    gen = torch.Generator().manual_seed(seed)
    C, L = shape.n_embd, shape.n_layer

    def uniform_(t: torch.Tensor, bound: float) -> None:
        t.copy_((torch.rand(t.shape, generator=gen) * 2 - 1) * bound)

    def orthogonal_(t: torch.Tensor, gain: float) -> None:
        rows, cols = t.shape
        flat = torch.randn(max(rows, cols), min(rows, cols), generator=gen)
        q, r = torch.linalg.qr(flat)
        q = q * torch.sign(torch.diagonal(r))
        t.copy_((q if rows >= cols else q.T)[:rows, :cols] * gain)

    with torch.no_grad():
        ramp = torch.arange(C, dtype=torch.float32) / C
        for i, block in enumerate(model.blocks):
            ratio_0_to_1 = i / max(L - 1, 1)
            ratio_1_to_almost0 = 1.0 - i / L
            att = block.att
            att.x_r.copy_(1 - ramp.pow(0.2 * ratio_1_to_almost0).view(1, 1, C))
            att.x_w.copy_(1 - ramp.pow(0.9 * ratio_1_to_almost0).view(1, 1, C))
            att.x_k.copy_(1 - ramp.pow(0.7 * ratio_1_to_almost0).view(1, 1, C))
            att.x_v.copy_(1 - ramp.pow(0.7 * ratio_1_to_almost0).view(1, 1, C))
            att.x_a.copy_(1 - ramp.pow(0.9 * ratio_1_to_almost0).view(1, 1, C))
            att.x_g.copy_(1 - ramp.pow(0.2 * ratio_1_to_almost0).view(1, 1, C))
            position = torch.arange(C, dtype=torch.float32) / max(C - 1, 1)
            decay_speed = -7 + 5 * position.pow(0.85 + 1.0 * ratio_0_to_1 ** 0.5)
            att.w0.copy_((decay_speed + 0.5).view(1, 1, C))
            att.w1.zero_()
            orthogonal_(att.w2, 0.1)
            att.a0.zero_()
            att.a1.zero_()
            orthogonal_(att.a2, 0.1)
            att.v0.fill_(1.0)
            att.v1.zero_()
            orthogonal_(att.v2, 0.1)
            att.g1.zero_()
            orthogonal_(att.g2, 0.1)
            att.k_k.fill_(0.85)
            att.k_a.fill_(1.0)
            att.r_k.fill_(-0.04)
            bound = 0.5 / math.sqrt(C)
            uniform_(att.receptance.weight, bound)
            uniform_(att.key.weight, 0.05 / math.sqrt(C))
            uniform_(att.value.weight, bound)
            att.output.weight.zero_()
            att.ln_x.weight.fill_(((1 + i) / L) ** 0.7)
            att.ln_x.bias.zero_()
            block.ffn.x_k.copy_(1 - ramp.pow(ratio_1_to_almost0 ** 4).view(1, 1, C))
            uniform_(block.ffn.key.weight, bound)
            block.ffn.value.weight.zero_()
            for norm in (block.ln1, block.ln2) + ((block.ln0,) if i == 0 else ()):
                norm.weight.fill_(1.0)
                norm.bias.zero_()
        uniform_(model.emb.weight, 1e-4)
        model.ln_out.weight.fill_(1.0)
        model.ln_out.bias.zero_()
        head_gain = 0.5 * math.sqrt(shape.vocab / C) if shape.vocab > C else 0.5
        orthogonal_(model.head.weight, head_gain)
