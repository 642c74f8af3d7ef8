"""Render MIDI to a .wav with the FluidSynth CLI, at a chosen loudness and under a peak limit.

FluidSynth's level depends on the sound font, the gain and how dense the music is, so the
render is measured (ITU-R BS.1770-4 integrated loudness, via pyloudnorm) and brought to the
target, like MusicGen's ``loudness`` strategy — but where that strategy hard-clips, a
look-ahead limiter keeps the sample peak under the ceiling without clicks, and the make-up
gain is re-measured so the target is still met. FluidSynth renders seconds of decaying
reverb after the last note; the tail is cut where it falls 60 dB below the peak and faded.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import mido
import numpy as np

from engine.music.errors import RenderError
from engine.music.files import atomic_write, midi_bytes

DEFAULT_TARGET_LUFS = -14.0  # streaming-music level (MusicGen's loudness strategy)
DEFAULT_PEAK_DBFS = -1.0  # EBU R128's true-peak ceiling, applied to sample peaks
MIN_TARGET_LUFS, MAX_TARGET_LUFS = -70.0, 0.0
MIN_PEAK_DBFS, MAX_PEAK_DBFS = -20.0, 0.0
DEFAULT_SAMPLE_RATE = 44_100
TAIL_FLOOR_DB = -60.0  # the tail ends where the level falls this far below the peak
FADE_SECONDS = 0.05
LIMITER_HOLD_SECONDS = 0.02

#: Where Debian/Ubuntu, Fedora and Arch put a General MIDI sound font.
SOUNDFONT_CANDIDATES = (
    "/usr/share/sounds/sf2/FluidR3_GM.sf2",
    "/usr/share/sounds/sf2/default-GM.sf2",
    "/usr/share/soundfonts/FluidR3_GM.sf2",
    "/usr/share/soundfonts/default.sf2",
    "/usr/share/sounds/sf3/default-GM.sf3",
    "/usr/share/sounds/sf2/TimGM6mb.sf2",
)


@dataclass
class RenderResult:
    path: Path
    seconds: float
    sample_rate: int
    #: Integrated loudness of the written audio (None if too short to measure: < 0.4 s).
    lufs: float | None
    peak_dbfs: float
    #: Gain applied to FluidSynth's output, in dB (before limiting).
    gain_db: float
    #: True when the limiter had to act to keep the peak under the ceiling.
    limited: bool

    def summary(self) -> str:
        loud = f"{self.lufs:.1f} LUFS" if self.lufs is not None else "too short to measure"
        return f"{self.path} ({self.seconds:.1f} s, {loud}, peak {self.peak_dbfs:.1f} dBFS)"


def find_soundfont(explicit: str | Path | None = None) -> Path:
    """The sound font to use: ``explicit``, $RWKV_TUI_SOUNDFONT, or a system GM font."""
    if explicit is not None:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise RenderError(f"sound font {path} not found")
        return path
    env = os.environ.get("RWKV_TUI_SOUNDFONT")
    if env:
        return find_soundfont(env)
    for candidate in SOUNDFONT_CANDIDATES:
        if Path(candidate).is_file():
            return Path(candidate)
    raise RenderError(
        "no General MIDI sound font found (Debian/Ubuntu: apt install fluid-soundfont-gm), "
        "or pass a .sf2 file"
    )


def fluidsynth_path() -> str:
    path = shutil.which("fluidsynth")
    if path is None:
        raise RenderError("FluidSynth is not installed (Debian/Ubuntu: apt install fluidsynth); cannot render audio")
    return path


def synthesize(mid: mido.MidiFile, *, soundfont: Path, sample_rate: int = DEFAULT_SAMPLE_RATE,
               timeout: float = 600.0) -> np.ndarray:
    """FluidSynth's raw float render of ``mid``: an array [frames, channels]."""
    import soundfile

    program = fluidsynth_path()
    with tempfile.TemporaryDirectory(prefix="rwkv-render-") as folder:
        source = Path(folder) / "in.mid"
        target = Path(folder) / "out.wav"
        source.write_bytes(midi_bytes(mid))
        command = [program, "-n", "-i", "-q", "-F", str(target), "-T", "wav", "-O", "float",
                   "-r", str(sample_rate), "-g", "0.5", str(soundfont), str(source)]
        try:
            run = subprocess.run(command, capture_output=True, text=True, timeout=timeout, errors="replace")
        except subprocess.TimeoutExpired:
            raise RenderError(f"FluidSynth took longer than {timeout:.0f} s; gave up") from None
        except OSError as exc:
            raise RenderError(f"FluidSynth could not be started: {exc.strerror or exc}") from None
        if run.returncode != 0 or not target.is_file() or target.stat().st_size == 0:
            detail = (run.stderr or run.stdout).strip().splitlines()
            reason = detail[-1] if detail else f"exit status {run.returncode}"
            raise RenderError(f"FluidSynth could not render the MIDI: {reason}")
        data, rate = soundfile.read(target, dtype="float64", always_2d=True)
    if rate != sample_rate:
        raise RenderError(f"FluidSynth rendered at {rate} Hz instead of {sample_rate} Hz")
    return data


def trim_tail(audio: np.ndarray, sample_rate: int, keep_seconds: float = 0.0) -> np.ndarray:
    """Cut the decaying tail where it falls TAIL_FLOOR_DB below the peak (never before
    ``keep_seconds``), with a short fade so the cut is silent."""
    if audio.size == 0:
        return audio
    window = max(1, int(0.01 * sample_rate))
    level = np.max(np.abs(audio), axis=1)
    peak = float(level.max())
    if peak <= 0:
        return audio
    floor = peak * 10 ** (TAIL_FLOOR_DB / 20)
    loud = np.nonzero(level > floor)[0]
    end = int(loud[-1]) + 1 + window if loud.size else 0
    end = max(end, int(math.ceil(keep_seconds * sample_rate)))
    end = min(end + int(FADE_SECONDS * sample_rate), audio.shape[0])
    out = audio[:end].copy()
    fade = min(int(FADE_SECONDS * sample_rate), end)
    if fade > 0:
        out[end - fade:] *= np.linspace(1.0, 0.0, fade)[:, None]
    return out


def limit_peaks(audio: np.ndarray, sample_rate: int, ceiling: float) -> tuple[np.ndarray, bool]:
    """Look-ahead limiter: the gain dips smoothly around samples above ``ceiling``.

    The required gain is spread with a minimum filter (hold) and then averaged over a window no
    wider than the hold, which can only lower it further: the result never exceeds the ceiling.
    """
    from scipy.ndimage import minimum_filter1d, uniform_filter1d

    level = np.max(np.abs(audio), axis=1)
    if float(level.max(initial=0.0)) <= ceiling:
        return audio, False
    required = np.minimum(1.0, ceiling / np.maximum(level, 1e-12))
    hold = max(1, int(LIMITER_HOLD_SECONDS * sample_rate))
    held = minimum_filter1d(required, size=2 * hold + 1, mode="nearest")
    smooth = uniform_filter1d(held, size=2 * (hold // 2) + 1, mode="nearest")
    gain = np.minimum(smooth, required)  # guard against filter rounding
    return audio * gain[:, None], True


def measure_lufs(audio: np.ndarray, sample_rate: int) -> float | None:
    """Integrated loudness (BS.1770-4); None when shorter than one 0.4 s block; -inf if silent."""
    import pyloudnorm

    if audio.shape[0] < int(0.4 * sample_rate) + 1:
        return None
    return float(pyloudnorm.Meter(sample_rate).integrated_loudness(audio))


def normalize(audio: np.ndarray, sample_rate: int, target_lufs: float, peak_dbfs: float) -> tuple[np.ndarray, float, bool]:
    """Bring ``audio`` to ``target_lufs`` with its sample peak under ``peak_dbfs``.

    Returns (audio, gain in dB, whether the limiter acted). Limiting lowers the loudness a
    little, so the make-up gain is re-measured a few times until the target is met.
    """
    ceiling = 10 ** (peak_dbfs / 20)
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    if peak <= 0:
        raise RenderError("the rendered audio is silent (no notes to hear?)")
    measured = measure_lufs(audio, sample_rate)
    if measured is not None and not math.isfinite(measured):
        raise RenderError("the rendered audio is silent (no notes to hear?)")
    if measured is None:  # too short for BS.1770: peak-normalise only
        gain_db = 20 * math.log10(ceiling / peak)
        return audio * (ceiling / peak), gain_db, False
    gain_db = target_lufs - measured
    limited_any = False
    out = audio
    for _ in range(6):
        out, limited = limit_peaks(audio * 10 ** (gain_db / 20), sample_rate, ceiling)
        limited_any = limited_any or limited
        now = measure_lufs(out, sample_rate)
        if not limited or now is None or abs(now - target_lufs) < 0.05:
            break
        gain_db += target_lufs - now
        if gain_db > 60:  # a single spike in silence: cannot be made louder sensibly
            break
    return np.clip(out, -ceiling, ceiling), gain_db, limited_any


def check_targets(target_lufs: float, peak_dbfs: float) -> None:
    """RenderError with the valid range for a loudness target or peak ceiling that makes no sense
    (checked before a render, and by the CLI before it generates what it would render)."""
    if not MIN_TARGET_LUFS <= target_lufs <= MAX_TARGET_LUFS:  # NaN fails too
        raise RenderError(f"loudness target must be between {MIN_TARGET_LUFS:g} and {MAX_TARGET_LUFS:g} LUFS, "
                          f"got {target_lufs:g}")
    if not MIN_PEAK_DBFS <= peak_dbfs <= MAX_PEAK_DBFS:
        raise RenderError(f"peak limit must be between {MIN_PEAK_DBFS:g} and {MAX_PEAK_DBFS:g} dBFS, got {peak_dbfs:g}")


def render_wav(
    midi: mido.MidiFile | str | Path,
    path: str | Path,
    *,
    soundfont: str | Path | None = None,
    sample_rate: int = DEFAULT_SAMPLE_RATE,
    target_lufs: float = DEFAULT_TARGET_LUFS,
    peak_dbfs: float = DEFAULT_PEAK_DBFS,
) -> RenderResult:
    """Render ``midi`` to a 16-bit stereo .wav at ``path`` (saved atomically)."""
    import soundfile

    check_targets(target_lufs, peak_dbfs)
    if not isinstance(midi, mido.MidiFile):
        from engine.music.midi_codec import load_midi_file

        midi = load_midi_file(midi)
    font = find_soundfont(soundfont)
    audio = synthesize(midi, soundfont=font, sample_rate=sample_rate)
    audio = trim_tail(audio, sample_rate, keep_seconds=midi.length)
    audio, gain_db, limited = normalize(audio, sample_rate, target_lufs, peak_dbfs)

    def write(handle) -> None:  # noqa: ANN001 - binary file object
        soundfile.write(handle, audio, sample_rate, format="WAV", subtype="PCM_16")

    target = atomic_write(path, write)
    peak = float(np.max(np.abs(audio)))
    return RenderResult(
        path=target, seconds=audio.shape[0] / sample_rate, sample_rate=sample_rate,
        lufs=measure_lufs(audio, sample_rate), peak_dbfs=20 * math.log10(peak) if peak > 0 else -math.inf,
        gain_db=gain_db, limited=limited,
    )
