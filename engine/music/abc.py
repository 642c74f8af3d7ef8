"""ABC notation for RWKV ABC models: prompts with control codes, and ABC → MIDI via abc2midi.

RWKV ABC models were trained on TunesFormer-style text: control codes first (``S:`` number of
sections, ``B:`` bars per section, ``E:`` similarity of a section to each earlier one), then
header fields (``L:``, ``M:``, ``K:``) and the tune, with no ``X:`` line. A prompt is the start
of such a text; the model writes the rest.

abc2midi (Debian ``abcmidi``) needs an ``X:`` line, always exits 0 — also when it wrote
nothing — and reports problems as "Error in line-char L-C : …" lines, so success is judged by
the output file and its notes, and errors are turned into one line for the user.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import mido

from engine.music.errors import AbcError

BOS = 2
EOS = 3
MAX_SECTIONS = 8
MAX_BARS = 32
MAX_SIMILARITY = 10

_FIELD_VALUE = re.compile(r"[ -~]*")  # printable ASCII, no newlines
_X_LINE = re.compile(r"^\s*X:", re.MULTILINE)
_MESSAGE = re.compile(r"^(Error|Warning) in line-char (\d+)-(\d+) : (.*)$")


@dataclass(frozen=True)
class AbcControls:
    """TunesFormer control codes; any prefix of the full set is a valid prompt.

    ``sections``: S (1–8). ``bars``: B of section 1, 2, … (1–32 each). ``similarities``: for
    section 2, 3, …, its E value (0 unrelated … 10 identical) against each earlier section,
    so entry i has i + 1 values.
    """

    sections: int | None = None
    bars: tuple[int, ...] = ()
    similarities: tuple[tuple[int, ...], ...] = ()

    def validate(self) -> "AbcControls":
        if self.sections is None:
            if self.bars or self.similarities:
                raise AbcError("control codes: B: and E: need S: (the number of sections) first")
            return self
        if not 1 <= self.sections <= MAX_SECTIONS:
            raise AbcError(f"control codes: S: must be 1–{MAX_SECTIONS}, got {self.sections}")
        if len(self.bars) > self.sections:
            raise AbcError(f"control codes: {len(self.bars)} B: values for {self.sections} section(s)")
        for value in self.bars:
            if not 1 <= value <= MAX_BARS:
                raise AbcError(f"control codes: B: must be 1–{MAX_BARS}, got {value}")
        if len(self.similarities) > min(len(self.bars), self.sections - 1):
            raise AbcError("control codes: E: values given for a section whose predecessors have no B:")
        for index, row in enumerate(self.similarities):
            complete = len(row) == index + 1
            last = index == len(self.similarities) - 1
            if len(row) > index + 1 or (not complete and not last) or (not complete and len(self.bars) > index + 1):
                raise AbcError(
                    f"control codes: section {index + 2} needs {index + 1} E: value(s) before its B:, got {len(row)}"
                )
            for value in row:
                if not 0 <= value <= MAX_SIMILARITY:
                    raise AbcError(f"control codes: E: must be 0–{MAX_SIMILARITY}, got {value}")
        if len(self.bars) > 1 and len(self.similarities) < len(self.bars) - 1:
            raise AbcError(f"control codes: section {len(self.similarities) + 2} needs its E: values before its B:")
        return self

    def lines(self) -> list[str]:
        """The control-code lines in training order: S, B₁, then per section Eⱼ… and Bᵢ."""
        self.validate()
        if self.sections is None:
            return []
        out = [f"S:{self.sections}"]
        if self.bars:
            out.append(f"B:{self.bars[0]}")
        for section, row in enumerate(self.similarities, start=1):
            out.extend(f"E:{value}" for value in row)
            if len(row) == section and section < len(self.bars):
                out.append(f"B:{self.bars[section]}")
        return out

    @classmethod
    def uniform(cls, sections: int, bars: int | None = None, similarity: int | None = None) -> "AbcControls":
        """Every section ``bars`` long and ``similarity`` to each earlier one.

        Training order puts a section's E: values before its B:, so without a similarity only
        the first section's bars can be asked for.
        """
        if bars is None:
            return cls(sections).validate()
        if similarity is None:
            return cls(sections, (bars,)).validate()
        rows = tuple((similarity,) * (i + 1) for i in range(sections - 1))
        return cls(sections, (bars,) * sections, rows).validate()

    @classmethod
    def parse(cls, text: str) -> "AbcControls":
        """Read codes written like "S:2 B:8 E:5 B:8" (spaces, commas or newlines between)."""
        sections: int | None = None
        bars: list[int] = []
        rows: list[list[int]] = []
        for item in re.split(r"[\s,;/]+", text.strip()):
            if not item:
                continue
            match = re.fullmatch(r"([SBEsbe]):?(\d+)", item)
            if not match:
                raise AbcError(f"control codes: cannot read {item!r} (expected S:n, B:n or E:n)")
            letter, value = match.group(1).upper(), int(match.group(2))
            if letter == "S":
                if sections is not None:
                    raise AbcError("control codes: S: given twice")
                sections = value
            elif letter == "B":
                if sections is None:
                    raise AbcError("control codes: B: before S:")
                if bars and (len(rows) != len(bars) or len(rows[-1]) != len(bars)):
                    raise AbcError(
                        f"control codes: section {len(bars) + 1} needs {len(bars)} E: value(s) before its B:"
                    )
                bars.append(value)
            else:
                if not bars:
                    raise AbcError("control codes: E: before the first B:")
                if len(rows) < len(bars):
                    rows.append([])
                if len(rows[-1]) >= len(bars):
                    raise AbcError(f"control codes: too many E: values for section {len(rows) + 1}")
                rows[-1].append(value)
        return cls(sections, tuple(bars), tuple(tuple(r) for r in rows)).validate()


@dataclass(frozen=True)
class AbcHeader:
    """Optional header fields written after the control codes: L: unit, M: meter, K: key."""

    unit: str | None = None  # e.g. "1/8"
    meter: str | None = None  # e.g. "3/4", "C", "6/8"
    key: str | None = None  # e.g. "D", "Ador", "Bb"

    def lines(self) -> list[str]:
        out = []
        for name, value in (("L", self.unit), ("M", self.meter), ("K", self.key)):
            if value is None:
                continue
            value = value.strip()
            if not value or not _FIELD_VALUE.fullmatch(value):
                raise AbcError(f"header field {name}: must be one line of plain ASCII, got {value!r}")
            out.append(f"{name}:{value}")
        return out


def build_prompt(
    controls: AbcControls | None = None,
    header: AbcHeader | None = None,
    tune_start: str = "",
) -> str:
    """Prompt text (without BOS): control codes, header fields and the start of the tune."""
    lines = (controls.lines() if controls else []) + (header.lines() if header else [])
    text = "".join(line + "\n" for line in lines)
    if tune_start:
        _check_ascii(tune_start, "the start of the tune")
        text += tune_start
    return text


def prompt_ids(prompt: str) -> list[int]:
    """Token ids the model is fed: BOS then one id per character."""
    _check_ascii(prompt, "the ABC prompt")
    return [BOS] + [ord(ch) for ch in prompt]


def _check_ascii(text: str, what: str) -> None:
    for position, ch in enumerate(text):
        if not (ch == "\n" or ch == "\t" or " " <= ch <= "~"):
            raise AbcError(f"{what} contains {ch!r} at position {position}; ABC models read plain ASCII only")


def with_reference_number(abc: str, number: int = 1) -> str:
    """The tune with an ``X:`` line first (abc2midi and most ABC tools need one)."""
    abc = abc.replace("\x02", "").replace("\x03", "")
    if _X_LINE.search(abc):
        return abc
    return f"X:{number}\n{abc}"


# --------------------------------------------------------------------------- abc2midi


@dataclass
class AbcMidi:
    midi: mido.MidiFile
    #: Problems abc2midi reported but worked around (the file was still written).
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def abc2midi_path() -> str:
    path = shutil.which("abc2midi")
    if path is None:
        raise AbcError("abc2midi is not installed (Debian/Ubuntu: apt install abcmidi); cannot turn ABC into MIDI")
    return path


def abc_to_midi(abc: str, *, chords: bool = True, timeout: float = 30.0) -> AbcMidi:
    """Convert an ABC tune (model output, with or without ``X:``) to MIDI with abc2midi.

    ``chords`` keeps abc2midi's accompaniment for guitar-chord symbols ("G"). Raises AbcError
    with one line when no playable MIDI comes out.
    """
    program = abc2midi_path()
    cleaned = abc.replace("\x02", "").replace("\x03", "")
    text = with_reference_number(cleaned)
    added_lines = 0 if text == cleaned else 1
    with tempfile.TemporaryDirectory(prefix="rwkv-abc-") as folder:
        source = Path(folder) / "tune.abc"
        target = Path(folder) / "tune.mid"
        source.write_text(text if text.endswith("\n") else text + "\n", encoding="utf-8")
        command = [program, str(source), "-o", str(target), "-quiet"]
        if not chords:
            command.append("-NGUI")
        try:
            run = subprocess.run(command, capture_output=True, text=True, timeout=timeout, errors="replace")
        except subprocess.TimeoutExpired:
            raise AbcError(f"abc2midi took longer than {timeout:.0f} s on this tune; gave up") from None
        except OSError as exc:
            raise AbcError(f"abc2midi could not be started: {exc.strerror or exc}") from None
        errors, warnings = _messages(run.stdout + "\n" + run.stderr, added_lines)
        if not target.is_file() or target.stat().st_size == 0:
            reason = errors[0] if errors else "it wrote no MIDI file"
            raise AbcError(f"abc2midi could not convert the ABC: {reason}")
        try:
            midi = mido.MidiFile(target, clip=True)
        except (OSError, EOFError, ValueError, KeyError, IndexError) as exc:
            raise AbcError(f"abc2midi wrote an unreadable MIDI file ({exc})") from None
    if not any(msg.type == "note_on" and msg.velocity > 0 for track in midi.tracks for msg in track):
        reason = f" ({errors[0]})" if errors else ""
        raise AbcError(f"the ABC tune has no notes abc2midi could play{reason}")
    return AbcMidi(midi, errors, warnings)


def _messages(output: str, added_lines: int) -> tuple[list[str], list[str]]:
    errors: list[str] = []
    warnings: list[str] = []
    for raw in output.splitlines():
        match = _MESSAGE.match(raw.strip())
        if not match:
            continue
        kind, line, column, text = match.groups()
        where = f"line {max(1, int(line) - added_lines)}, column {int(column) + 1}"
        (errors if kind == "Error" else warnings).append(f"{text.strip()} ({where})")
    return errors, warnings
