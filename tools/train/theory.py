"""Just enough music theory to compute exact answers for the chat corpus.

Notes are spelled (a letter plus an accidental), not bare pitch classes, because a correct
answer to "what is a major third above E" is G#, never Ab. Everything that would need a
double sharp or flat is left out of the corpus rather than answered awkwardly.
"""

from __future__ import annotations

from dataclasses import dataclass

LETTERS = "CDEFGAB"
LETTER_PITCH = (0, 2, 4, 5, 7, 9, 11)
ACCIDENTALS = {-2: "bb", -1: "b", 0: "", 1: "#", 2: "##"}


@dataclass(frozen=True, order=True)
class Note:
    """A spelled pitch class: letter index 0..6 (C..B) and accidental −2..2."""

    letter: int
    accidental: int = 0

    @classmethod
    def parse(cls, name: str) -> "Note":
        letter = LETTERS.index(name[0].upper())
        rest = name[1:]
        table = {v: k for k, v in ACCIDENTALS.items()}
        if rest not in table:
            raise ValueError(f"bad note name {name!r}")
        return cls(letter, table[rest])

    @property
    def name(self) -> str:
        return LETTERS[self.letter] + ACCIDENTALS[self.accidental]

    @property
    def pitch_class(self) -> int:
        return (LETTER_PITCH[self.letter] + self.accidental) % 12

    @property
    def simple(self) -> bool:
        """At most one sharp or flat, and not one of the rare spellings Cb, Fb, E#, B#."""
        return abs(self.accidental) <= 1 and self.name not in ("Cb", "Fb", "E#", "B#")

    def __str__(self) -> str:
        return self.name


#: The 17 everyday spellings: naturals, and sharps/flats except Cb Fb E# B#.
COMMON_NOTES: tuple[Note, ...] = tuple(
    Note(letter, acc) for letter in range(7) for acc in (-1, 0, 1) if Note(letter, acc).simple
)


@dataclass(frozen=True)
class Interval:
    """A spelled interval: number 1..8 (unison..octave) and quality P, M, m, A or d."""

    number: int
    quality: str

    _BASE = (0, 2, 4, 5, 7, 9, 11, 12)
    _PERFECT = (1, 4, 5, 8)
    _NUMBER_NAMES = ("unison", "second", "third", "fourth", "fifth", "sixth", "seventh", "octave")
    _QUALITY_NAMES = {"P": "perfect", "M": "major", "m": "minor", "A": "augmented", "d": "diminished"}

    @property
    def semitones(self) -> int:
        base = self._BASE[self.number - 1]
        if self.number in self._PERFECT:
            offset = {"P": 0, "A": 1, "d": -1}[self.quality]
        else:
            offset = {"M": 0, "m": -1, "A": 1, "d": -2}[self.quality]
        return base + offset

    @property
    def name(self) -> str:
        return f"{self._QUALITY_NAMES[self.quality]} {self._NUMBER_NAMES[self.number - 1]}"

    @property
    def short(self) -> str:
        return f"{self.quality}{self.number}"

    @classmethod
    def parse(cls, short: str) -> "Interval":
        return cls(int(short[1:]), short[0])

    @classmethod
    def between(cls, low: Note, high: Note) -> "Interval | None":
        """The ascending interval from ``low`` to ``high`` within an octave (None if unusual)."""
        number = (high.letter - low.letter) % 7 + 1
        semis = (high.pitch_class - low.pitch_class) % 12
        if number == 1 and semis == 0:
            return cls(1, "P")
        base = cls._BASE[number - 1]
        diff = semis - base
        if diff > 6:
            diff -= 12
        if diff < -6:
            diff += 12
        if number in cls._PERFECT:
            quality = {0: "P", 1: "A", -1: "d"}.get(diff)
        else:
            quality = {0: "M", -1: "m", 1: "A", -2: "d"}.get(diff)
        if quality is None:
            return None
        return cls(number, quality)


def transpose(root: Note, interval: Interval) -> Note:
    """The note ``interval`` above ``root`` (spelled by letter distance)."""
    letter = (root.letter + interval.number - 1) % 7
    target = (root.pitch_class + interval.semitones) % 12
    acc = (target - LETTER_PITCH[letter]) % 12
    if acc > 6:
        acc -= 12
    return Note(letter, acc)


def spell(root: Note, intervals: tuple[str, ...]) -> tuple[Note, ...] | None:
    """Notes of a scale or chord; None if any needs a double accidental or a rare spelling."""
    notes = tuple(transpose(root, Interval.parse(i)) for i in intervals)
    if any(abs(n.accidental) > 1 for n in notes):
        return None
    return notes


#: (name, interval list). Scales list the degrees without the octave.
SCALES: dict[str, tuple[str, ...]] = {
    "major": ("P1", "M2", "M3", "P4", "P5", "M6", "M7"),
    "natural minor": ("P1", "M2", "m3", "P4", "P5", "m6", "m7"),
    "harmonic minor": ("P1", "M2", "m3", "P4", "P5", "m6", "M7"),
    "melodic minor": ("P1", "M2", "m3", "P4", "P5", "M6", "M7"),
    "dorian": ("P1", "M2", "m3", "P4", "P5", "M6", "m7"),
    "phrygian": ("P1", "m2", "m3", "P4", "P5", "m6", "m7"),
    "lydian": ("P1", "M2", "M3", "A4", "P5", "M6", "M7"),
    "mixolydian": ("P1", "M2", "M3", "P4", "P5", "M6", "m7"),
    "locrian": ("P1", "m2", "m3", "P4", "d5", "m6", "m7"),
    "major pentatonic": ("P1", "M2", "M3", "P5", "M6"),
    "minor pentatonic": ("P1", "m3", "P4", "P5", "m7"),
}

#: symbol suffix → (long name, intervals).
CHORDS: dict[str, tuple[str, tuple[str, ...]]] = {
    "": ("major triad", ("P1", "M3", "P5")),
    "m": ("minor triad", ("P1", "m3", "P5")),
    "dim": ("diminished triad", ("P1", "m3", "d5")),
    "aug": ("augmented triad", ("P1", "M3", "A5")),
    "sus2": ("suspended second chord", ("P1", "M2", "P5")),
    "sus4": ("suspended fourth chord", ("P1", "P4", "P5")),
    "7": ("dominant seventh chord", ("P1", "M3", "P5", "m7")),
    "maj7": ("major seventh chord", ("P1", "M3", "P5", "M7")),
    "m7": ("minor seventh chord", ("P1", "m3", "P5", "m7")),
    "m7b5": ("half-diminished seventh chord", ("P1", "m3", "d5", "m7")),
    "6": ("major sixth chord", ("P1", "M3", "P5", "M6")),
    "m6": ("minor sixth chord", ("P1", "m3", "P5", "M6")),
}

SHARP_ORDER = ("F#", "C#", "G#", "D#", "A#", "E#", "B#")
FLAT_ORDER = ("Bb", "Eb", "Ab", "Db", "Gb", "Cb", "Fb")
#: Major keys by their signature: positive = sharps, negative = flats.
MAJOR_KEYS: dict[str, int] = {
    "C": 0, "G": 1, "D": 2, "A": 3, "E": 4, "B": 5, "F#": 6, "C#": 7,
    "F": -1, "Bb": -2, "Eb": -3, "Ab": -4, "Db": -5, "Gb": -6, "Cb": -7,
}


def relative_minor(major: str) -> str:
    return transpose(Note.parse(major), Interval(6, "M")).name


def relative_major(minor: str) -> str:
    return transpose(Note.parse(minor), Interval(3, "m")).name


MINOR_KEYS: dict[str, int] = {relative_minor(k): n for k, n in MAJOR_KEYS.items()}


def signature_accidentals(count: int) -> tuple[str, ...]:
    return SHARP_ORDER[:count] if count >= 0 else FLAT_ORDER[:-count]


def midi_number(note: Note, octave: int) -> int:
    """Scientific pitch: C4 = middle C = 60; the octave number belongs to the letter."""
    return 12 * (octave + 1) + LETTER_PITCH[note.letter] + note.accidental


def midi_note_names(number: int) -> tuple[str, ...]:
    """Names of a MIDI note number: 'C4', or 'C#4' and 'Db4' for a black key."""
    octave, pc = divmod(number, 12)
    octave -= 1
    names = [f"{n.name}{octave}" for n in COMMON_NOTES if n.pitch_class == pc and n.accidental == 0]
    if names:
        return tuple(names)
    sharp = next(n for n in COMMON_NOTES if n.pitch_class == pc and n.accidental == 1)
    flat = next(n for n in COMMON_NOTES if n.pitch_class == pc and n.accidental == -1)
    return (f"{sharp.name}{octave}", f"{flat.name}{octave}")


def frequency(number: int) -> float:
    """Equal temperament with A4 = 440 Hz."""
    return 440.0 * 2 ** ((number - 69) / 12)


def format_ms(value: float) -> str:
    """Milliseconds without a useless '.0', at most one decimal."""
    rounded = round(value, 1)
    return f"{rounded:.0f}" if rounded == int(rounded) else f"{rounded:.1f}"
