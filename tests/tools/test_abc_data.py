"""ABC cleaning and TunesFormer control codes (music.md §2)."""

from __future__ import annotations

import pytest

from tools.train.abc_controls import compute_controls, count_bars, levenshtein, similarity, split_sections
from tools.train.abc_data import EXCLUDED, SOURCES, clean_tune, load_tunes

RAW = """X: 12
T: The Test Reel
C: Trad.
R: reel
N: "collected by somebody"
Z: Transcribed by someone
M:C|
L:1/8
Q:1/4=120
K:G
"4"uGABc dBGB|!trill!c2ec "^SEGUE"BGGB|cBAG FGAB|`c2A2 A4:|
P:B
|:gfgd edBd|gfgd e2d2|gfgd edBd|c2A2 A4:|
W: some words
"""


def test_clean_tune_keeps_music_and_drops_text() -> None:
    cleaned = clean_tune(RAW)
    assert cleaned is not None
    header, body = cleaned
    assert header == {"M": "C|", "L": "1/8", "K": "G"}
    assert body == "GABc dBGB|c2ec BGGB|cBAG FGAB|c2A2 A4:|\n|:gfgd edBd|gfgd e2d2|gfgd edBd|c2A2 A4:|\n"


def test_multi_voice_tunes_are_refused() -> None:
    assert clean_tune("X:1\nM:4/4\nL:1/8\nK:C\nV:1\nCDEF|\nV:2\nEFGA|\n") is None


def test_control_codes_of_a_two_part_tune() -> None:
    header, body = clean_tune(RAW)
    controls = compute_controls(body)
    assert controls is not None
    a = "GABcdBGB|c2ecBGGB|cBAGFGAB|c2A2A4"
    b = "gfgdedBd|gfgde2d2|gfgdedBd|c2A2A4"
    expected_similarity = round(10 * (1 - levenshtein(a, b) / len(a)))
    assert controls.lines() == ["S:2", "B:4", f"E:{expected_similarity}", "B:4"]


def test_sections_and_bars() -> None:
    body = "AB|cd|ef||ga|bc:|[|de|fg|]\n|:ab::cd|ef:|"
    sections = split_sections(body)
    assert [count_bars(s) for s in sections] == [3, 2, 2, 1, 2]
    assert len(sections) == 5
    # Chords and inline fields are not barlines.
    assert [count_bars(s) for s in split_sections("[CEG]2 [K:D] A|B|]")] == [2]


def test_e_lines_follow_tunesformer_order() -> None:
    controls = compute_controls("ABCD|ABCD||ABCD|ABCE||abcd|efga|]")
    assert controls is not None
    assert controls.lines() == ["S:3", "B:2", "E:9", "B:2", "E:1", "E:1", "B:2"]  # 1 edit in 9


def test_limits() -> None:
    assert compute_controls("|".join(["A"] * 33) + "|]") is None  # a section of 33 bars
    assert compute_controls("||".join(["AB"] * 9)) is None  # nine sections


def test_levenshtein() -> None:
    assert levenshtein("kitten", "sitting") == 3
    assert levenshtein("", "abc") == 3
    assert similarity("abcd", "abcd") == 10
    assert similarity("abcd", "wxyz") == 0


@pytest.mark.slow
def test_corpus_tunes_are_clean_ascii_with_controls_first() -> None:
    tunes, dropped = load_tunes()
    assert len(tunes) > 4000
    sources = {t.source.split("/")[0] for t in tunes}
    assert sources == set(SOURCES)
    assert not sources & set(EXCLUDED)
    for tune in tunes[::50]:
        lines = tune.text.splitlines()
        assert lines[0].startswith("S:")
        k_index = next(i for i, line in enumerate(lines) if line.startswith("K:"))
        assert [line[:2] for line in lines[k_index - 2:k_index + 1]] == ["L:", "M:", "K:"]
        assert all(0 < ord(c) < 128 for c in tune.text)
        assert not any(line[:2] in ("T:", "C:", "X:", "Z:", "N:", "W:") for line in lines)
        assert tune.ids()[0] == 2 and tune.ids()[-1] == 3
