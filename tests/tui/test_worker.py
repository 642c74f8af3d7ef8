"""The engine thread with the real engine on a tiny random model: commands in, events out."""

from __future__ import annotations

import json
from pathlib import Path

from engine import get_tokenizer
from tui.protocol import (
    ConversationInfo, Edit, Export, LoadModel, ModelLoaded, ModelLoadFailed,
    ModelLoading, NewConversation, Notice, PromptRejected, Regenerate, ReplyDelta, ReplyFailed,
    ReplyFinished, Rewind, Send, Stats, TranscriptReplaced, TranscriptTruncated, TurnStarted,
)
from tests.tui.conftest import Recorder, settings
from tui.worker import EngineWorker


def test_load_reports_progress_and_a_summary(worker, tiny_checkpoint: Path) -> None:
    _, rec = worker
    loading = rec.of(ModelLoading)
    assert loading and loading[-1].stage == "building the model"
    summary = rec.of(ModelLoaded)[0].summary
    assert (summary.n_layer, summary.n_embd, summary.vocab) == (2, 128, 256)
    assert summary.tokenizer == "bytes" and summary.device == "cpu" and summary.dtype == "fp32"
    assert summary.state_bytes > 0 and not summary.demo
    assert rec.of(TranscriptReplaced)[-1].turns == ()


def test_send_streams_deltas_that_add_up_to_the_reply(worker) -> None:
    w, rec = worker
    rec.clear()
    w.submit(Send("hello there", settings(max_tokens=40)))
    finished = rec.wait_for(lambda e: isinstance(e, ReplyFinished))
    started = rec.of(TurnStarted)[0]
    assert (started.index, started.user) == (0, "hello there")
    text = "".join(d.text for d in rec.of(ReplyDelta) if d.index == 0)
    assert text == finished.turn.reply
    assert 1 <= finished.turn.generated_tokens <= 40
    rec.wait_for(lambda e: isinstance(e, ConversationInfo))
    final_stats = [s for s in rec.of(Stats) if not s.generating][-1]
    assert final_stats.generated_tokens == finished.turn.generated_tokens
    # The live state has consumed the prompt and the reply.
    assert final_stats.tokens_seen >= len("User: hello there\n\nAssistant:") + finished.turn.generated_tokens - 1
    info = rec.of(ConversationInfo)[-1]
    assert len(info.turns) == 1 and info.snapshots_kept == 1 and info.turns[0].tokens_before == 0


def test_stop_ends_generation_within_one_token(worker) -> None:
    w, rec = worker
    rec.clear()
    w.submit(Send("go on forever", settings(max_tokens=100_000)))
    rec.wait_for(lambda e: isinstance(e, ReplyDelta))
    active = w._active
    assert active is not None
    assert w.stop()
    at_stop = active.stats.generated_tokens
    finished = rec.wait_for(lambda e: isinstance(e, ReplyFinished))
    assert finished.turn.stop_reason == "cancelled"
    assert finished.turn.generated_tokens <= at_stop + 1
    assert not w.busy


def test_stop_discards_a_queued_message(worker) -> None:
    w, rec = worker
    rec.clear()
    w.submit(Send("first", settings(max_tokens=100_000)))
    w.submit(Send("second", settings()))
    rec.wait_for(lambda e: isinstance(e, ReplyDelta))
    w.stop()
    rejected = rec.wait_for(lambda e: isinstance(e, PromptRejected))
    assert rejected.text == "second"
    assert [t.user for t in rec.of(TurnStarted)] == ["first"]


def test_regenerate_restores_the_snapshot_instead_of_refeeding_history(worker) -> None:
    w, rec = worker
    w.submit(Send("first message", settings()))
    rec.wait_for(lambda e: isinstance(e, ReplyFinished))
    w.submit(Send("second message", settings()))
    original = rec.wait_for(lambda e: isinstance(e, ReplyFinished) and e.turn.index == 1)
    prompt_tokens_first = [s for s in rec.of(Stats) if not s.generating][-1].prompt_tokens
    rec.clear()
    w.submit(Regenerate(settings()))
    again = rec.wait_for(lambda e: isinstance(e, ReplyFinished))
    assert rec.of(TranscriptTruncated)[0].keep == 1
    # Same snapshot, same per-turn seed: the very same reply, prefilled from the new turn only.
    assert again.turn.reply == original.turn.reply
    prompt_tokens = [s for s in rec.of(Stats) if not s.generating][-1].prompt_tokens
    assert prompt_tokens == prompt_tokens_first
    own_prompt = len(get_tokenizer("bytes").encode("User: second message\n\nAssistant:"))
    assert own_prompt <= prompt_tokens <= own_prompt + 2  # + a separator if the first reply was cut


def test_edit_resends_from_the_snapshot_before_that_turn(worker) -> None:
    w, rec = worker
    w.submit(Send("one", settings()))
    rec.wait_for(lambda e: isinstance(e, ReplyFinished))
    w.submit(Send("two", settings()))
    rec.wait_for(lambda e: isinstance(e, ReplyFinished) and e.turn.index == 1)
    rec.clear()
    w.submit(Edit(0, "one, edited", settings()))
    finished = rec.wait_for(lambda e: isinstance(e, ReplyFinished))
    assert rec.of(TranscriptTruncated)[0].keep == 0
    assert finished.turn.index == 0 and finished.turn.user == "one, edited"
    info = rec.wait_for(lambda e: isinstance(e, ConversationInfo) and len(e.turns) == 1)
    assert [t.user for t in info.turns] == ["one, edited"]
    # Exactly the prompt of a first turn on the zero state: nothing older was fed.
    assert [s for s in rec.of(Stats) if not s.generating][-1].prompt_tokens == len("User: one, edited\n\nAssistant:")


def test_rewind_and_new_conversation(worker) -> None:
    w, rec = worker
    for text in ("a", "b"):
        w.submit(Send(text, settings(max_tokens=8)))
        rec.wait_for(lambda e: isinstance(e, ReplyFinished) and e.turn.user == text)
    rec.clear()
    w.submit(Rewind(1))
    info = rec.wait_for(lambda e: isinstance(e, ConversationInfo) and len(e.turns) == 1)
    assert rec.of(TranscriptTruncated)[0].keep == 1 and [t.user for t in info.turns] == ["a"]
    rec.clear()
    w.submit(NewConversation())
    info = rec.wait_for(lambda e: isinstance(e, ConversationInfo) and e.turns == ())
    assert info.turns == () and info.tokens_seen == 0


def test_a_bad_model_file_is_one_line_and_keeps_the_loaded_model(worker, tmp_path: Path) -> None:
    w, rec = worker
    bad = tmp_path / "broken.pth"
    bad.write_bytes(b"this is not a checkpoint")
    rec.clear()
    w.submit(LoadModel("chat", str(bad), device="cpu"))
    failed = rec.wait_for(lambda e: isinstance(e, ModelLoadFailed))
    assert str(bad) in failed.message and "\n" not in failed.message
    w.submit(Send("still there?", settings(max_tokens=4)))
    assert rec.wait_for(lambda e: isinstance(e, ReplyFinished)).turn.user == "still there?"


def test_an_engine_failure_mid_reply_removes_the_turn_and_keeps_working(worker, monkeypatch) -> None:
    w, rec = worker
    model = w.chat_model
    real_forward = model.forward
    calls = {"n": 0}

    def flaky(tokens, state=None):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("simulated kernel fault\nwith a second line")
        return real_forward(tokens, state)

    monkeypatch.setattr(model, "forward", flaky)
    rec.clear()
    w.submit(Send("break please", settings(max_tokens=20)))
    failed = rec.wait_for(lambda e: isinstance(e, ReplyFailed))
    assert failed.user == "break please" and "simulated kernel fault" in failed.message
    assert "\n" not in failed.message and "second line" not in failed.message
    info = rec.wait_for(lambda e: isinstance(e, ConversationInfo) and e.turns == ())
    assert info.turns == ()
    w.submit(Send("and now?", settings(max_tokens=4)))
    assert rec.wait_for(lambda e: isinstance(e, ReplyFinished)).turn.index == 0


def test_export_markdown_and_json(worker, tmp_path: Path) -> None:
    w, rec = worker
    w.submit(Send("export me", settings(max_tokens=6)))
    finished = rec.wait_for(lambda e: isinstance(e, ReplyFinished))
    w.submit(Export(str(tmp_path / "chat.md"), "markdown"))
    w.submit(Export(str(tmp_path / "chat.json"), "json"))
    rec.wait_for(lambda e: isinstance(e, Notice) and "chat.json" in e.message)
    markdown = (tmp_path / "chat.md").read_text(encoding="utf-8")
    assert "## User\n\nexport me" in markdown
    data = json.loads((tmp_path / "chat.json").read_text(encoding="utf-8"))
    assert data["turns"][0]["user"] == "export me"
    assert data["turns"][0]["assistant"] == finished.turn.reply
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chat.json", "chat.md"]  # no temp files left
    w.submit(Export(str(tmp_path / "missing-dir" / "x.md"), "markdown"))
    error = rec.wait_for(lambda e: isinstance(e, Notice) and e.severity == "error")
    assert "missing-dir" in error.message


def test_send_without_a_model_gives_the_text_back() -> None:
    w = EngineWorker()
    w.start()
    try:
        rec = Recorder(w)
        w.submit(Send("hello?", settings()))
        rejected = rec.wait_for(lambda e: isinstance(e, PromptRejected))
        assert rejected.text == "hello?" and "--model" in rejected.message
    finally:
        w.close()


def test_rewind_to_an_evicted_snapshot_replays_it(worker) -> None:
    w, rec = worker
    w.conversation.set_snapshot_budget(1)  # keep only the newest snapshot (the thread is idle)
    replies = []
    for text in ("one", "two", "three"):
        w.submit(Send(text, settings(max_tokens=6)))
        replies.append(rec.wait_for(lambda e: isinstance(e, ReplyFinished) and e.turn.user == text).turn.reply)
    info = rec.wait_for(lambda e: isinstance(e, ConversationInfo) and len(e.turns) == 3)
    assert [t.has_snapshot for t in info.turns] == [True, False, True]  # the first is the initial state
    assert info.turns[1].replay_tokens > 0 and info.turns[1].tokens_before > 0
    rec.clear()
    w.submit(Rewind(1))
    info = rec.wait_for(lambda e: isinstance(e, ConversationInfo) and len(e.turns) == 1)
    assert [t.user for t in info.turns] == ["one"]
    # The replayed state continues exactly as the original did: the same seeded reply again.
    w.submit(Send("two", settings(max_tokens=6)))
    assert rec.wait_for(lambda e: isinstance(e, ReplyFinished)).turn.reply == replies[1]


def test_save_and_load_the_live_state(worker, tmp_path: Path) -> None:
    from tui.protocol import LoadState, SaveState

    w, rec = worker
    w.submit(Send("remember this", settings(max_tokens=6)))
    rec.wait_for(lambda e: isinstance(e, ReplyFinished))
    seen = w.conversation.state.tokens_seen
    path = tmp_path / "chat.state.safetensors"
    w.submit(SaveState(str(path)))
    rec.wait_for(lambda e: isinstance(e, Notice) and "Saved" in e.message)
    rec.clear()
    w.submit(NewConversation())
    rec.wait_for(lambda e: isinstance(e, ConversationInfo) and e.tokens_seen == 0)
    rec.clear()
    w.submit(LoadState(str(path)))
    info = rec.wait_for(lambda e: isinstance(e, ConversationInfo))
    assert info.tokens_seen == seen and info.turns == ()
    assert rec.of(TranscriptReplaced)
    # A damaged file is one line and changes nothing.
    bad = tmp_path / "bad.state.safetensors"
    bad.write_bytes(b"garbage")
    rec.clear()
    w.submit(LoadState(str(bad)))
    error = rec.wait_for(lambda e: isinstance(e, Notice) and e.severity == "error")
    assert "bad.state.safetensors" in error.message and "\n" not in error.message
    assert w.conversation.state.tokens_seen == seen


def test_a_long_chat_keeps_snapshots_within_the_budget_and_frees_the_evicted(worker) -> None:
    """With the State pane's live feed on, over more turns than the budget holds: the numbers the
    State pane shows stay within the budget, and nothing on the engine thread (the inspector, its
    feed, the last generation) keeps an evicted snapshot alive."""
    import gc
    import weakref

    w, rec = worker
    w.inspector.watching = True  # as while the State pane is visible
    model = w.conversation.model
    per_snapshot = model.info.state_bytes + model.config.vocab * 4
    w.conversation.set_snapshot_budget(2 * per_snapshot)  # the thread is idle
    alive = []
    for turn in range(8):
        w.submit(Send(f"message {turn}", settings(max_tokens=6)))
        info = rec.wait_for(lambda e, n=turn + 1: isinstance(e, ConversationInfo) and len(e.turns) == n)
        assert info.snapshot_budget == 2 * per_snapshot and info.snapshot_bytes <= info.snapshot_budget
        alive.append(weakref.ref(w.conversation.turns[-1].state_before.wkv))
    assert info.snapshots_kept == 3  # the first (the initial state, free) and the two newest
    gc.collect()
    assert [ref() is None for ref in alive] == [False] + [True] * 5 + [False] * 2
