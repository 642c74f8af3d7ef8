"""A stand-in for Model that emits a scripted token sequence, to test control flow exactly."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace
from typing import Sequence

import torch

from engine.checkpoint import ModelConfig
from engine.state import State


class ScriptedModel:
    """Greedy decoding yields ``script`` in order, restarting at every prompt (a call with more
    than one token); every forward call is recorded."""

    chunk_len = 256

    def __init__(self, script: Sequence[int], vocab: int = 256, delay: float = 0.0) -> None:
        self.script = list(script)
        self.config = ModelConfig(1, 64, 1, 64, vocab, 256, 32, 32, 32, 32)
        self.delay = delay
        self.info = SimpleNamespace(name="scripted", path="scripted.pth")
        self.calls: list[list[int]] = []
        self._position = 0
        self.lock = threading.Lock()

    def zero_state(self) -> State:
        return State.zeros(self.config)

    def forward(self, tokens: Sequence[int], state: State | None = None) -> tuple[torch.Tensor, State]:
        if self.delay:
            time.sleep(self.delay)
        with self.lock:
            self.calls.append(list(tokens))
            if len(tokens) > 1:
                self._position = 0
            next_token = self.script[self._position % len(self.script)]
            self._position += 1
        logits = torch.full((self.config.vocab,), -10.0)
        logits[next_token] = 10.0
        new = (state or self.zero_state()).clone()
        new.tokens_seen += len(tokens)
        return logits, new
