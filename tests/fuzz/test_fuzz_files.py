"""Damaged files thrown at every reader of files a user may hand us.

Each seed is a valid file, made as small as the format allows so that the mutations land in its
structure (zip directory, pickle, safetensors header, metadata) rather than in tensor payload.
The invariant is the same for every reader: it succeeds, or it raises one of our own errors with
a one-line message; it never raises anything else, never hangs and never changes the file.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
from hypothesis import given

from engine import Conversation, SamplingParams, build_model, get_tokenizer
from engine.errors import MAX_MESSAGE_CHARS, EngineError
from engine.state_io import is_state_file, load_state_file, read_state_info, save_state
from engine.synthetic import random_state_dict
from tests.fuzz.conftest import FUZZ
from tests.fuzz.mutations import digest, mutated, no_hang


def _tiny_weights() -> dict[str, torch.Tensor]:
    """The smallest x070 model the bytes tokenizer can drive: 1 layer, 2 heads of 8, bf16."""
    return random_state_dict(1, 16, 256, head_size=8, ffn_dim=32, ranks=(4, 4, 4, 4), dtype=torch.bfloat16, seed=3)


@pytest.fixture(scope="module")
def model():
    return build_model(_tiny_weights(), path="tiny.pth", device="cpu", dtype="fp32")


@pytest.fixture(scope="module")
def seeds(model, tmp_path_factory) -> dict[str, bytes]:
    """One valid file of every kind a reader below accepts."""
    from engine.session import save_session
    from engine.time_state import time_state_dict

    folder = tmp_path_factory.mktemp("seeds")
    buffer = io.BytesIO()
    torch.save(_tiny_weights(), buffer)
    legacy_checkpoint = io.BytesIO()  # keys and shapes inline in one pickle: mutations reach validation
    torch.save(_tiny_weights(), legacy_checkpoint, _use_new_zipfile_serialization=False)
    logits, state = model.forward(list(b"seed"), None)
    state_file = save_state(folder / "s.state.safetensors", state, model, tokens=list(b"seed"), logits=logits)
    conversation = Conversation(model, get_tokenizer("bytes"), SamplingParams(max_tokens=3, seed=1))
    conversation.send("hi").run()
    session_file = save_session(folder / "c.state.safetensors", conversation)
    time_state = time_state_dict(state)
    pth = io.BytesIO()
    torch.save(time_state, pth)
    legacy = io.BytesIO()
    torch.save(time_state, legacy, _use_new_zipfile_serialization=False)
    from safetensors.torch import save as safetensors_save

    return {
        "checkpoint": buffer.getvalue(),
        "checkpoint.legacy": legacy_checkpoint.getvalue(),
        "state": state_file.read_bytes(),
        "session": session_file.read_bytes(),
        "time_state.pth": pth.getvalue(),
        "time_state.legacy": legacy.getvalue(),
        "time_state.safetensors": safetensors_save(time_state),
    }


def _check(path: Path, data: bytes, read: Callable[[Path], Any]) -> None:
    """Write ``data`` to ``path`` and hold ``read`` to the invariant."""
    path.write_bytes(data)
    before = digest(path)
    try:
        no_hang(read, path)
    except EngineError as error:
        message = str(error)
        assert "\n" not in message and len(message) <= MAX_MESSAGE_CHARS, message
        assert message, f"{type(error).__name__} without a message"
    assert digest(path) == before, f"{read.__name__} changed the file it was only reading"


@pytest.mark.parametrize("kind", ["checkpoint", "checkpoint.legacy"])
def test_checkpoint_reader(kind, seeds, tmp_path_factory) -> None:
    from engine import load_model

    path = tmp_path_factory.mktemp("fuzz") / "model.pth"

    def load(target: Path) -> None:
        load_model(target, device="cpu", dtype="fp32")

    @FUZZ
    @given(data=mutated(seeds[kind]))
    def run(data: bytes) -> None:
        _check(path, data, load)

    run()


@pytest.mark.parametrize("kind", ["state", "session"])
def test_state_and_session_readers(kind, model, seeds, tmp_path_factory) -> None:
    from engine.session import load_session, load_start_state

    path = tmp_path_factory.mktemp("fuzz") / f"{kind}.state.safetensors"
    tokenizer = get_tokenizer("bytes")

    def read_all(target: Path) -> None:
        is_state_file(target)  # a bool or StateError, never anything else
        read_state_info(target)
        load_state_file(target)
        load_state_file(target, model)
        if kind == "session":
            load_session(target, model, tokenizer)

    def start_from(target: Path) -> None:
        load_start_state(target, model)  # what --state and the load dialog do with any file

    @FUZZ
    @given(data=mutated(seeds[kind]))
    def run(data: bytes) -> None:
        _check(path, data, read_all)
        _check(path, data, start_from)

    run()


@pytest.mark.parametrize("kind", ["time_state.pth", "time_state.legacy", "time_state.safetensors"])
def test_time_state_importer(kind, model, seeds, tmp_path_factory) -> None:
    from engine.time_state import import_time_state

    path = tmp_path_factory.mktemp("fuzz") / kind

    def read(target: Path) -> None:
        import_time_state(target, model)

    @FUZZ
    @given(data=mutated(seeds[kind]))
    def run(data: bytes) -> None:
        _check(path, data, read)

    run()


def test_the_seeds_themselves_load(model, seeds, tmp_path) -> None:
    """Without this, a broken seed would make every fuzz test pass on refusals alone."""
    from engine import load_model
    from engine.session import load_session
    from engine.time_state import import_time_state

    for kind, data in seeds.items():
        (tmp_path / kind).write_bytes(data)
    for kind in ("checkpoint", "checkpoint.legacy"):
        assert load_model(tmp_path / kind, device="cpu").info.fingerprint == model.info.fingerprint
    load_state_file(tmp_path / "state", model)
    assert load_session(tmp_path / "session", model, get_tokenizer("bytes")).turns
    for kind in ("time_state.pth", "time_state.legacy", "time_state.safetensors"):
        import_time_state(tmp_path / kind, model)
