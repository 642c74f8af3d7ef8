"""Inspector numbers, checked against straightforward NumPy computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine import StateError
from engine.state import State
from engine.state_stats import ChangeTracker, state_diff, state_stats


def _random_state(seed: int, layers: int = 3, heads: int = 2, n: int = 8) -> State:
    gen = torch.Generator().manual_seed(seed)
    c = heads * n
    return State(
        att_x=torch.randn(layers, c, generator=gen),
        wkv=torch.randn(layers, heads, n, n, generator=gen) * (1 + torch.arange(layers).view(-1, 1, 1, 1)),
        ffn_x=torch.randn(layers, c, generator=gen),
        tokens_seen=42,
    )


def test_stats_match_numpy():
    state = _random_state(0)
    stats = state_stats(state)
    wkv = state.wkv.numpy().astype(np.float64)
    expected = np.sqrt((wkv ** 2).sum(axis=(2, 3)))
    np.testing.assert_allclose(stats.wkv_norms.numpy(), expected, rtol=1e-5)
    np.testing.assert_allclose(stats.att_x_norms.numpy(), np.linalg.norm(state.att_x.numpy(), axis=1), rtol=1e-5)
    np.testing.assert_allclose(stats.ffn_x_norms.numpy(), np.linalg.norm(state.ffn_x.numpy(), axis=1), rtol=1e-5)
    assert stats.wkv_max_abs == pytest.approx(float(np.abs(wkv).max()))
    assert stats.wkv_total_norm == pytest.approx(float(np.sqrt((wkv ** 2).sum())), rel=1e-6)
    assert (stats.n_layer, stats.n_head) == (3, 2)
    assert stats.nbytes == state.nbytes and stats.dtype == "float32" and stats.tokens_seen == 42
    assert not stats.is_zero


def test_zero_state_is_recognised(tiny_model):
    stats = state_stats(tiny_model.zero_state())
    assert stats.is_zero and stats.wkv_total_norm == 0.0 and stats.wkv_norms.shape == (2, 2)


def test_diff_of_identical_states():
    state = _random_state(1)
    diff = state_diff(state, state.clone())
    assert diff.identical and diff.relative == 0.0 and diff.max_abs == 0.0
    assert not diff.wkv.any() and torch.allclose(diff.wkv_cosine, torch.ones(3, 2))


def test_diff_matches_numpy():
    a, b = _random_state(2), _random_state(3)
    b.tokens_seen = 50
    diff = state_diff(a, b)
    wa, wb = (s.wkv.numpy().astype(np.float64).reshape(3, 2, -1) for s in (a, b))
    delta = np.linalg.norm(wa - wb, axis=2)
    na, nb = np.linalg.norm(wa, axis=2), np.linalg.norm(wb, axis=2)
    np.testing.assert_allclose(diff.wkv.numpy(), delta, rtol=1e-5)
    np.testing.assert_allclose(diff.wkv_relative.numpy(), delta / np.maximum(na, nb), rtol=1e-5)
    np.testing.assert_allclose(diff.wkv_cosine.numpy(), (wa * wb).sum(axis=2) / (na * nb), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(diff.att_x.numpy(), np.linalg.norm(a.att_x.numpy() - b.att_x.numpy(), axis=1), rtol=1e-5)
    overall = np.sqrt((delta ** 2).sum()) / max(np.sqrt((na ** 2).sum()), np.sqrt((nb ** 2).sum()))
    assert diff.relative == pytest.approx(overall, rel=1e-6)
    assert diff.max_abs == pytest.approx(float(np.abs(wa - wb).max()), rel=1e-6)
    assert not diff.identical and (diff.tokens_a, diff.tokens_b) == (42, 50)
    top = diff.most_changed(3)
    flat = (delta / np.maximum(na, nb)).reshape(-1)
    assert [l * 2 + h for l, h, _ in top] == list(np.argsort(-flat)[:3])


def test_diff_of_a_single_changed_head_points_at_it():
    a = _random_state(4)
    b = a.clone()
    b.wkv[2, 1] *= -1
    diff = state_diff(a, b)
    assert diff.most_changed(1)[0][:2] == (2, 1)
    assert diff.wkv_cosine[2, 1].item() == pytest.approx(-1.0, abs=1e-6)
    assert diff.wkv_relative[2, 1].item() == pytest.approx(2.0, rel=1e-6)
    assert diff.wkv_relative[0, 0].item() == 0.0


def test_diff_refuses_states_of_different_models():
    with pytest.raises(StateError, match="different models"):
        state_diff(_random_state(0), _random_state(0, layers=4))


def test_change_tracker_measures_relative_change_per_token():
    tracker = ChangeTracker(history=3)
    a, b = _random_state(5), _random_state(6)
    assert tracker.update(a) is None
    change = tracker.update(b)
    wa, wb = a.wkv.numpy().astype(np.float64), b.wkv.numpy().astype(np.float64)
    assert change == pytest.approx(np.linalg.norm(wb - wa) / np.linalg.norm(wa), rel=1e-5)
    per_layer = np.linalg.norm((wb - wa).reshape(3, -1), axis=1) / np.linalg.norm(wa.reshape(3, -1), axis=1)
    np.testing.assert_allclose(tracker.last_per_layer.numpy(), per_layer, rtol=1e-5)
    assert tracker.update(b) == 0.0
    for seed in range(7, 12):
        tracker.update(_random_state(seed))
    assert len(tracker.values) == 3
    tracker.reset()
    assert tracker.update(a) is None and len(tracker.values) == 3
    tracker.clear()
    assert len(tracker.values) == 0


def test_change_tracker_follows_real_generation(tiny_model):
    tracker = ChangeTracker()
    _, state = tiny_model.forward(list(b"warm up the state"), None)
    tracker.update(state)
    changes = []
    for token in b"abc":
        _, state = tiny_model.forward([token], state)
        changes.append(tracker.update(state))
    assert all(c is not None and 0 < c < 10 for c in changes)
    assert list(tracker.values) == changes


def test_live_feed_batches_changes_and_throttles_summaries(tiny_model):
    from engine.state_stats import LiveStateFeed

    feed = LiveStateFeed(stats_interval=3600)  # one summary, then none until flushed
    _, state = tiny_model.forward(list(b"prefix"), None)
    states = []
    for token in b"abcd":
        _, state = tiny_model.forward([token], state)
        states.append(state)
    for token, s in zip(b"abcd", states):
        feed.observe(token, s)
    update = feed.drain()
    assert update.tokens == 4 and len(update.changes) == 3  # the first state has no predecessor
    assert update.stats is not None and update.stats.tokens_seen == states[0].tokens_seen
    expected = ChangeTracker()
    assert update.changes == [c for c in (expected.update(s) for s in states) if c is not None]
    assert feed.drain() == type(update)()  # drained: nothing pending
    feed.flush(states[-1])
    assert feed.drain().stats.tokens_seen == states[-1].tokens_seen
    feed.reset()
    feed.observe(None, states[0])
    assert feed.drain().changes == []


def test_live_feed_is_safe_between_two_threads(tiny_model):
    import threading

    from engine.state_stats import LiveStateFeed

    feed = LiveStateFeed(stats_interval=0.0)
    states = [_random_state(seed) for seed in range(200)]
    received: list[float] = []
    done = threading.Event()

    def producer() -> None:
        for s in states:
            feed.observe(0, s)
        done.set()

    thread = threading.Thread(target=producer)
    thread.start()
    tokens = 0
    while not done.is_set() or thread.is_alive():
        update = feed.drain()
        received += update.changes
        tokens += update.tokens
    thread.join()
    update = feed.drain()
    received += update.changes
    tokens += update.tokens
    assert tokens == 200 and len(received) == 199
