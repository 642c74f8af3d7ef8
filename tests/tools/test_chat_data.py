"""The chat corpus: answers are right, held-out questions are really held out."""

from __future__ import annotations

import pytest

from tools.train import theory as th
from tools.train.chat_data import APP_KEYS, encode_dialogue, intents, split, training_dialogues
from tools.train.theory import Interval, Note


@pytest.fixture(scope="module")
def chat_split():
    return split()


def _answer(intent_name: str, item: str) -> str:
    intent = next(i for i in intents() if i.name == intent_name)
    return intent.items[item][1]


@pytest.mark.parametrize(("intent", "item", "answer"), [
    ("midi_of_note", "C4", "C4 is MIDI note 60."),
    ("midi_of_note", "A2", "A2 is MIDI note 45."),
    ("midi_of_note", "Bb3", "Bb3 is MIDI note 58."),
    ("note_of_midi", "61", "MIDI note 61 is C#4 (also written Db4)."),
    ("note_of_midi", "96", "MIDI note 96 is C7."),
    ("frequency", "A3", "A3 is 220 Hz."),
    ("interval_between", "C-F#", "From C up to F# is an augmented fourth (6 semitones)."),
    ("interval_between", "E-C", "From E up to C is a minor sixth (8 semitones)."),
    ("interval_between", "Bb-D", "From Bb up to D is a major third (4 semitones)."),
    ("note_above", "E+M3", "A major third above E is G#."),
    ("note_above", "C#+M3", "A major third above C# is E#."),
    ("note_above", "F#+m3", "A minor third above F# is A."),
    ("scale_notes", "F# major", "F# major: F# G# A# B C# D# E#."),
    ("scale_notes", "A harmonic minor", "A harmonic minor: A B C D E F G#."),
    ("scale_notes", "D dorian", "D dorian: D E F G A B C."),
    ("chord_notes", "G7", "G7 (G dominant seventh chord): G B D F."),
    ("chord_notes", "Bdim", "Bdim (B diminished triad): B D F."),
    ("key_signature", "E major", "E major has 4 sharps: F# C# G# D#."),
    ("key_signature", "C minor", "C minor has 3 flats: Bb Eb Ab."),
    ("key_signature", "A minor", "A minor has no sharps or flats."),
    ("key_from_signature", "major:-3", "Eb major has 3 flats."),
    ("relative_key", "F major", "The relative minor of F major is D minor."),
    ("relative_key", "C# minor", "The relative major of C# minor is E major."),
    ("beat_length", "120", "At 120 BPM one beat lasts 500 ms."),
    ("beat_length", "140", "At 140 BPM one beat lasts 428.6 ms."),
    ("bar_length", "80@3/4", "At 80 BPM a bar of 3/4 lasts 2250 ms."),
    ("beats_in_time", "120x30", "At 120 BPM, 30 seconds hold 60 beats."),
    ("tempo_from_beat", "500", "A beat every 500 ms is 120 BPM."),
    ("note_values", "sixteenth in dotted quarter", "A dotted quarter note lasts as long as 6 sixteenth notes."),
])
def test_answers_are_correct(intent: str, item: str, answer: str) -> None:
    assert _answer(intent, item) == answer


def test_theory_never_spells_with_double_accidentals() -> None:
    for intent in intents():
        for _, answer in intent.items.values():
            assert "##" not in answer and "bb " not in answer.replace("Bb", "")
    assert th.spell(Note.parse("G#"), th.SCALES["major"]) is None  # would need F##


def test_interval_round_trip() -> None:
    for root in th.COMMON_NOTES:
        for short in ("m2", "M2", "m3", "M3", "P4", "A4", "d5", "P5", "m6", "M6", "m7", "M7"):
            interval = Interval.parse(short)
            assert Interval.between(root, th.transpose(root, interval)) == interval


def test_heldout_questions_are_never_trained_on(chat_split) -> None:
    trained = {(chat_split.intents[i].name, item, t) for i, item, t in chat_split.train_pairs}
    gate = {(q.intent, q.item, q.template) for q in chat_split.heldout}
    validation = {(q.intent, q.item, q.template) for q in chat_split.validation}
    assert len(gate) == 200 and len(validation) == 200
    assert not gate & trained and not validation & trained and not gate & validation
    trained_texts = {q.text for q in training_dialogues(chat_split, copies=2)}
    assert not {q.text for q in chat_split.heldout} & trained_texts


def test_every_heldout_fact_and_wording_is_taught_in_other_combinations(chat_split) -> None:
    trained = {(chat_split.intents[i].name, item, t) for i, item, t in chat_split.train_pairs}
    items = {(name, item) for name, item, _ in trained}
    templates = {(name, t) for name, _, t in trained}
    for q in chat_split.heldout:
        assert (q.intent, q.item) in items
        assert (q.intent, q.template) in templates


def test_heldout_covers_many_kinds_of_question(chat_split) -> None:
    kinds = {q.intent for q in chat_split.heldout}
    assert len(kinds) >= 12


def test_split_is_deterministic() -> None:
    assert [q.text for q in split().heldout] == [q.text for q in split().heldout]


def test_dialogue_format_and_loss_mask(chat_split) -> None:
    question = chat_split.heldout[0]
    ids, mask = encode_dialogue(question)
    text = bytes(ids).decode()
    assert text == f"User: {question.text}\n\nAssistant: {question.answer}\n\n"
    learned = bytes(t for t, m in zip(ids, mask) if m).decode()
    assert learned == f" {question.answer}\n\n"
    assert "\n\n" not in question.text and "\n\n" not in question.answer


def test_app_keys_match_the_tui_action_registry() -> None:
    """The model must not teach keys the app does not have."""
    actions = pytest.importorskip("tui.actions", reason="the TUI's action registry is not in this tree")
    for action_id, shown, answer, _ in APP_KEYS:
        keys = actions.spec(action_id).keys
        assert actions.format_keys(keys).split(" / ")[0] == shown, action_id
        assert shown in answer
