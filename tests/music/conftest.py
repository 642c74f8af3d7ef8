"""Random-weight music models (the shipped demos are still being trained)."""

from __future__ import annotations

import pytest

from engine import build_model
from engine.music import midi_vocab
from engine.synthetic import random_state_dict


@pytest.fixture(scope="session")
def midi_model():
    """A tiny random model over the 20,096-token MIDI-LLM vocabulary."""
    return build_model(random_state_dict(2, 64, midi_vocab.VOCAB_SIZE, seed=11), path="random-MIDI.pth", device="cpu", dtype="fp32")


@pytest.fixture(scope="session")
def abc_model():
    """A tiny random character-level model over 128 ids (ABC)."""
    return build_model(random_state_dict(2, 64, 128, seed=12), path="random-ABC.pth", device="cpu", dtype="fp32")


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tiny models run 10× faster on one thread than on two contended cores; restore after."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
