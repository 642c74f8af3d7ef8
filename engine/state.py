"""The RNN state of an RWKV-7 model: everything a conversation remembers, in fixed size.

Layout per layer ``i`` (matches the reference implementations' state list):
``att_x[i]`` time-mix token-shift vector (C), ``wkv[i]`` the WKV matrices (H, N, N) stored
[head][value][key], ``ffn_x[i]`` channel-mix token-shift vector (C). All fp32, so a state is
exact whatever dtype the weights run in, and states from CPU and GPU runs are interchangeable.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from engine.checkpoint import ModelConfig
from engine.errors import StateError


@dataclass
class State:
    """A model state. Treat it as a value: ``Model.forward`` returns a new one."""

    att_x: torch.Tensor
    wkv: torch.Tensor
    ffn_x: torch.Tensor
    #: Tokens consumed since the zero state (or since an imported state), for display and files.
    tokens_seen: int = 0
    #: Free-form provenance, e.g. {"imported_from": "...pth"}; saved with the state.
    meta: dict[str, str] = field(default_factory=dict)

    @classmethod
    def zeros(cls, config: ModelConfig, device: str | torch.device = "cpu") -> "State":
        """The initial state of every reference implementation."""
        n_layer, n_embd = config.n_layer, config.n_embd
        return cls(
            att_x=torch.zeros(n_layer, n_embd, dtype=torch.float32, device=device),
            wkv=torch.zeros(
                n_layer, config.n_head, config.head_size, config.head_size,
                dtype=torch.float32, device=device,
            ),
            ffn_x=torch.zeros(n_layer, n_embd, dtype=torch.float32, device=device),
        )

    @property
    def n_layer(self) -> int:
        return self.att_x.shape[0]

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.att_x, self.wkv, self.ffn_x))

    @property
    def device(self) -> torch.device:
        return self.wkv.device

    def clone(self) -> "State":
        """A deep copy: snapshots must not share storage with the live state."""
        return State(
            att_x=self.att_x.clone(), wkv=self.wkv.clone(), ffn_x=self.ffn_x.clone(),
            tokens_seen=self.tokens_seen, meta=dict(self.meta),
        )

    def to(self, device: str | torch.device) -> "State":
        """This state on another device (a copy unless it is already there)."""
        device = torch.device(device)
        if self.device == device:
            return self
        return State(
            att_x=self.att_x.to(device), wkv=self.wkv.to(device), ffn_x=self.ffn_x.to(device),
            tokens_seen=self.tokens_seen, meta=dict(self.meta),
        )

    def check_compatible(self, config: ModelConfig) -> None:
        """Raise StateError unless this state has the shapes ``config`` needs."""
        want = {
            "att_x": (config.n_layer, config.n_embd),
            "wkv": (config.n_layer, config.n_head, config.head_size, config.head_size),
            "ffn_x": (config.n_layer, config.n_embd),
        }
        for name, shape in want.items():
            tensor = getattr(self, name)
            if tuple(tensor.shape) != shape:
                raise StateError(
                    f"state does not fit this model: {name} has shape {tuple(tensor.shape)}, "
                    f"the model needs {shape}"
                )
            if tensor.dtype != torch.float32:
                raise StateError(f"state tensor {name} is {tensor.dtype}, expected float32")

    def equal(self, other: "State") -> bool:
        """Bitwise equality of the tensors (metadata ignored)."""
        return all(
            torch.equal(a.cpu(), b.cpu())
            for a, b in ((self.att_x, other.att_x), (self.wkv, other.wkv), (self.ffn_x, other.ffn_x))
        )
