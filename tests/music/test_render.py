"""Loudness normalisation, peak limiting and tail trimming (numpy only; the FluidSynth render
itself is exercised in test_real_synth.py)."""

from __future__ import annotations

import numpy as np
import pytest

from engine.music import render
from engine.music.errors import RenderError

SR = 44_100


def tone(seconds: float, amplitude: float, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    mono = amplitude * np.sin(2 * np.pi * freq * t)
    return np.stack([mono, mono], axis=1)


def lufs(audio: np.ndarray) -> float:
    import pyloudnorm

    return pyloudnorm.Meter(SR).integrated_loudness(audio)


def test_quiet_music_is_raised_to_the_target() -> None:
    audio = tone(3.0, 0.05)
    out, gain_db, limited = render.normalize(audio, SR, -14.0, -1.0)
    assert lufs(out) == pytest.approx(-14.0, abs=0.05)
    assert not limited and gain_db > 0


def test_peaks_are_limited_and_the_target_still_met() -> None:
    # Quiet tone with sharp clicks: reaching -10 LUFS would push the clicks far over 0 dBFS.
    audio = tone(4.0, 0.05)
    for position in range(SR // 2, 4 * SR, SR // 2):
        audio[position:position + 20] = 0.9
    out, _gain, limited = render.normalize(audio, SR, -10.0, -1.0)
    assert limited
    assert np.max(np.abs(out)) <= 10 ** (-1 / 20) + 1e-9
    assert lufs(out) == pytest.approx(-10.0, abs=0.1)
    # The limiter acts around the clicks only: between them the tone is just gained up.
    gain = 10 ** (_gain / 20)
    quiet = slice(int(0.7 * SR), int(0.8 * SR))
    assert np.allclose(out[quiet], audio[quiet] * gain, rtol=1e-6)


def test_limiter_output_never_exceeds_the_ceiling_and_leaves_quiet_audio_alone() -> None:
    rng = np.random.default_rng(0)
    audio = rng.normal(0, 0.5, size=(SR, 2))
    limited, acted = render.limit_peaks(audio, SR, 0.5)
    assert acted and np.max(np.abs(limited)) <= 0.5 + 1e-12
    calm = tone(1.0, 0.3)
    same, acted = render.limit_peaks(calm, SR, 0.5)
    assert not acted and same is calm


def test_silence_is_an_error_not_a_loud_hiss() -> None:
    with pytest.raises(RenderError, match="silent"):
        render.normalize(np.zeros((SR, 2)), SR, -14.0, -1.0)


def test_very_short_audio_is_peak_normalised() -> None:
    out, _gain, _limited = render.normalize(tone(0.2, 0.1), SR, -14.0, -1.0)
    assert np.max(np.abs(out)) == pytest.approx(10 ** (-1 / 20), rel=1e-3)


def test_tail_is_cut_below_the_floor_and_faded() -> None:
    body = tone(1.0, 0.5)
    decay = tone(3.0, 0.5) * np.exp(-np.arange(3 * SR) / (0.2 * SR))[:, None]  # -60 dB after ~1.4 s
    audio = np.concatenate([body, decay])
    out = render.trim_tail(audio, SR)
    assert 2.2 * SR < out.shape[0] < 2.6 * SR
    assert abs(out[-1]).max() == 0.0  # faded to silence
    assert render.trim_tail(audio, SR, keep_seconds=3.5).shape[0] >= 3.5 * SR  # the music is kept


def test_missing_tools_and_fonts_are_one_line(monkeypatch, tmp_path) -> None:
    with pytest.raises(RenderError, match="sound font .* not found"):
        render.find_soundfont(tmp_path / "none.sf2")
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(RenderError, match="FluidSynth is not installed"):
        render.fluidsynth_path()


def test_bad_targets_are_refused(tmp_path) -> None:
    import mido

    with pytest.raises(RenderError, match="loudness target"):
        render.render_wav(mido.MidiFile(), tmp_path / "x.wav", target_lufs=5)
    with pytest.raises(RenderError, match="peak limit"):
        render.render_wav(mido.MidiFile(), tmp_path / "x.wav", peak_dbfs=-40)
    assert not (tmp_path / "x.wav").exists()
