"""Turning logits into the next token: penalties, bans, hooks, truncation, temperature.

Order of operations follows ChatRWKV (``PIPELINE.sample_logits`` and ``API_DEMO_CHAT``):
bans and penalties act on logits; top-p then top-k truncate the probability distribution as
computed at temperature 1; temperature reshapes what survives. Every draw comes from the
sampler's own seeded generator, so a seed replays a run exactly.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Callable, Iterable

import torch

from engine.errors import EngineError

#: A logit hook receives (logits, step) and may modify logits in place; music uses it for
#: length control and instrument filters.
LogitHook = Callable[[torch.Tensor, int], None]


#: The largest seed the generator takes (64 bits).
MAX_SEED = 2**64 - 1


@dataclass(frozen=True)
class SamplingParams:
    """Sampling settings; defaults are ChatRWKV's chat demo (API_DEMO_CHAT.py)."""

    temperature: float = 1.0
    top_p: float = 0.3
    top_k: int = 0
    presence_penalty: float = 0.5
    frequency_penalty: float = 0.5
    penalty_decay: float = 0.996
    max_tokens: int = 1000
    seed: int | None = None
    #: Token ids that are never sampled (e.g. 0, end-of-text, in chat).
    ban_tokens: tuple[int, ...] = ()

    def validate(self) -> "SamplingParams":
        """Return self, or raise EngineError naming the first invalid field."""
        checks = (
            (self.temperature >= 0 and math.isfinite(self.temperature), "temperature must be ≥ 0"),
            (0 <= self.top_p <= 1, "top_p must be between 0 and 1"),
            (self.top_k >= 0, "top_k must be ≥ 0 (0 disables it)"),
            (math.isfinite(self.presence_penalty), "presence_penalty must be a number"),
            (math.isfinite(self.frequency_penalty), "frequency_penalty must be a number"),
            (0 <= self.penalty_decay <= 1, "penalty_decay must be between 0 and 1"),
            (self.max_tokens >= 1, "max_tokens must be ≥ 1"),
            # torch.Generator.manual_seed takes 64 bits; a larger seed failed only at the first token.
            (self.seed is None or 0 <= self.seed <= MAX_SEED, f"seed must be between 0 and {MAX_SEED}"),
        )
        for ok, message in checks:
            if not ok:
                raise EngineError(f"invalid sampling setting: {message}")
        return self

    def with_(self, **changes: object) -> "SamplingParams":
        return replace(self, **changes).validate()  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, object]:
        data = asdict(self)
        data["ban_tokens"] = list(self.ban_tokens)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> "SamplingParams":
        known = {f for f in cls.__dataclass_fields__}
        values = {k: v for k, v in data.items() if k in known}
        if "ban_tokens" in values:
            values["ban_tokens"] = tuple(int(t) for t in values["ban_tokens"])  # type: ignore[union-attr]
        return cls(**values).validate()  # type: ignore[arg-type]


def truncate_and_sample(
    logits: torch.Tensor,
    temperature: float,
    top_p: float,
    top_k: int,
    generator: torch.Generator,
) -> int:
    """Sample one id from float logits with ChatRWKV's top-p / top-k / temperature rules."""
    if temperature == 0:
        temperature, top_p = 1.0, 0.0
    probs = torch.softmax(logits.float(), dim=-1)
    vocab = probs.shape[-1]
    if top_p <= 0 or top_k == 1:
        return int(torch.argmax(probs))
    need_sort = top_p < 1.0 or 0 < top_k < vocab
    if need_sort:
        # Sorting 65k entries per token is a measurable cost; the kept set is almost always
        # tiny, so look at the largest candidates first and fall back to a full sort only
        # when they do not yet reach top_p.
        limit = min(vocab, max(top_k if top_k > 0 else 0, 64))
        while True:
            values, indices = torch.topk(probs, limit)
            cumulative = torch.cumsum(values, dim=-1)
            if top_p >= 1.0 or limit == vocab or bool(cumulative[-1] >= top_p):
                break
            limit = min(vocab, limit * 8)
        if top_p < 1.0:
            reached = cumulative >= top_p
            cutoff_index = int(torch.argmax(reached.to(torch.uint8))) if bool(reached.any()) else limit - 1
            cutoff = values[cutoff_index]
            keep = values >= cutoff
            values, indices = values[keep], indices[keep]
        if 0 < top_k < values.shape[0]:
            values, indices = values[:top_k], indices[:top_k]
        if temperature != 1.0:
            values = values.pow(1.0 / temperature)
        choice = torch.multinomial(values / values.sum(), 1, generator=generator)
        return int(indices[choice])
    if temperature != 1.0:
        probs = probs.pow(1.0 / temperature)
    return int(torch.multinomial(probs / probs.sum(), 1, generator=generator))


class Sampler:
    """Stateful sampler: remembers what it generated, for repetition penalties."""

    def __init__(
        self,
        params: SamplingParams,
        vocab_size: int,
        logit_hooks: Iterable[LogitHook] = (),
        penalty_exempt: Callable[[int], float] | None = None,
    ) -> None:
        self.params = params.validate()
        self.vocab_size = vocab_size
        self.logit_hooks = list(logit_hooks)
        #: Optional weight of a token's occurrence (1.0 normally); music counts waits as 0.3.
        self.occurrence_weight = penalty_exempt
        self.generator = torch.Generator()
        self.generator.manual_seed(params.seed if params.seed is not None else torch.seed() % (2**63))
        self.counts = torch.zeros(vocab_size, dtype=torch.float32)
        self._seen = torch.zeros(vocab_size, dtype=torch.bool)
        bans = [t for t in params.ban_tokens if 0 <= t < vocab_size]
        self._bans = torch.tensor(bans, dtype=torch.long) if bans else None
        self.step = 0

    def reset_penalties(self) -> None:
        """Forget past tokens (ChatRWKV resets the penalty table every user turn)."""
        self.counts.zero_()
        self._seen.zero_()

    def adjust(self, logits: torch.Tensor) -> torch.Tensor:
        """Apply bans, penalties and hooks to a copy of ``logits``."""
        p = self.params
        out = logits.float().clone()
        if p.presence_penalty or p.frequency_penalty:
            penalty = torch.where(self._seen, p.presence_penalty + self.counts * p.frequency_penalty, 0.0)
            out -= penalty
        if self._bans is not None:
            out[self._bans] = -math.inf
        for hook in self.logit_hooks:
            hook(out, self.step)
        return out

    def sample(self, logits: torch.Tensor) -> int:
        """Pick the next token and record it for the penalties."""
        adjusted = self.adjust(logits)
        if not float(adjusted.max()) > -math.inf:  # all -inf (or NaN): one reduction, not two
            raise EngineError("every token is banned or filtered: nothing left to sample")
        p = self.params
        token = truncate_and_sample(adjusted, p.temperature, p.top_p, p.top_k, self.generator)
        self.observe(token)
        return token

    def observe(self, token: int) -> None:
        """Record a token as generated: decay all counts, then count this one."""
        self.counts.mul_(self.params.penalty_decay)
        weight = self.occurrence_weight(token) if self.occurrence_weight else 1.0
        if weight:
            self.counts[token] += weight
            self._seen[token] = True
        self.step += 1


@dataclass
class SamplerSnapshot:
    """Everything needed to resume a sampler exactly (for regenerate with the same seed)."""

    counts: torch.Tensor
    seen: torch.Tensor
    rng_state: torch.Tensor
    step: int
    extra: dict[str, object] = field(default_factory=dict)


def snapshot_sampler(sampler: Sampler) -> SamplerSnapshot:
    return SamplerSnapshot(
        sampler.counts.clone(), sampler._seen.clone(), sampler.generator.get_state(), sampler.step
    )


def restore_sampler(sampler: Sampler, snap: SamplerSnapshot) -> None:
    sampler.counts.copy_(snap.counts)
    sampler._seen.copy_(snap.seen)
    sampler.generator.set_state(snap.rng_state)
    sampler.step = snap.step
