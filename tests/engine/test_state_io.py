"""rwkv-tui state files: exact round trips, and refusal of every kind of bad file."""

from __future__ import annotations

import errno
import json
import os
import pickle
import struct
import time
from pathlib import Path

import pytest
import torch

from engine import StateError, build_model
from engine.errors import StateModelMismatchError
from engine.state import State
from engine.state_io import (
    FORMAT_VERSION, load_state, load_state_file, read_state_info, read_transcript, save_state,
)
from engine.synthetic import random_state_dict
from tests.helpers import deny_reading

PROMPT = list(b"The state of an RNN is its whole memory.")
CONTINUATION = list(b" Continue exactly.")


@pytest.fixture(scope="module")
def primed(tiny_model):
    logits, state = tiny_model.forward(PROMPT, None)
    return logits, state


@pytest.fixture(scope="module")
def other_weights_model():
    """Same shapes as ``tiny_model``, different weights: the fingerprint must tell them apart."""
    return build_model(random_state_dict(2, 128, 256, seed=8), device="cpu", dtype="fp32", path="other.pth")


@pytest.fixture(scope="module")
def other_shape_model():
    return build_model(random_state_dict(3, 128, 256, seed=9), device="cpu", dtype="fp32", path="deeper.pth")


def _save(tmp_path: Path, state: State, model, **kwargs) -> Path:
    return save_state(tmp_path / "s.state.safetensors", state, model, **kwargs)


def _rewrite_header(path: Path, edit) -> None:
    """Apply ``edit`` to the parsed JSON header and write the file back, data unchanged."""
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    edit(header)
    new = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(new)) + new + raw[8 + n:])


def _refused(path: Path, model, *words: str) -> str:
    """Loading must fail with a one-line StateError naming the file; the caller's state stays."""
    current = model.zero_state()
    before = current.clone()
    with pytest.raises(StateError) as info:
        current = load_state(path, model)
    message = str(info.value)
    assert "\n" not in message
    assert str(path) in message
    for word in words:
        assert word in message.lower(), message
    assert current.equal(before)
    return message


# ---------------------------------------------------------------------------------- round trips


def test_save_load_continue_gives_bitwise_identical_logits(tmp_path, tiny_model, primed):
    logits, state = primed
    path = _save(tmp_path, state, tiny_model, tokens=PROMPT, logits=logits, transcript={"note": "ünïcode"})
    loaded = load_state_file(path, tiny_model)

    assert loaded.state.equal(state)
    assert loaded.state.tokens_seen == len(PROMPT)
    assert loaded.tokens == PROMPT
    assert torch.equal(loaded.logits, logits)
    assert loaded.transcript == {"note": "ünïcode"}
    expected, expected_state = tiny_model.forward(CONTINUATION, state)
    got, got_state = tiny_model.forward(CONTINUATION, loaded.state)
    assert torch.equal(expected, got)
    assert got_state.equal(expected_state)


def test_header_describes_the_file_without_a_model(tmp_path, tiny_model, primed):
    _, state = primed
    state = state.clone()
    state.meta["imported_from"] = "x.pth"
    path = _save(tmp_path, state, tiny_model, tokens=PROMPT)
    info = read_state_info(path)
    assert info.format_version == FORMAT_VERSION
    assert info.kind == "state"
    assert info.fingerprint == tiny_model.info.fingerprint
    assert info.model_name == "tiny-bytes"
    assert (info.n_layer, info.n_embd, info.n_head, info.head_size, info.vocab) == (2, 128, 2, 64, 256)
    assert info.dtype == "fp32"
    assert info.tokens_seen == len(PROMPT)
    assert info.history_tokens == len(PROMPT)
    assert info.state_bytes == tiny_model.info.state_bytes
    assert info.meta == {"imported_from": "x.pth"}
    assert info.file_bytes == path.stat().st_size
    assert abs(time.time() - _parse_time(info.created)) < 120
    assert read_transcript(path) is None


def _parse_time(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text).timestamp()


@pytest.mark.parametrize("dtype, tolerance", [("fp16", 1e-2), ("bf16", 5e-2)])
def test_half_precision_files_are_smaller_and_close(tmp_path, tiny_model, primed, dtype, tolerance):
    _, state = primed
    full = _save(tmp_path, state, tiny_model)
    half = save_state(tmp_path / f"half-{dtype}.state.safetensors", state, tiny_model, dtype=dtype)
    assert half.stat().st_size < 0.6 * full.stat().st_size
    loaded = load_state(half, tiny_model)
    assert loaded.wkv.dtype == torch.float32
    scale = state.wkv.abs().max()
    assert (loaded.wkv - state.wkv).abs().max() <= tolerance * scale
    assert read_state_info(half).dtype == dtype


def test_unbound_state_loads_into_any_model_of_that_shape(tmp_path, tiny_model, other_weights_model, primed):
    _, state = primed
    path = _save(tmp_path, state, None)
    assert read_state_info(path).fingerprint == ""
    assert load_state(path, other_weights_model).equal(state)


# ---------------------------------------------------------------------------------- mismatch


def test_other_weights_are_refused_unless_allowed(tmp_path, tiny_model, other_weights_model, primed):
    _, state = primed
    path = _save(tmp_path, state, tiny_model)
    with pytest.raises(StateModelMismatchError) as info:
        load_state(path, other_weights_model)
    message = str(info.value)
    assert "\n" not in message and "other weights" in message
    assert info.value.file_fingerprint == tiny_model.info.fingerprint
    assert info.value.model_fingerprint == other_weights_model.info.fingerprint
    assert load_state(path, other_weights_model, allow_other_model=True).equal(state)


def test_other_shapes_are_refused_even_when_allowed(tmp_path, tiny_model, other_shape_model, primed):
    _, state = primed
    path = _save(tmp_path, state, tiny_model)
    message = _refused(path, other_shape_model, "2 layers", "3 layers")
    with pytest.raises(StateError):
        load_state(path, other_shape_model, allow_other_model=True)
    assert "deeper" in message


def test_saving_a_state_that_does_not_belong_to_the_model_is_refused(tmp_path, other_shape_model, primed):
    _, state = primed
    with pytest.raises(StateError, match="does not belong"):
        save_state(tmp_path / "x.state.safetensors", state, other_shape_model)


def test_newer_format_version_asks_for_an_upgrade(tmp_path, tiny_model, primed):
    path = _save(tmp_path, primed[1], tiny_model)
    _rewrite_header(path, lambda h: h["__metadata__"].update(format_version=str(FORMAT_VERSION + 1)))
    _refused(path, tiny_model, "newer", "upgrade")


# ---------------------------------------------------------------------------------- damage


def test_truncated_files_are_refused(tmp_path, tiny_model, primed):
    path = _save(tmp_path, primed[1], tiny_model, tokens=PROMPT)
    data = path.read_bytes()
    header_len = struct.unpack("<Q", data[:8])[0]
    for cut in (0, 5, 8 + header_len // 2, 8 + header_len + 10, len(data) - 1):
        path.write_bytes(data[:cut])
        message = _refused(path, tiny_model)
        assert "truncated" in message or "too short" in message, message


def test_trailing_garbage_is_refused(tmp_path, tiny_model, primed):
    path = _save(tmp_path, primed[1], tiny_model)
    path.write_bytes(path.read_bytes() + b"\x00" * 16)
    _refused(path, tiny_model, "unexpected bytes")


def test_non_finite_values_are_refused(tmp_path, tiny_model, primed):
    path = _save(tmp_path, primed[1], tiny_model)
    data = bytearray(path.read_bytes())
    header_len = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + header_len])
    begin = header["wkv"]["data_offsets"][0]
    data[8 + header_len + begin:8 + header_len + begin + 4] = struct.pack("<f", float("nan"))
    path.write_bytes(bytes(data))
    _refused(path, tiny_model, "checksum")
    _rewrite_header(path, lambda h: h["__metadata__"].pop("checksum"))  # as earlier versions wrote it
    _refused(path, tiny_model, "nan")


def test_saving_a_non_finite_state_is_refused_and_keeps_the_old_file(tmp_path, tiny_model, primed):
    path = _save(tmp_path, primed[1], tiny_model)
    before = path.read_bytes()
    broken = primed[1].clone()
    broken.wkv[0, 0, 0, 0] = float("inf")
    with pytest.raises(StateError, match="NaN or infinite"):
        save_state(path, broken, tiny_model)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary_file(tmp_path, tiny_model, primed, monkeypatch):
    target = tmp_path / "missing-folder" / "s.state.safetensors"
    with pytest.raises(StateError, match="does not exist"):
        save_state(target, primed[1], tiny_model)

    path = _save(tmp_path, tiny_model.zero_state(), tiny_model)
    before = path.read_bytes()

    def disk_full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("engine.atomic.os.fsync", disk_full)
    with pytest.raises(StateError) as info:
        save_state(path, primed[1], tiny_model)
    assert "No space left on device" in str(info.value) and str(path) in str(info.value)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


@pytest.mark.parametrize(
    "edit, words",
    [
        (lambda h: h["__metadata__"].pop("format"), ("not an rwkv-tui state file",)),
        (lambda h: h["__metadata__"].update(n_layer="many"), ("n_layer",)),
        (lambda h: h["__metadata__"].update(n_layer="99999999"), ("out of range",)),
        (lambda h: h["__metadata__"].update(n_head="3"), ("n_head",)),
        (lambda h: h["__metadata__"].update(dtype="fp8"), ("dtype",)),
        (lambda h: h["__metadata__"].update(meta="[1, 2"), ("meta",)),
        (lambda h: h["wkv"].update(dtype="F64"), ("wkv", "f64")),
        (lambda h: h["wkv"].update(dtype="I8"), ("unsupported dtype",)),
        (lambda h: h["att_x"].update(shape=[2, 64]), ("att_x", "shape")),
        (lambda h: h["wkv"].update(shape=[10**12, 2, 64, 64]), ("wkv",)),
        (lambda h: h["ffn_x"].update(data_offsets=[0, 8]), ("ffn_x",)),
        (lambda h: h["ffn_x"].update(data_offsets=[-8, 1016]), ("offsets",)),
        (lambda h: h["ffn_x"].update(data_offsets=[True, 1024]), ("offsets",)),
        (lambda h: h.update(evil={"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}), ("unexpected tensor",)),
        (lambda h: h.pop("ffn_x"), ("",)),
        (lambda h: h.update(__metadata__=["not", "a", "dict"]), ("not an rwkv-tui state file",)),
    ],
)
def test_corrupt_headers_are_refused(tmp_path, tiny_model, primed, edit, words):
    path = _save(tmp_path, primed[1], tiny_model)
    _rewrite_header(path, edit)
    _refused(path, tiny_model, *words)


def test_garbage_and_empty_files_are_refused(tmp_path, tiny_model):
    path = tmp_path / "garbage.state.safetensors"
    path.write_bytes(os.urandom(4096))
    _refused(path, tiny_model)
    path.write_bytes(b"")
    _refused(path, tiny_model, "too short")
    path.write_bytes(struct.pack("<Q", 12) + b"not json!!!!")
    _refused(path, tiny_model)
    nested = b"[" * 100000 + b"]" * 100000
    path.write_bytes(struct.pack("<Q", len(nested)) + nested)
    _refused(path, tiny_model)
    _refused(tmp_path / "does-not-exist.state.safetensors", tiny_model, "no such file")
    _refused(tmp_path, tiny_model, "directory")


def test_huge_header_length_is_refused_without_reading(tmp_path, tiny_model):
    path = tmp_path / "huge.state.safetensors"
    path.write_bytes(struct.pack("<Q", 2**60) + b"{}")
    _refused(path, tiny_model, "header length")


# ---------------------------------------------------------------------------------- hostile


class _Payload:
    """Unpickling this would create a marker file: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_pickle_renamed_to_safetensors_is_refused_and_never_run(tmp_path, tiny_model):
    marker = tmp_path / "code-ran"
    path = tmp_path / "evil.state.safetensors"
    path.write_bytes(pickle.dumps({"att_x": _Payload(marker)}, protocol=4))
    _refused(path, tiny_model, "pickle")
    assert not marker.exists()


def test_pth_archive_renamed_to_safetensors_is_refused_and_never_run(tmp_path, tiny_model):
    marker = tmp_path / "code-ran"
    path = tmp_path / "evil.state.safetensors"
    torch.save({"blocks.0.att.time_state": torch.zeros(2, 64, 64), "x": _Payload(marker)}, path)
    _refused(path, tiny_model, ".pth")
    assert not marker.exists()


# ---------------------------------------------------------------------------------- format detection

#: Header lengths whose first two bytes (little-endian) read like a pickle's protocol marker
#: 80 02 … 80 05: what made our own files look like "a Python pickle".
PICKLE_LOOKING_LENGTHS = [0x0080 | (protocol << 8) for protocol in (2, 3, 4, 5)]


def _header_length(path: Path) -> int:
    with path.open("rb") as handle:
        return struct.unpack("<Q", handle.read(8))[0]


def save_with_header_length(path: Path, state: State, model, target: int, **kwargs) -> Path | None:
    """Save ``state`` with a metadata note padded so the JSON header is exactly ``target`` bytes
    (None when the header is longer than that even without the note)."""
    padded = state.clone()
    padded.meta["note"] = ""
    save_state(path, padded, model, **kwargs)
    if _header_length(path) > target:
        return None
    padded.meta["note"] = "n" * (target - _header_length(path))  # one byte of header per character
    save_state(path, padded, model, **kwargs)
    assert _header_length(path) == target
    return path


@pytest.mark.parametrize("target", PICKLE_LOOKING_LENGTHS + [length + 65536 for length in PICKLE_LOOKING_LENGTHS])
def test_a_header_length_that_looks_like_a_pickle_marker_still_loads(tmp_path, tiny_model, primed, target):
    from engine.state_io import is_state_file

    path = save_with_header_length(tmp_path / "ours.state.safetensors", primed[1], tiny_model, target)
    assert path.read_bytes()[:1] == b"\x80" and path.read_bytes()[1] in (2, 3, 4, 5)
    assert is_state_file(path)
    assert read_state_info(path).meta["note"].startswith("n")
    assert load_state(path, tiny_model).equal(primed[1])


def test_every_state_file_we_write_loads_back(tmp_path_factory, tiny_model, primed):
    """Property: over random header lengths (and the ones that start like other formats),
    what save_state writes, read_state_info and load_state_file read back."""
    from hypothesis import assume, given, settings, strategies as st

    from engine.state_io import is_state_file

    lengths = st.one_of(
        st.integers(1000, 300_000).map(lambda n: n - n % 8),  # safetensors pads headers to 8 bytes
        st.sampled_from(PICKLE_LOOKING_LENGTHS).flatmap(lambda low: st.integers(0, 4).map(lambda k: low + k * 65536)),
    )
    folder = tmp_path_factory.mktemp("property")

    @settings(max_examples=40, deadline=None, derandomize=True, database=None)
    @given(target=lengths, with_tokens=st.booleans(), dtype=st.sampled_from(["fp32", "bf16"]))
    def round_trip(target: int, with_tokens: bool, dtype: str) -> None:
        path = save_with_header_length(
            folder / "p.state.safetensors", primed[1], tiny_model, target,
            tokens=PROMPT if with_tokens else None, logits=primed[0], dtype=dtype,
        )
        assume(path is not None)
        assert is_state_file(path)
        loaded = load_state_file(path, tiny_model)
        assert loaded.tokens == (PROMPT if with_tokens else None)
        assert torch.equal(loaded.logits, primed[0])
        if dtype == "fp32":
            assert loaded.state.equal(primed[1])

    round_trip()


def test_is_state_file_answers_false_for_other_formats_and_state_error_for_damage(tmp_path, primed, tiny_model):
    from engine.state_io import is_state_file

    pth = tmp_path / "tuned.pth"
    torch.save({"blocks.0.att.time_state": torch.zeros(2, 64, 64)}, pth)
    legacy = tmp_path / "legacy.pth"
    torch.save({"x": torch.zeros(2)}, legacy, _use_new_zipfile_serialization=False)
    assert not is_state_file(pth) and not is_state_file(legacy)
    whole = save_state(tmp_path / "whole.state.safetensors", primed[1], tiny_model).read_bytes()
    header_len = struct.unpack("<Q", whole[:8])[0]
    damaged = {
        "empty": b"",
        "three-bytes": b"abc",
        "truncated-header": whole[: 8 + header_len // 2],
        "bad-utf8-header": struct.pack("<Q", 16) + b'{"a": "\xff\xfe"} ',
        "huge-header-length": struct.pack("<Q", 2**60) + b"{}",
        "noise": os.urandom(64),
    }
    for name, data in damaged.items():
        path = tmp_path / f"{name}.state.safetensors"
        path.write_bytes(data)
        with pytest.raises(StateError) as info:
            is_state_file(path)
        assert str(path) in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(StateError, match="directory"):
        is_state_file(tmp_path)


def test_an_unreadable_state_file_is_a_state_error_that_says_so(tmp_path, primed, tiny_model, monkeypatch):
    from engine.state_io import is_state_file

    path = save_state(tmp_path / "locked.state.safetensors", primed[1], tiny_model)
    deny_reading(path, monkeypatch)
    for read in (is_state_file, read_state_info, lambda p: load_state(p, tiny_model)):
        with pytest.raises(StateError) as info:
            read(path)
        assert "permission denied" in str(info.value).lower() and str(path) in str(info.value)


# ---------------------------------------------------------------------------------- integrity


def _flip_bit(path: Path, tensor: str, bit: int) -> None:
    data = bytearray(path.read_bytes())
    header_len = struct.unpack("<Q", data[:8])[0]
    begin = json.loads(data[8:8 + header_len])[tensor]["data_offsets"][0]
    data[8 + header_len + begin + bit // 8] ^= 1 << (bit % 8)
    path.write_bytes(bytes(data))


def test_a_flipped_exponent_bit_in_the_state_is_refused(tmp_path, tiny_model, primed):
    path = _save(tmp_path, primed[1], tiny_model)
    # The top exponent bit of the first WKV entry: still a finite number, but 2**128 times off.
    _flip_bit(path, "wkv", 30)
    message = _refused(path, tiny_model, "checksum")
    assert "damaged" in message


def test_a_changed_transcript_is_refused(tmp_path, tiny_model, primed):
    path = _save(tmp_path, primed[1], tiny_model, transcript={"turns": [{"prompt_tokens": [1, 2, 3]}]})
    _rewrite_header(path, lambda h: h["__metadata__"].update(
        transcript=h["__metadata__"]["transcript"].replace("[1, 2, 3]", "[1, 2, 7]")))
    _refused(path, tiny_model, "checksum")


def test_files_without_a_checksum_from_earlier_versions_still_load(tmp_path, tiny_model, primed):
    path = _save(tmp_path, primed[1], tiny_model, tokens=PROMPT, transcript={"a": 1})
    _rewrite_header(path, lambda h: h["__metadata__"].pop("checksum"))
    loaded = load_state_file(path, tiny_model)
    assert loaded.state.equal(primed[1]) and loaded.tokens == PROMPT and loaded.transcript == {"a": 1}


def test_a_malformed_checksum_is_a_corrupt_header(tmp_path, tiny_model, primed):
    path = _save(tmp_path, primed[1], tiny_model)
    _rewrite_header(path, lambda h: h["__metadata__"].update(checksum="crc32:xyz"))
    _refused(path, tiny_model, "checksum")


# ---------------------------------------------------------------------------------- privacy


def test_new_state_files_are_private_whatever_the_umask(tmp_path, tiny_model, primed):
    old = os.umask(0o022)
    try:
        path = _save(tmp_path, primed[1], tiny_model)
        assert path.stat().st_mode & 0o777 == 0o600
        path.chmod(0o640)  # the user shared it on purpose: an overwrite keeps that (docs/state.md)
        _save(tmp_path, primed[1], tiny_model)
        assert path.stat().st_mode & 0o777 == 0o640
    finally:
        os.umask(old)


# ---------------------------------------------------------------------------------- fingerprints


def test_the_other_weights_message_names_no_flag_that_does_not_exist(tmp_path, tiny_model, other_weights_model, primed):
    path = _save(tmp_path, primed[1], tiny_model)
    with pytest.raises(StateModelMismatchError) as info:
        load_state(path, other_weights_model)
    assert "--allow-other-model" not in str(info.value)
    assert "other weights" in str(info.value)


def _as_older_file(path: Path, fingerprint: str) -> None:
    """Rewrite a file as an earlier version wrote it: old fingerprint scheme, no checksum."""
    def edit(header):
        meta = header["__metadata__"]
        meta.pop("fingerprint_scheme")
        meta.pop("checksum")
        meta["fingerprint"] = fingerprint
    _rewrite_header(path, edit)


def test_files_with_the_older_fingerprint_still_load_into_their_model(tmp_path, tiny_model, primed):
    path = _save(tmp_path, primed[1], tiny_model)
    _as_older_file(path, tiny_model.info.legacy_fingerprint)
    assert tiny_model.info.legacy_fingerprint != tiny_model.info.fingerprint
    assert load_state(path, tiny_model).equal(primed[1])


def test_files_with_the_older_fingerprint_of_other_weights_say_so(tmp_path, tiny_model, other_weights_model, primed):
    path = _save(tmp_path, primed[1], tiny_model)
    _as_older_file(path, tiny_model.info.legacy_fingerprint)
    with pytest.raises(StateModelMismatchError) as info:
        load_state(path, other_weights_model)
    message = str(info.value)
    assert "other weights" in message and "older" in message and "\n" not in message
    assert load_state(path, other_weights_model, allow_other_model=True).equal(primed[1])


def test_a_newer_fingerprint_scheme_is_not_matched_against_the_older_one(tmp_path, tiny_model, primed):
    """A file written with the current scheme must match the current fingerprint, not the weak one."""
    path = _save(tmp_path, primed[1], tiny_model)
    _rewrite_header(path, lambda h: h["__metadata__"].update(fingerprint=tiny_model.info.legacy_fingerprint))
    with pytest.raises(StateModelMismatchError):
        load_state(path, tiny_model)


def test_re_saving_an_older_file_keeps_its_binding(tmp_path, tiny_model, primed):
    """``state convert`` re-binds to the source file's info: an older file stays an older file."""
    path = _save(tmp_path, primed[1], tiny_model)
    _as_older_file(path, tiny_model.info.legacy_fingerprint)
    copy = save_state(tmp_path / "copy.state.safetensors", primed[1], read_state_info(path))
    info = read_state_info(copy)
    assert (info.fingerprint, info.fingerprint_scheme) == (tiny_model.info.legacy_fingerprint, 1)
    assert info.checksum and load_state(copy, tiny_model).equal(primed[1])


def test_a_fingerprint_of_a_newer_scheme_is_not_taken_for_a_match(tmp_path, tiny_model, primed):
    path = _save(tmp_path, primed[1], tiny_model)
    _rewrite_header(path, lambda h: h["__metadata__"].update(fingerprint_scheme=str(99)))
    with pytest.raises(StateModelMismatchError) as info:
        load_state(path, tiny_model)
    assert "newer" in str(info.value)
    assert load_state(path, tiny_model, allow_other_model=True).equal(primed[1])
