"""Numbers about a state for the inspector: norms, token-shift magnitudes, change, differences.

Everything here is a handful of reductions over the state tensors, done where the state lives
(GPU states stay on the GPU; only the small results come back), so the per-token tracker can
run on every generated token: ``benchmarks/bench_state_stats.py`` measures its cost against
the forward pass it follows.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import torch

from engine.errors import StateError
from engine.state import State

_EPS = 1e-12


@contextmanager
def _cheap_ops(device: torch.device) -> Iterator[None]:
    """No autograd, and on the CPU one thread: these reductions take a millisecond, and a
    multi-threaded op waits at a barrier for every thread — on a busy machine, for a thread
    that is not even running (see engine/backends/cpu.py, which decodes the same way)."""
    with torch.inference_mode():
        if device.type != "cpu":
            yield
            return
        previous = torch.get_num_threads()
        if previous != 1:
            torch.set_num_threads(1)
        try:
            yield
        finally:
            if previous != 1:
                torch.set_num_threads(previous)


@dataclass(frozen=True)
class StateStats:
    """A summary of one state. Tensors are small, on the CPU, float32."""

    #: Frobenius norm of each head's WKV matrix, shape [n_layer, n_head]: the heat map.
    wkv_norms: torch.Tensor
    #: L2 norm of the time-mix token-shift vector per layer, shape [n_layer].
    att_x_norms: torch.Tensor
    #: L2 norm of the channel-mix token-shift vector per layer, shape [n_layer].
    ffn_x_norms: torch.Tensor
    #: Largest |entry| of any WKV matrix.
    wkv_max_abs: float
    nbytes: int
    dtype: str
    tokens_seen: int

    @property
    def n_layer(self) -> int:
        return int(self.wkv_norms.shape[0])

    @property
    def n_head(self) -> int:
        return int(self.wkv_norms.shape[1])

    @property
    def wkv_total_norm(self) -> float:
        return float(self.wkv_norms.double().pow(2).sum().sqrt())

    @property
    def is_zero(self) -> bool:
        return bool(
            self.wkv_max_abs == 0 and not self.att_x_norms.any() and not self.ffn_x_norms.any()
        )


def state_stats(state: State) -> StateStats:
    """Norms per layer × head (WKV) and per layer (token shift), plus the plain numbers."""
    with _cheap_ops(state.wkv.device):
        wkv = state.wkv
        n_layer, n_head = wkv.shape[0], wkv.shape[1]
        wkv_norms = torch.linalg.vector_norm(wkv.reshape(n_layer, n_head, -1), dim=2)
        att = torch.linalg.vector_norm(state.att_x, dim=1)
        ffn = torch.linalg.vector_norm(state.ffn_x, dim=1)
        max_abs = wkv.abs().amax() if wkv.numel() else wkv.new_zeros(())
        # One transfer for everything that goes back to the host.
        packed = torch.cat([wkv_norms.reshape(-1), att, ffn, max_abs.reshape(1)]).float().cpu()
    head_count = n_layer * n_head
    return StateStats(
        wkv_norms=packed[:head_count].reshape(n_layer, n_head).clone(),
        att_x_norms=packed[head_count:head_count + n_layer].clone(),
        ffn_x_norms=packed[head_count + n_layer:head_count + 2 * n_layer].clone(),
        wkv_max_abs=float(packed[-1]),
        nbytes=state.nbytes,
        dtype=str(wkv.dtype).replace("torch.", ""),
        tokens_seen=state.tokens_seen,
    )


@dataclass(frozen=True)
class StateDiff:
    """How two states of the same model differ. Tensors are small, on the CPU, float32."""

    #: ‖A − B‖ per head, shape [n_layer, n_head]: the diff heat map.
    wkv: torch.Tensor
    #: ‖A − B‖ / max(‖A‖, ‖B‖) per head: 0 same, up to 2 (opposite); scale-free.
    wkv_relative: torch.Tensor
    #: Cosine similarity of the flattened head matrices (1 where either is zero and both equal).
    wkv_cosine: torch.Tensor
    #: ‖A − B‖ of the token-shift vectors per layer, shape [n_layer].
    att_x: torch.Tensor
    ffn_x: torch.Tensor
    #: ‖A − B‖ / max(‖A‖, ‖B‖) over all WKV matrices together.
    relative: float
    max_abs: float
    identical: bool
    tokens_a: int
    tokens_b: int

    def most_changed(self, count: int = 5) -> list[tuple[int, int, float]]:
        """(layer, head, relative difference) of the heads that differ most."""
        flat = self.wkv_relative.reshape(-1)
        count = min(count, flat.numel())
        values, indices = torch.topk(flat, count)
        n_head = self.wkv_relative.shape[1]
        return [(int(i) // n_head, int(i) % n_head, float(v)) for v, i in zip(values, indices)]


def state_diff(a: State, b: State) -> StateDiff:
    """Compare two states (snapshots, live vs a file); StateError if their shapes differ."""
    for part in ("att_x", "wkv", "ffn_x"):
        if getattr(a, part).shape != getattr(b, part).shape:
            raise StateError(
                f"cannot compare states of different models: {part} is {tuple(getattr(a, part).shape)} "
                f"vs {tuple(getattr(b, part).shape)}"
            )
    with _cheap_ops(a.wkv.device):
        device = a.wkv.device
        wa, wb = a.wkv.float(), b.wkv.to(device).float()
        n_layer, n_head = wa.shape[0], wa.shape[1]
        fa, fb = wa.reshape(n_layer, n_head, -1), wb.reshape(n_layer, n_head, -1)
        diff = torch.linalg.vector_norm(fa - fb, dim=2)
        norm_a = torch.linalg.vector_norm(fa, dim=2)
        norm_b = torch.linalg.vector_norm(fb, dim=2)
        scale = torch.maximum(norm_a, norm_b)
        relative = torch.where(scale > 0, diff / scale.clamp_min(_EPS), torch.zeros_like(diff))
        dot = (fa * fb).sum(dim=2)
        cosine = torch.where(
            (norm_a > 0) & (norm_b > 0),
            dot / (norm_a * norm_b).clamp_min(_EPS),
            (diff == 0).float(),
        )
        att = torch.linalg.vector_norm(a.att_x.float() - b.att_x.to(device).float(), dim=1)
        ffn = torch.linalg.vector_norm(a.ffn_x.float() - b.ffn_x.to(device).float(), dim=1)
        total_diff = diff.double().pow(2).sum().sqrt()
        total_scale = torch.maximum(norm_a.double().pow(2).sum(), norm_b.double().pow(2).sum()).sqrt()
        overall = float(total_diff / total_scale) if float(total_scale) > 0 else 0.0
        max_abs = float((wa - wb).abs().amax()) if wa.numel() else 0.0
        identical = a.equal(b)
    return StateDiff(
        wkv=diff.float().cpu(), wkv_relative=relative.float().cpu(), wkv_cosine=cosine.float().cpu(),
        att_x=att.float().cpu(), ffn_x=ffn.float().cpu(), relative=overall, max_abs=max_abs,
        identical=identical, tokens_a=a.tokens_seen, tokens_b=b.tokens_seen,
    )


class ChangeTracker:
    """How much the WKV state moves per token: ‖S_t − S_{t−1}‖ / ‖S_{t−1}‖, for a sparkline.

    Feed it every new state on the engine thread (``Generation.on_token``; for a chat turn set
    ``generation.on_token`` on the object ``Conversation.send`` returns, before iterating it);
    it keeps a reference to the previous state (states are immutable values, so this copies
    nothing) and the last ``history`` values. The norm of the previous state is remembered
    from the previous call, so each update is one subtraction (into a reused buffer) and two
    norms.
    """

    def __init__(self, history: int = 1024) -> None:
        self.values: deque[float] = deque(maxlen=history)
        #: Relative change per layer from the last update (shape [n_layer]), or None.
        self.last_per_layer: torch.Tensor | None = None
        self._previous: State | None = None
        self._previous_layer_norms: torch.Tensor | None = None
        self._scratch: torch.Tensor | None = None

    def reset(self) -> None:
        """Forget the previous state (e.g. after a rewind or loading another state)."""
        self._previous = None
        self._previous_layer_norms = None
        self.last_per_layer = None

    def clear(self) -> None:
        self.reset()
        self.values.clear()

    def update(self, state: State) -> float | None:
        """Record ``state``; return its relative change from the previous one (None at first)."""
        with _cheap_ops(state.wkv.device):
            wkv = state.wkv
            flat = wkv.reshape(wkv.shape[0], -1)
            previous = self._previous
            change: float | None = None
            if previous is not None and previous.wkv.shape == wkv.shape and previous.wkv.device == wkv.device:
                assert self._previous_layer_norms is not None
                layer_norms, delta = self._norms_and_change(flat, previous.wkv.reshape(flat.shape))
                prev_norms = self._previous_layer_norms
                packed = torch.cat([
                    delta, prev_norms,
                    delta.double().pow(2).sum().sqrt().float().reshape(1),
                    prev_norms.double().pow(2).sum().sqrt().float().reshape(1),
                ]).cpu()
                n = delta.shape[0]
                per_delta, per_prev = packed[:n], packed[n:2 * n]
                total_delta, total_prev = float(packed[-2]), float(packed[-1])
                self.last_per_layer = torch.where(
                    per_prev > 0, per_delta / per_prev.clamp_min(_EPS), per_delta
                )
                change = total_delta / total_prev if total_prev > 0 else total_delta
                self.values.append(change)
            else:
                layer_norms = torch.linalg.vector_norm(flat, dim=1)
            self._previous = state
            self._previous_layer_norms = layer_norms
        return change

    def _norms_and_change(self, flat: torch.Tensor, previous: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per layer ‖S_t‖ and ‖S_t − S_{t−1}‖: one native pass on the CPU, torch elsewhere."""
        if flat.device.type == "cpu" and flat.dtype == previous.dtype == torch.float32:
            from engine.backends.cpu_native import get_kernels

            layer_change = getattr(get_kernels(), "layer_change", None)
            if layer_change is not None:
                norms, delta = layer_change(flat, previous)
                return norms.float(), delta.float()
        scratch = self._scratch
        if scratch is None or scratch.shape != flat.shape or scratch.device != flat.device:
            # Reused every token: a fresh multi-MB tensor per token would cost page faults.
            scratch = self._scratch = torch.empty_like(flat)
        torch.sub(flat, previous, out=scratch)
        return torch.linalg.vector_norm(flat, dim=1), torch.linalg.vector_norm(scratch, dim=1)

    def extend(self, states: Sequence[State]) -> list[float]:
        return [v for v in (self.update(s) for s in states) if v is not None]


@dataclass
class LiveStateUpdate:
    """What :meth:`LiveStateFeed.drain` hands the UI: everything since the previous drain."""

    #: Per-token relative changes, oldest first.
    changes: list[float] = field(default_factory=list)
    #: The most recent summary taken, or None if none was due since the last drain.
    stats: StateStats | None = None
    #: Tokens observed since the last drain.
    tokens: int = 0


class LiveStateFeed:
    """The inspector's view of a running generation, safe to share between two threads.

    The engine thread calls :meth:`observe` after every token (its signature matches
    ``Generation.on_token``): that records the per-token change and, at most every
    ``stats_interval`` seconds, a full :func:`state_stats` summary. The UI thread calls
    :meth:`drain` from a timer and gets everything at once, so the UI redraws at its own
    pace and the generator never waits for it.
    """

    def __init__(self, stats_interval: float = 0.2, history: int = 1024) -> None:
        self.stats_interval = stats_interval
        self.tracker = ChangeTracker(history=history)
        self._lock = threading.Lock()
        self._pending = LiveStateUpdate()
        self._last_stats = -float("inf")

    def observe(self, token: int | None, state: State) -> None:
        """Record one new state (engine thread)."""
        change = self.tracker.update(state)
        now = time.monotonic()
        stats = None
        if now - self._last_stats >= self.stats_interval:
            stats = state_stats(state)
            self._last_stats = now
        with self._lock:
            self._pending.tokens += 1
            if change is not None:
                self._pending.changes.append(change)
            if stats is not None:
                self._pending.stats = stats

    def flush(self, state: State) -> None:
        """Take a summary now (e.g. when a reply ends), whatever the interval says."""
        stats = state_stats(state)
        self._last_stats = time.monotonic()
        with self._lock:
            self._pending.stats = stats

    def drain(self) -> LiveStateUpdate:
        """Everything observed since the previous drain (UI thread)."""
        with self._lock:
            update, self._pending = self._pending, LiveStateUpdate()
        return update

    def reset(self) -> None:
        """Start over after a rewind, a fork or loading another state (engine thread)."""
        self.tracker.reset()
        with self._lock:
            self._pending = LiveStateUpdate()
        self._last_stats = -float("inf")
