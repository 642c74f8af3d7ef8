"""Music generation on random-weight models: the MIDI sampling recipe, streaming, ABC mode."""

from __future__ import annotations

import threading

import mido
import pytest
import torch

from engine import StopReason
from engine.music import generate as gen
from engine.music import midi_codec as codec
from engine.music import midi_vocab as vocab
from engine.music.errors import MusicError


def reference_adjust(logits: torch.Tensor, history: list[int], step: int, piano_only: bool) -> torch.Tensor:
    """ChatRWKV music demo's logit adjustments restated independently (music.md §3)."""
    occurrence: dict[int, float] = {}
    for token in history:
        for key in occurrence:
            occurrence[key] *= 0.997
        occurrence[token] = occurrence.get(token, 0.0) + (1.0 if token >= 128 or token == 127 else 0.3)
    out = logits.clone()
    for token, count in occurrence.items():
        out[token] -= 0.5 * count
    out[0] += (step - 2000) / 500
    out[127] -= 1.0
    if piano_only:
        out[128:12416] -= 1e10
        out[13952:] -= 1e10
    return out


@pytest.mark.parametrize("piano_only", [False, True])
def test_sampler_adjustments_match_the_music_demo(piano_only: bool) -> None:
    settings = gen.MidiSettings(piano_only=piano_only)
    from engine import Sampler

    sampler = Sampler(settings.sampling_params(), vocab.VOCAB_SIZE, logit_hooks=[gen.midi_logit_hook(settings)],
                      penalty_exempt=gen.midi_occurrence_weight(settings))
    history = [12416 + 60, 64, 127, 12416 + 60, 5, 64, 2, 13000, 64]
    for token in history:
        sampler.observe(token)
    logits = torch.randn(vocab.VOCAB_SIZE, generator=torch.Generator().manual_seed(0))
    ours = sampler.adjust(logits)
    expected = reference_adjust(logits, history, len(history), piano_only)
    finite = torch.isfinite(ours)
    assert torch.equal(finite, expected > -1e9)
    assert torch.allclose(ours[finite], expected[finite], atol=1e-5)


def test_generation_streams_what_the_saved_text_decodes_to(midi_model) -> None:
    generation = gen.MidiGeneration(midi_model, gen.MidiSettings(max_tokens=60, seed=3))
    chunks = list(generation)
    result = generation.result
    assert result is not None and result.stop_reason in (StopReason.MAX_TOKENS, StopReason.STOP_TOKEN)
    streamed = [e for c in chunks for e in c.events]
    assert streamed == result.events
    assert codec.decode_tokens(result.text).events == result.events
    assert result.text.startswith("<start> ") and result.text.endswith(" <end>")
    assert chunks[-1].final and all(not c.final for c in chunks[:-1])
    # Every event starts at or after the time known before its chunk: a player may play up to
    # the previous chunk's time without missing anything.
    known = 0.0
    for chunk in chunks:
        assert all(e.time_ms >= known for e in chunk.events)
        assert chunk.time_ms >= known
        known = chunk.time_ms
    assert [t for c in chunks for t in c.tokens] == result.tokens


def test_same_seed_same_music(midi_model) -> None:
    first = gen.MidiGeneration(midi_model, gen.MidiSettings(max_tokens=25, seed=9)).run()
    second = gen.MidiGeneration(midi_model, gen.MidiSettings(max_tokens=25, seed=9)).run()
    other = gen.MidiGeneration(midi_model, gen.MidiSettings(max_tokens=25, seed=10)).run()
    assert first.tokens == second.tokens
    assert first.tokens != other.tokens


def test_piano_only_samples_no_other_instrument(midi_model) -> None:
    result = gen.MidiGeneration(midi_model, gen.MidiSettings(max_tokens=60, seed=1, piano_only=True)).run()
    notes = [t for t in result.tokens if t >= vocab.FIRST_NOTE_ID]
    assert notes, "a random model should sample some notes in 60 tokens"
    assert all(t in vocab.bin_note_ids(vocab.PIANO_BIN.index) for t in notes)


def test_length_control_ends_the_piece(midi_model) -> None:
    # The shortest target with a huge <pad> bias per step past it: the model must stop right there
    # (a target below 1 token is refused as nonsense since the CLI took --length-target -1).
    result = gen.MidiGeneration(midi_model, gen.MidiSettings(max_tokens=50, length_target=1, length_scale=1e-4, seed=1)).run()
    assert result.stop_reason == StopReason.STOP_TOKEN and len(result.tokens) <= 2
    assert result.text.startswith("<start> ") and result.text.endswith(" <end>")


def test_a_length_target_below_one_token_is_refused() -> None:
    with pytest.raises(MusicError, match="length_target must be ≥ 1"):
        gen.MidiSettings(length_target=0).validate()


def test_continuation_prefills_the_file_and_replays_it_first(midi_model, tmp_path) -> None:
    text = "<start> pi:3c:a pi:40:9 t62 pi:3c:0 pi:40:0 pi:43:8 t30 pi:43:0 <end>"
    path = tmp_path / "theme.mid"
    codec.decode_tokens(text).to_midi().save(path)
    prompt = gen.midi_prompt_from_file(str(path))
    assert codec.ids_to_text(prompt) == text.removesuffix(" <end>")
    generation = gen.MidiGeneration(midi_model, gen.MidiSettings(max_tokens=20, seed=2), prompt_tokens=prompt)
    chunks = list(generation)
    assert chunks[0].from_prompt and chunks[0].events == codec.decode_tokens(prompt).events
    result = generation.result
    assert result.text.startswith(text.removesuffix(" <end>") + " ")
    # The state after the prompt is what the model continues from: same as feeding it by hand.
    logits, _ = midi_model.forward([vocab.PAD_ID] + prompt, midi_model.zero_state())
    sampler_first = gen.MidiGeneration(midi_model, gen.MidiSettings(max_tokens=1, seed=2, temperature=0.0), prompt_tokens=prompt).run()
    adjusted = logits.clone()
    gen.midi_logit_hook(gen.MidiSettings())(adjusted, 0)
    expected = int(torch.argmax(adjusted))
    assert sampler_first.tokens == ([] if expected in (vocab.PAD_ID, vocab.END_ID) else [expected])


def test_long_prompts_keep_their_last_tokens_from_a_time_step() -> None:
    ids, _ = codec.text_to_ids("<start> pi:3c:a t10 pi:3c:0 t20 pi:40:a t5 pi:40:0 <end>")
    trimmed = gen.trim_prompt(ids, 5)
    assert codec.ids_to_text(trimmed) == "<start> pi:40:a t5 pi:40:0"
    assert gen.midi_prompt_from_text("pi:3c:a t10 <end> pi:40:a") == gen.trim_prompt(ids[:3], 100)


def test_a_file_without_known_instruments_cannot_be_continued(tmp_path) -> None:
    mid = mido.MidiFile()
    track = mido.MidiTrack()
    mid.tracks.append(track)
    track.extend([mido.Message("program_change", program=120), mido.Message("note_on", note=60, velocity=90),
                  mido.Message("note_off", note=60, time=200)])
    mid.save(tmp_path / "fx.mid")
    with pytest.raises(MusicError, match="no notes in instruments"):
        gen.midi_prompt_from_file(str(tmp_path / "fx.mid"))


def test_cancel_releases_held_notes_without_the_end_pause(midi_model) -> None:
    generation = gen.MidiGeneration(midi_model, gen.MidiSettings(max_tokens=400, seed=4))
    chunks = []
    for chunk in generation:
        chunks.append(chunk)
        if len(chunks) == 15:
            threading.Thread(target=generation.cancel).start()
    result = generation.result
    assert result.stop_reason == StopReason.CANCELLED
    assert len(result.tokens) < 400
    final = chunks[-1]
    assert final.final and all(not e.is_on and e.time_ms == final.time_ms for e in final.events)
    assert generation.decoder.active == {}


def test_wrong_models_are_refused_in_one_line(midi_model, abc_model) -> None:
    with pytest.raises(MusicError, match="MIDI mode needs a MIDI-LLM model"):
        gen.MidiGeneration(abc_model)
    with pytest.raises(MusicError, match="ABC mode needs a character-level ABC model"):
        gen.AbcGeneration(midi_model, "S:1\n")


def test_abc_generation_writes_ascii_after_the_prompt(abc_model) -> None:
    generation = gen.AbcGeneration(abc_model, "S:2\nB:8\nL:1/8\nK:D\n", gen.AbcSettings(max_tokens=40, seed=5))
    deltas = list(generation)
    result = generation.result
    assert result.generated == "".join(deltas)
    assert result.text == "S:2\nB:8\nL:1/8\nK:D\n" + result.generated
    assert all(" " <= ch <= "~" or ch in "\n\t" for ch in result.generated)  # nothing that garbles a terminal


class _EosAfter:
    """Wraps a model so that EOS becomes certain after ``n`` fed tokens."""

    def __init__(self, model, n: int) -> None:
        self._model, self._n, self._fed = model, n, 0

    def __getattr__(self, name):
        return getattr(self._model, name)

    def forward(self, tokens, state):
        logits, new_state = self._model.forward(tokens, state)
        self._fed += len(tokens)
        if self._fed >= self._n:
            logits = logits.clone()
            logits[3] = 1e4
        return logits, new_state


def test_abc_generation_stops_at_eos(abc_model) -> None:
    prompt = "S:1\n"
    generation = gen.AbcGeneration(_EosAfter(abc_model, len(prompt) + 1 + 5), prompt, gen.AbcSettings(max_tokens=100, seed=1))
    result = generation.run()
    assert result.stop_reason == StopReason.STOP_TOKEN and result.complete
    assert len(result.tokens) == 5
