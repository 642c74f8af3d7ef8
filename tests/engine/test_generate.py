"""The generation loop: UTF-8-safe deltas, stop rules, cancellation, statistics."""

from __future__ import annotations

import threading

import pytest

from engine import Generation, Sampler, SamplingParams, StopReason, get_tokenizer
from tests.engine.scripted import ScriptedModel

GREEDY = SamplingParams(temperature=0, presence_penalty=0, frequency_penalty=0, max_tokens=100)
BYTES = get_tokenizer("bytes")


def _generation(text: str, **kwargs) -> tuple[Generation, ScriptedModel]:
    model = ScriptedModel(list(text.encode("utf-8")), delay=kwargs.pop("delay", 0.0))
    sampler = Sampler(kwargs.pop("params", GREEDY), 256)
    return Generation(model, BYTES, sampler, prompt=[65], **kwargs), model


def test_deltas_never_contain_broken_characters() -> None:
    text = "naïve café — 音楽 🎵!"
    generation, _ = _generation(text, max_tokens=len(text.encode()))
    deltas = list(generation)
    assert "".join(deltas) == text
    assert all("\ufffd" not in d for d in deltas)
    assert generation.result.stop_reason == StopReason.MAX_TOKENS


def test_stop_string_is_withheld_and_ends_generation() -> None:
    generation, model = _generation("Hello there.\n\nUser: more", stop_strings=["\n\nUser:"])
    deltas = list(generation)
    assert "".join(deltas) == "Hello there."
    assert not any("\n" in d for d in deltas)
    result = generation.result
    assert result.stop_reason == StopReason.STOP_STRING and result.stop_string == "\n\nUser:"
    # every generated token was fed, so the state includes the stop string itself
    assert result.state.tokens_seen == 1 + len("Hello there.\n\nUser:")


def test_text_resembling_a_stop_string_prefix_is_released() -> None:
    generation, _ = _generation("a\nb\n\nc", stop_strings=["\n\n"])
    assert "".join(generation) == "a\nb"


def test_stop_token_is_not_fed() -> None:
    model = ScriptedModel([72, 105, 3, 72])
    generation = Generation(model, BYTES, Sampler(GREEDY, 256), prompt=[65], stop_tokens=[3])
    assert "".join(generation) == "Hi"
    assert generation.result.stop_reason == StopReason.STOP_TOKEN
    assert model.calls == [[65], [72], [105]]


def test_token_budget() -> None:
    generation, model = _generation("abcdefgh", max_tokens=5)
    assert "".join(generation) == "abcde"
    assert generation.result.tokens == list(b"abcde")
    assert len(model.calls) == 1 + 5


def test_cancel_from_another_thread_stops_within_one_token() -> None:
    generation, model = _generation("x" * 1000, delay=0.002)
    seen: list[int] = []
    generation.on_token = lambda token, state: (seen.append(token), len(seen) == 20 and threading.Thread(target=generation.cancel).start())
    result = generation.run()
    assert result.stop_reason == StopReason.CANCELLED
    assert 20 <= len(result.tokens) <= 22


def test_cancel_before_start() -> None:
    generation, model = _generation("abc")
    generation.cancel()
    result = generation.run()
    assert result.stop_reason == StopReason.CANCELLED and result.tokens == [] and model.calls == []


def test_stats_are_reported() -> None:
    generation, _ = _generation("abcdef", max_tokens=6, delay=0.001)
    result = generation.run()
    stats = result.stats
    assert stats.prompt_tokens == 1 and stats.generated_tokens == 6
    assert stats.time_to_first_token is not None and stats.time_to_first_token > 0
    assert stats.tokens_per_second > 0 and stats.prefill_tokens_per_second > 0


def test_continuing_from_logits_without_prompt() -> None:
    model = ScriptedModel(list(b"xyz"))
    first = Generation(model, BYTES, Sampler(GREEDY, 256), prompt=[65], max_tokens=2).run()
    follow = Generation(model, BYTES, Sampler(GREEDY, 256), state=first.state, logits=first.logits, max_tokens=1).run()
    assert first.text == "xy" and follow.text == "z"
    with pytest.raises(ValueError):
        Generation(model, BYTES, Sampler(GREEDY, 256))


def test_iterating_twice_is_an_error() -> None:
    generation, _ = _generation("ab", max_tokens=2)
    list(generation)
    with pytest.raises(RuntimeError):
        iter(generation)


def test_real_model_seeded_generation_repeats(tiny_model) -> None:
    params = SamplingParams(temperature=1.0, top_p=0.9, seed=123, max_tokens=30)
    runs = [
        Generation(tiny_model, BYTES, Sampler(params, 256), prompt=BYTES.encode("Hello")).run().tokens
        for _ in range(2)
    ]
    assert runs[0] == runs[1] and len(runs[0]) == 30
