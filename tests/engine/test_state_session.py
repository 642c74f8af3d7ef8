"""Saving and resuming whole conversations (the app's autosave on exit)."""

from __future__ import annotations

import os

import pytest
import torch

from engine import Conversation, SamplingParams, StateError, ThinkMode, get_tokenizer
from engine.session import (
    autosave, autosave_path, find_autosave, load_session, save_session, sessions_dir,
)
from engine.state_io import read_state_info, save_state

MESSAGES = ["first question", "second one", "third", "fourth"]


@pytest.fixture(scope="module")
def tokenizer():
    return get_tokenizer("bytes")


def _params() -> SamplingParams:
    return SamplingParams(temperature=0.8, top_p=0.9, max_tokens=6, seed=5)


def _conversation(model, tokenizer, turns: int, **kwargs) -> tuple[Conversation, list[str]]:
    conversation = Conversation(model, tokenizer, _params(), system="Be brief.", think=ThinkMode.SKIP, **kwargs)
    replies = [conversation.send(m).run().text for m in MESSAGES[:turns]]
    return conversation, replies


def test_resumed_session_continues_exactly_like_the_original(tmp_path, tiny_model, tokenizer):
    original, _ = _conversation(tiny_model, tokenizer, 3)
    path = save_session(tmp_path / "chat.state.safetensors", original)
    resumed = load_session(path, tiny_model, tokenizer)

    assert resumed.to_dict()["turns"] == original.to_dict()["turns"]
    assert resumed.system == "Be brief." and resumed.think is ThinkMode.SKIP
    assert resumed.params == original.params
    assert resumed.state.equal(original.state)
    assert torch.equal(resumed.logits, original.logits)
    assert [t.fed_tokens for t in resumed.turns] == [t.fed_tokens for t in original.turns]

    assert resumed.send(MESSAGES[3]).run().text == original.send(MESSAGES[3]).run().text
    assert resumed.state.equal(original.state)


def test_snapshots_left_out_of_the_file_are_rebuilt_by_replay(tmp_path, tiny_model, tokenizer):
    original, replies = _conversation(tiny_model, tokenizer, 4)
    before_turn_1 = original.turns[1].state_before
    per_snapshot = tiny_model.info.state_bytes + tiny_model.config.vocab * 4
    path = save_session(tmp_path / "small.state.safetensors", original, snapshot_budget=per_snapshot)
    assert read_state_info(path).snapshots == (3,)  # newest only; the zero initial state is implied

    resumed = load_session(path, tiny_model, tokenizer)
    assert [t.can_rewind for t in resumed.turns] == [True, False, False, True]
    resumed.rewind(1, replay=True)
    assert resumed.state.equal(before_turn_1)
    assert resumed.send(MESSAGES[1]).run().text == replies[1]


def test_non_zero_initial_state_is_kept(tmp_path, tiny_model, tokenizer):
    _, primed = tiny_model.forward(list(b"System prompt baked into a state."), None)
    conversation = Conversation(tiny_model, tokenizer, _params(), initial_state=primed)
    conversation.send("hi").run()
    path = save_session(tmp_path / "primed.state.safetensors", conversation, snapshot_budget=0)
    assert read_state_info(path).snapshots == (0,)
    resumed = load_session(path, tiny_model, tokenizer)
    assert resumed.initial_state.equal(primed)
    resumed.rewind(0)
    assert resumed.state.equal(primed)


def test_empty_conversation_round_trips(tmp_path, tiny_model, tokenizer):
    _, primed = tiny_model.forward(list(b"just a state"), None)
    conversation = Conversation(tiny_model, tokenizer, _params(), initial_state=primed)
    resumed = load_session(save_session(tmp_path / "e.state.safetensors", conversation), tiny_model, tokenizer)
    assert resumed.turns == [] and resumed.state.equal(primed)


def test_plain_state_file_starts_a_new_conversation(tmp_path, tiny_model, tokenizer):
    _, primed = tiny_model.forward(list(b"plain"), None)
    path = save_state(tmp_path / "plain.state.safetensors", primed, tiny_model)
    conversation = load_session(path, tiny_model, tokenizer)
    assert conversation.turns == [] and conversation.initial_state.equal(primed)


def test_session_file_is_also_a_state_file(tmp_path, tiny_model, tokenizer):
    original, _ = _conversation(tiny_model, tokenizer, 2)
    path = save_session(tmp_path / "s.state.safetensors", original)
    from engine.state_io import load_state_file

    loaded = load_state_file(path, tiny_model)
    assert loaded.info.kind == "session"
    assert loaded.state.equal(original.state)
    assert loaded.tokens == [t for turn in original.turns for t in turn.fed_tokens]


@pytest.mark.parametrize(
    "transcript",
    [
        {"session_version": 1, "turns": "nope"},
        {"session_version": 99, "turns": []},
        {"session_version": 1, "turns": [{"user": "x"}], "initial_state": "zero", "sampling": {}},
        {"session_version": 1, "initial_state": "zero", "sampling": {"temperature": -1}, "turns": []},
        {"session_version": 1, "initial_state": "zero", "sampling": {}, "think": "ponder", "turns": []},
        {"session_version": 1, "initial_state": "snapshot", "sampling": {}, "turns": []},
        {"session_version": 1, "initial_state": "zero", "sampling": {}, "turns": [{
            "user": "x", "assistant": "y", "prompt_tokens": [1, 999], "prompt_tokens_fed": 2,
            "reply_tokens": []}]},
    ],
)
def test_corrupt_transcripts_are_refused(tmp_path, tiny_model, tokenizer, transcript):
    path = save_state(
        tmp_path / "bad.state.safetensors", tiny_model.zero_state(), tiny_model,
        transcript=transcript, kind="session",
    )
    with pytest.raises(StateError) as info:
        load_session(path, tiny_model, tokenizer)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_autosave_is_per_model_and_offered_for_resume(tiny_model, tokenizer):
    assert str(sessions_dir()).startswith(os.environ["XDG_STATE_HOME"])
    assert find_autosave(tiny_model) is None
    conversation, _ = _conversation(tiny_model, tokenizer, 2)
    path = autosave(conversation)
    assert path == autosave_path(tiny_model)
    assert tiny_model.info.fingerprint in path.name
    summary = find_autosave(tiny_model)
    assert summary is not None
    assert summary.turns == 2 and summary.last_user == MESSAGES[1]
    assert summary.tokens_seen == conversation.state.tokens_seen
    assert "2 turns" in summary.describe()
    # A damaged autosave is simply not offered.
    path.write_bytes(path.read_bytes()[:100])
    assert find_autosave(tiny_model) is None


def test_saving_while_generating_is_refused(tmp_path, tiny_model, tokenizer):
    conversation = Conversation(tiny_model, tokenizer, _params())
    generation = conversation.send("hello")
    iterator = iter(generation)
    next(iterator, None)
    if generation.result is None:
        with pytest.raises(RuntimeError):
            save_session(tmp_path / "x.state.safetensors", conversation)
    for _ in iterator:
        pass
    save_session(tmp_path / "x.state.safetensors", conversation)


def test_start_state_accepts_every_kind_of_state_file(tmp_path, tiny_model, tokenizer):
    from engine.session import load_start_state
    from engine.time_state import export_time_state

    _, primed = tiny_model.forward(list(b"a state to start from"), None)
    ours = save_state(tmp_path / "ours.state.safetensors", primed, tiny_model)
    assert load_start_state(ours, tiny_model).equal(primed)

    conversation, _ = _conversation(tiny_model, tokenizer, 1)
    session = save_session(tmp_path / "session.state.safetensors", conversation)
    assert load_start_state(session, tiny_model).equal(conversation.state)

    tuned = export_time_state(tmp_path / "tuned.pth", primed, orientation="transposed")
    started = load_start_state(tuned, tiny_model, orientation="transposed")
    assert torch.equal(started.wkv, primed.wkv) and not started.att_x.any()

    with pytest.raises(StateError):
        load_start_state(tmp_path / "missing.pth", tiny_model)


# ---------------------------------------------------------------------------------- format and privacy


@pytest.fixture
def own_state_dir(tmp_path, monkeypatch):
    """A sessions folder of this test's own: autosaves must not leak into other tests."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg-state"))


def _header_length(path) -> int:
    with open(path, "rb") as handle:
        return int.from_bytes(handle.read(8), "little")


def _autosave_with_header_length(conversation, target: int):
    """Autosave with the last message padded so the header is exactly ``target`` bytes (None when
    the header is longer than that already)."""
    turn = conversation.turns[-1]
    text = turn.user
    path = autosave(conversation)
    if _header_length(path) > target:
        return None
    turn.user = text + "m" * (target - _header_length(path))  # one header byte per ASCII character
    autosave(conversation)
    assert _header_length(path) == target
    return path


def test_sessions_whose_header_length_starts_like_a_pickle_are_offered_and_resumed(tiny_model, tokenizer, own_state_dir):
    """Issue 19.4: such an autosave was never offered, and the next exit overwrote it."""
    conversation, _ = _conversation(tiny_model, tokenizer, 1)
    for low in (0x0280, 0x0380, 0x0480, 0x0580):
        target = low + 65536  # a message of about 64 KB puts the header there
        path = _autosave_with_header_length(conversation, target)
        assert path.read_bytes()[:2] == bytes([0x80, low >> 8])
        summary = find_autosave(tiny_model)
        assert summary is not None and summary.path == path
        resumed = load_session(path, tiny_model, tokenizer)
        assert resumed.turns[-1].user == conversation.turns[-1].user


def test_every_session_we_write_is_offered_and_resumes(tiny_model, tokenizer, own_state_dir):
    """Property over message lengths: find_autosave offers what autosave wrote, and it resumes."""
    from hypothesis import assume, given, settings, strategies as st

    conversation, _ = _conversation(tiny_model, tokenizer, 1)
    original = conversation.turns[-1].user

    @settings(max_examples=25, deadline=None, derandomize=True, database=None)
    @given(length=st.one_of(
        st.integers(0, 200_000),
        st.sampled_from([0x0280, 0x0380, 0x0480, 0x0580]).flatmap(lambda low: st.integers(1, 3).map(lambda k: -(low + k * 65536))),
    ))
    def round_trip(length: int) -> None:
        if length >= 0:  # a message of that many characters
            conversation.turns[-1].user = original + "é" * (length // 2) + "m" * (length - length // 2)
            path = autosave(conversation)
        else:  # a message that makes the header exactly -length bytes long
            conversation.turns[-1].user = original
            path = _autosave_with_header_length(conversation, -length)
            assume(path is not None)
        summary = find_autosave(tiny_model)
        assert summary is not None and summary.turns == 1
        assert load_session(path, tiny_model, tokenizer).turns[-1].user == conversation.turns[-1].user

    round_trip()


def test_autosaves_are_private(tiny_model, tokenizer, own_state_dir):
    old = os.umask(0o022)
    try:
        folder = sessions_dir()
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o755)  # as earlier versions left it
        conversation, _ = _conversation(tiny_model, tokenizer, 1)
        path = autosave(conversation)
        assert folder.stat().st_mode & 0o777 == 0o700
        assert path.stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(old)


def test_a_new_sessions_folder_is_private(tiny_model, tokenizer, own_state_dir):
    assert not sessions_dir().exists()
    conversation, _ = _conversation(tiny_model, tokenizer, 1)
    autosave(conversation)
    assert sessions_dir().stat().st_mode & 0o777 == 0o700


def test_an_autosave_from_an_earlier_version_is_still_offered(tiny_model, tokenizer, own_state_dir):
    """Earlier versions named autosaves by the older fingerprint; upgrading must not hide them."""
    import json
    import struct

    conversation, _ = _conversation(tiny_model, tokenizer, 2)
    path = autosave(conversation)
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    meta = header["__metadata__"]
    meta.pop("fingerprint_scheme"), meta.pop("checksum")
    meta["fingerprint"] = tiny_model.info.legacy_fingerprint
    new = json.dumps(header).encode()
    older = path.with_name(f"autosave-{tiny_model.info.legacy_fingerprint}.state.safetensors")
    older.write_bytes(struct.pack("<Q", len(new)) + new + raw[8 + n:])
    path.unlink()

    summary = find_autosave(tiny_model)
    assert summary is not None and summary.path == older and summary.turns == 2
    resumed = load_session(summary.path, tiny_model, tokenizer)
    assert resumed.state.equal(conversation.state)


def test_a_turn_stopped_before_its_first_token_saves_and_resumes(tmp_path, tiny_model, tokenizer):
    """Issue 19.6: a turn stopped before anything was fed leaves the state as it was, so the live
    state and the snapshots around that turn are one State object (states are values and are shared
    on purpose). Saving used to fail with safetensors' "Some tensors share memory"."""
    original = Conversation(tiny_model, tokenizer, _params())
    original.send("A").run()
    original.send("B").run()
    stopped = original.send("C")
    stopped.cancel()
    assert stopped.run().stop_reason.value == "cancelled"
    assert original.turns[2].state_before is original.state  # shared, not copied

    three = load_session(save_session(tmp_path / "three.state.safetensors", original), tiny_model, tokenizer)
    assert three.state.equal(original.state) and len(three.turns) == 3

    original.send("D").run()
    assert original.turns[3].state_before is original.turns[2].state_before
    resumed = load_session(save_session(tmp_path / "four.state.safetensors", original), tiny_model, tokenizer)
    assert resumed.to_dict()["turns"] == original.to_dict()["turns"]
    assert resumed.state.equal(original.state)
    # Each snapshot came back on its own and rewinding to it is exact.
    resumed.rewind(3)
    assert resumed.state.equal(original.turns[3].state_before)
    resumed.rewind(2)
    assert resumed.state.equal(original.turns[2].state_before)
    assert resumed.send("E").run().text == original.edit(2, "E").run().text


def test_a_capture_is_written_as_the_conversation_was_when_captured(tmp_path, tiny_model, tokenizer):
    """The app captures a conversation on the engine thread and writes it on another: whatever the
    conversation does meanwhile (a new turn, a rewind, evicted snapshots) must not reach the file."""
    from engine.session import capture_session, write_session

    conversation, _ = _conversation(tiny_model, tokenizer, 3)
    turns = conversation.to_dict()["turns"]
    state = conversation.state
    snapshot_before_last = conversation.turns[2].state_before
    capture = capture_session(conversation)

    conversation.send(MESSAGES[3]).run()
    conversation.set_snapshot_budget(0)  # evicts every snapshot it can
    conversation.rewind(1, replay=True)

    resumed = load_session(write_session(tmp_path / "captured.state.safetensors", capture), tiny_model, tokenizer)
    assert resumed.to_dict()["turns"] == turns
    assert resumed.state.equal(state)
    resumed.rewind(2)
    assert resumed.state.equal(snapshot_before_last)


def test_saving_a_capture_while_a_reply_is_generated_is_refused(tiny_model, tokenizer):
    from engine.session import capture_session

    conversation = Conversation(tiny_model, tokenizer, _params())
    conversation.send("first").run()
    generation = conversation.send("second")
    with pytest.raises(RuntimeError):
        capture_session(conversation)
    generation.run()
    assert len(capture_session(conversation).transcript["turns"]) == 2


def test_autosaves_keep_fewer_snapshots_than_a_save_by_hand(tiny_model, tokenizer, monkeypatch):
    """Autosaves are written after every turn, so they carry a smaller snapshot budget; what they
    leave out is rebuilt by replay."""
    import engine.session as session

    conversation, _ = _conversation(tiny_model, tokenizer, 4)
    per_snapshot = tiny_model.info.state_bytes + tiny_model.config.vocab * 4
    monkeypatch.setattr(session, "AUTOSAVE_SNAPSHOT_BUDGET", 2 * per_snapshot)
    assert read_state_info(autosave(conversation)).snapshots == (2, 3)
    resumed = load_session(autosave_path(tiny_model), tiny_model, tokenizer)
    resumed.rewind(1, replay=True)
    assert resumed.state.equal(conversation.turns[1].state_before)
