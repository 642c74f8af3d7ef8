"""TunesFormer control codes (S:, B:, E:) for a tune, per music.md §2.

* ``S:n``: number of sections; sections end at the barlines ``[|``, ``||``, ``|]``, ``|:``,
  ``::`` and ``:|`` (and their combinations such as ``:|:``).
* ``B:n``: bars in a section, counted with ``|``.
* ``E:k``: how similar a section is to an earlier one,
  k = round(10 × (1 − Levenshtein(c, p) / max(|c|, |p|))).

Lines come out as ``S:`` first, then section 1's ``B:``, then for each later section one ``E:``
per earlier section (in order) followed by its own ``B:``. Tunes with more than 8 sections or
a section of more than 32 bars are refused, as the original annotation did.

Section texts are compared with spaces removed: how a transcriber spaced the notes says
nothing about how similar two phrases sound.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

MAX_SECTIONS = 8
MAX_BARS = 32

#: A barline: any run of ':', '|', '[' and ']' that contains '|', or a bare '::'.
#: '[' only counts when it directly precedes '|' ("[|"), so chords like [CEG] are untouched.
_BARLINE = re.compile(r":*(?:\[\|)[|\]:]*|:*\|[|\]:]*|::")
#: Inline fields [K:..] [M:..] [L:..] and quoted strings are not music.
_NON_MUSIC = re.compile(r"\[[A-Za-z]:[^\]]*\]|\"[^\"]*\"")


@dataclass(frozen=True)
class Controls:
    sections: int
    bars: tuple[int, ...]
    #: similarities[i] lists section i's similarity to sections 0..i-1.
    similarities: tuple[tuple[int, ...], ...]

    def lines(self) -> list[str]:
        out = [f"S:{self.sections}", f"B:{self.bars[0]}"]
        for i in range(1, self.sections):
            out.extend(f"E:{e}" for e in self.similarities[i])
            out.append(f"B:{self.bars[i]}")
        return out

    def text(self) -> str:
        return "\n".join(self.lines()) + "\n"


def is_section_end(barline: str) -> bool:
    """Whether a barline token closes a section (anything but a plain '|')."""
    return barline != "|"


def split_sections(body: str) -> list[str]:
    """The music text of each section (plain barlines kept as '|'); sections without a note
    are dropped (e.g. the empty text before an opening '|:')."""
    music = _NON_MUSIC.sub(" ", body)
    sections: list[str] = []
    current = ""
    position = 0
    for match in _BARLINE.finditer(music):
        current += music[position:match.start()]
        if is_section_end(match.group(0)):
            sections.append(current)
            current = ""
        else:
            current += "|"
        position = match.end()
    current += music[position:]
    sections.append(current)
    return [s for s in sections if re.search(r"[A-Ga-gz]", s)]


def count_bars(section: str) -> int:
    """Bars in a section: its inner barlines plus the one that closes it."""
    return section.rstrip().rstrip("|").count("|") + 1


def levenshtein(a: str, b: str) -> int:
    """Edit distance with unit costs.

    Row by row, vectorised: within a row the only sequential dependency (an insertion after
    an insertion) is a running minimum of (t[k] − k), which numpy computes in one pass.
    """
    if len(a) < len(b):
        a, b = b, a
    if not b:
        return len(a)
    codes_b = np.frombuffer(b.encode("utf-32-le"), dtype=np.uint32)
    positions = np.arange(len(b) + 1)
    previous = positions.copy()
    for i, ch in enumerate(a, 1):
        substitution = previous[:-1] + (codes_b != ord(ch))
        best = np.empty_like(previous)
        best[0] = i
        best[1:] = np.minimum(previous[1:] + 1, substitution)
        previous = np.minimum.accumulate(best - positions) + positions
    return int(previous[-1])


def similarity(a: str, b: str) -> int:
    a, b = a.replace(" ", ""), b.replace(" ", "")
    longest = max(len(a), len(b))
    if longest == 0:
        return 10
    return round(10 * (1 - levenshtein(a, b) / longest))


def compute_controls(body: str) -> Controls | None:
    """Control codes for a tune body (the music after K:), or None if it breaks the limits."""
    sections = split_sections(body)
    if not sections or len(sections) > MAX_SECTIONS:
        return None
    bars = tuple(count_bars(s) for s in sections)
    if max(bars) > MAX_BARS:
        return None
    flat = [s.replace("\n", "") for s in sections]
    sims = tuple(tuple(similarity(flat[i], flat[j]) for j in range(i)) for i in range(len(flat)))
    return Controls(len(sections), bars, sims)
