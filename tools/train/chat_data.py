"""The chat demo model's dialogue corpus: paraphrased questions with computed answers.

Every question belongs to an *intent* (e.g. "MIDI number of a note") with a list of *items*
(e.g. C#4) and a list of question *templates*. The answer depends only on the intent and the
item, never on the wording, so "exact answer" is a meaningful test: the model must recognise
the question however it is phrased and then produce a fact it can only know from training.

The gate's 200 held-out questions are (item, template) combinations that never occur in
training; each held-out item is still taught with other wordings, and each template with other
items. That measures generalisation across phrasing, not memorisation of strings.

App facts (keys, panes) are listed once in APP_KEYS so a test can compare them with the TUI's
action registry: the model must not teach keys the app does not have.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from tools.train import theory as th
from tools.train.theory import COMMON_NOTES, Interval, Note

TURN = "User: {q}\n\nAssistant: {a}\n\n"


@dataclass(frozen=True)
class Question:
    intent: str
    item: str  # a stable id of the item, for splitting and reports
    template: int
    text: str
    answer: str

    def dialogue(self) -> str:
        return TURN.format(q=self.text, a=self.answer)


@dataclass
class Intent:
    name: str
    templates: list[str]
    #: item id → (template fields, answer)
    items: dict[str, tuple[dict[str, str], str]]


#: The twelve keys a beginner meets first (one spelling per pitch class). Intervals, scales
#: and chords are taught from these roots; the set is kept small so that a one-million-parameter
#: model sees every fact often enough to learn it exactly on a CPU budget.
ROOTS: tuple[Note, ...] = tuple(Note.parse(n) for n in ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B"))
CORE_SCALES = ("major", "natural minor", "harmonic minor", "major pentatonic", "minor pentatonic", "dorian", "mixolydian")
CORE_CHORDS = ("", "m", "dim", "aug", "7", "maj7", "m7", "sus4")
MIDI_OCTAVES = range(2, 7)
MIDI_NUMBERS = range(36, 97)  # C2 … C7


def _article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


# --------------------------------------------------------------------------- music intents


def _midi_of_note() -> Intent:
    items = {}
    for note in COMMON_NOTES:
        for octave in MIDI_OCTAVES:
            number = th.midi_number(note, octave)
            if number in MIDI_NUMBERS:
                name = f"{note.name}{octave}"
                items[name] = ({"n": name}, f"{name} is MIDI note {number}.")
    return Intent("midi_of_note", [
        "What is the MIDI note number of {n}?",
        "MIDI number for {n}?",
        "Which MIDI note is {n}?",
        "What MIDI note number does {n} have?",
        "Convert {n} to a MIDI note number.",
        "{n} in MIDI?",
        "Give me the MIDI number of {n}.",
        "What number does MIDI use for {n}?",
        "I need the MIDI note for {n}.",
        "Tell me the MIDI note number for {n}.",
    ], items)


def _note_of_midi() -> Intent:
    items = {}
    for number in MIDI_NUMBERS:
        names = th.midi_note_names(number)
        shown = names[0] if len(names) == 1 else f"{names[0]} (also written {names[1]})"
        items[str(number)] = ({"k": str(number)}, f"MIDI note {number} is {shown}.")
    return Intent("note_of_midi", [
        "Which note is MIDI note {k}?",
        "What note is MIDI number {k}?",
        "MIDI note {k} is which pitch?",
        "Name the note with MIDI number {k}.",
        "What pitch has MIDI number {k}?",
        "Convert MIDI note {k} to a note name.",
        "MIDI {k} is which note?",
        "Which piano key is MIDI note {k}?",
    ], items)


def _frequency_of_a() -> Intent:
    items = {}
    for octave in range(0, 9):
        hz = th.frequency(th.midi_number(Note.parse("A"), octave))
        shown = f"{hz:g}"
        items[f"A{octave}"] = ({"n": f"A{octave}"}, f"A{octave} is {shown} Hz.")
    return Intent("frequency", [
        "What is the frequency of {n}?",
        "How many hertz is {n}?",
        "Frequency of {n} in Hz?",
        "At what frequency does {n} sound?",
        "{n} is how many Hz?",
        "Tell me the pitch frequency of {n}.",
    ], items)


_INTERVALS = ("m2", "M2", "m3", "M3", "P4", "A4", "d5", "P5", "m6", "M6", "m7", "M7", "P8")


def _interval_between() -> Intent:
    items = {}
    for low in ROOTS:
        for high in ROOTS:
            if low.letter == high.letter:
                continue
            interval = Interval.between(low, high)
            if interval is None or interval.short not in _INTERVALS + ("A2", "A5", "d7", "d4", "A6", "d3"):
                continue
            answer = f"From {low} up to {high} is {_article(interval.name)} ({interval.semitones} semitones)."
            items[f"{low}-{high}"] = ({"a": low.name, "b": high.name}, answer)
    return Intent("interval_between", [
        "What interval is {a} to {b}?",
        "What is the interval from {a} up to {b}?",
        "Name the interval from {a} up to {b}.",
        "{a} up to {b} is what interval?",
        "Which interval do you get going up from {a} to {b}?",
        "Interval from {a} to {b}?",
        "How is the interval from {a} to {b} called?",
    ], items)


def _semitones_in_interval() -> Intent:
    items = {}
    for short in _INTERVALS:
        interval = Interval.parse(short)
        name = interval.name
        items[short] = ({"i": name}, f"{_article(name).capitalize()} spans {interval.semitones} semitones.")
    return Intent("semitones", [
        "How many semitones are in a {i}?",
        "How many half steps is a {i}?",
        "A {i} has how many semitones?",
        "Semitones in a {i}?",
        "How big is a {i} in semitones?",
        "Count the semitones of a {i}.",
        "How many half steps make a {i}?",
    ], items)


def _note_above() -> Intent:
    items = {}
    for root in ROOTS:
        for short in _INTERVALS:
            interval = Interval.parse(short)
            result = th.transpose(root, interval)
            if abs(result.accidental) > 1:
                continue
            items[f"{root}+{short}"] = (
                {"r": root.name, "i": interval.name},
                f"{_article(interval.name).capitalize()} above {root} is {result}.",
            )
    return Intent("note_above", [
        "What note is a {i} above {r}?",
        "Which note is a {i} up from {r}?",
        "Name the note a {i} above {r}.",
        "What is a {i} above {r}?",
        "Go up a {i} from {r}. Which note is it?",
        "Find the note a {i} higher than {r}.",
        "Which note lies a {i} above {r}?",
    ], items)


def _scale_notes() -> Intent:
    items = {}
    for root in ROOTS:
        for scale in CORE_SCALES:
            intervals = th.SCALES[scale]
            notes = th.spell(root, intervals)
            if notes is None:
                continue
            listed = " ".join(n.name for n in notes)
            items[f"{root} {scale}"] = ({"r": root.name, "s": scale}, f"{root} {scale}: {listed}.")
    return Intent("scale_notes", [
        "What are the notes of the {r} {s} scale?",
        "Spell the {r} {s} scale.",
        "Which notes are in {r} {s}?",
        "List the notes of the {r} {s} scale.",
        "Notes in the {r} {s} scale?",
        "Give me the {r} {s} scale.",
        "How does the {r} {s} scale go?",
        "Can you spell {r} {s} for me?",
    ], items)


def _chord_notes() -> Intent:
    items = {}
    for root in ROOTS:
        for suffix in CORE_CHORDS:
            long_name, intervals = th.CHORDS[suffix]
            notes = th.spell(root, intervals)
            if notes is None:
                continue
            symbol = f"{root}{suffix}"
            listed = " ".join(n.name for n in notes)
            items[symbol] = (
                {"c": symbol, "r": root.name, "l": long_name},
                f"{symbol} ({root} {long_name}): {listed}.",
            )
    return Intent("chord_notes", [
        "What notes are in {c}?",
        "Spell the chord {c}.",
        "Which notes make up the {r} {l}?",
        "What are the notes of {c}?",
        "Notes of the chord {c}?",
        "How do I build {c}?",
        "Give me the notes of the {r} {l}.",
    ], items)


def _keys() -> list[tuple[str, int]]:
    return [(f"{k} major", n) for k, n in th.MAJOR_KEYS.items()] + [
        (f"{k} minor", n) for k, n in th.MINOR_KEYS.items()
    ]


def _describe_signature(count: int) -> str:
    if count == 0:
        return "no sharps or flats"
    kind = "sharp" if count > 0 else "flat"
    n = abs(count)
    return f"{n} {kind}{'s' if n > 1 else ''}: {' '.join(th.signature_accidentals(count))}"


def _key_signature() -> Intent:
    items = {key: ({"k": key}, f"{key} has {_describe_signature(n)}.") for key, n in _keys()}
    return Intent("key_signature", [
        "How many sharps or flats are in {k}?",
        "What is the key signature of {k}?",
        "Key signature for {k}?",
        "Which accidentals does {k} have?",
        "Tell me the key signature of {k}.",
        "What does the key signature of {k} look like?",
        "Sharps or flats in {k}?",
    ], items)


def _key_from_signature() -> Intent:
    items = {}
    for key, n in _keys():
        mode = key.split()[1]
        if n == 0:
            amount = "no sharps or flats"
        else:
            kind = "sharp" if n > 0 else "flat"
            amount = f"{abs(n)} {kind}{'s' if abs(n) > 1 else ''}"
        answer = f"{key} has {_describe_signature(n).split(':')[0]}."
        items[f"{mode}:{n}"] = ({"m": mode, "x": amount}, answer)
    return Intent("key_from_signature", [
        "Which {m} key has {x}?",
        "What {m} key has {x} in its signature?",
        "Name the {m} key with {x}.",
        "A {m} key with {x}: which one is it?",
        "Which {m} key signature shows {x}?",
        "{x}: which {m} key?",
    ], items)


def _relative_key() -> Intent:
    items = {}
    for key, _ in _keys():
        tonic, mode = key.split()
        if mode == "major":
            other, target = "minor", th.relative_minor(tonic)
        else:
            other, target = "major", th.relative_major(tonic)
        items[key] = ({"k": key, "o": other}, f"The relative {other} of {key} is {target} {other}.")
    return Intent("relative_key", [
        "What is the relative {o} of {k}?",
        "Relative {o} of {k}?",
        "Which {o} key is relative to {k}?",
        "Name the relative {o} key of {k}.",
        "What's the relative {o} key for {k}?",
        "{k} has which relative {o}?",
    ], items)


_TEMPOS = (40, 48, 50, 60, 64, 70, 72, 75, 80, 84, 90, 96, 100, 108, 110, 112, 120, 125, 128,
           130, 140, 144, 150, 160, 168, 180, 192, 200, 240)
#: Tempos whose beat is a whole number of milliseconds: the ones bar and beat-count sums use.
_ROUND_TEMPOS = tuple(t for t in _TEMPOS if 60000 % t == 0)


def _beat_length() -> Intent:
    items = {
        str(bpm): ({"b": str(bpm)}, f"At {bpm} BPM one beat lasts {th.format_ms(60000 / bpm)} ms.")
        for bpm in _TEMPOS
    }
    return Intent("beat_length", [
        "How long is one beat at {b} BPM?",
        "At {b} BPM, how many milliseconds is a beat?",
        "Beat length at {b} bpm?",
        "How many ms per beat at a tempo of {b} BPM?",
        "What is the duration of one beat at {b} BPM?",
        "Milliseconds per beat for {b} BPM?",
    ], items)


def _bar_length() -> Intent:
    items = {}
    for bpm in _ROUND_TEMPOS:
        for beats in (2, 3, 4):
            ms = th.format_ms(beats * 60000 / bpm)
            items[f"{bpm}@{beats}/4"] = (
                {"b": str(bpm), "m": f"{beats}/4"},
                f"At {bpm} BPM a bar of {beats}/4 lasts {ms} ms.",
            )
    return Intent("bar_length", [
        "How long is a bar of {m} at {b} BPM?",
        "At {b} BPM, how many ms does a {m} bar last?",
        "Length of one {m} measure at {b} bpm?",
        "What is the duration of a {m} bar at {b} BPM?",
        "One bar of {m} at {b} BPM takes how long?",
    ], items)


def _beats_in_time() -> Intent:
    items = {}
    for bpm in _ROUND_TEMPOS:
        for seconds in (10, 15, 30, 60):
            beats = bpm * seconds / 60
            if beats != int(beats):
                continue
            items[f"{bpm}x{seconds}"] = (
                {"b": str(bpm), "s": str(seconds)},
                f"At {bpm} BPM, {seconds} seconds hold {int(beats)} beats.",
            )
    return Intent("beats_in_time", [
        "How many beats are in {s} seconds at {b} BPM?",
        "At {b} BPM, how many beats fit in {s} seconds?",
        "Beats in {s} s at {b} bpm?",
        "Count the beats in {s} seconds at a tempo of {b} BPM.",
        "If the tempo is {b} BPM, how many beats pass in {s} seconds?",
    ], items)


def _tempo_from_beat() -> Intent:
    items = {}
    for bpm in _TEMPOS:
        ms = 60000 / bpm
        if ms == int(ms):
            items[str(int(ms))] = ({"t": str(int(ms))}, f"A beat every {int(ms)} ms is {bpm} BPM.")
    return Intent("tempo_from_beat", [
        "Which tempo has a beat every {t} ms?",
        "What BPM gives one beat every {t} milliseconds?",
        "A beat lasts {t} ms. What is the tempo?",
        "Beats of {t} ms are how many BPM?",
        "Convert a {t} ms beat to BPM.",
    ], items)


_VALUES = (("whole", 1), ("half", 2), ("quarter", 4), ("eighth", 8), ("sixteenth", 16), ("thirty-second", 32))


def _note_values() -> Intent:
    items = {}
    for big, big_div in _VALUES:
        for small, small_div in _VALUES:
            if small_div > big_div:
                n = small_div // big_div
                items[f"{small} in {big}"] = (
                    {"s": small, "g": big},
                    f"A {big} note lasts as long as {n} {small} notes.",
                )
        for small, small_div in _VALUES:
            if small_div > big_div and big_div <= 8:
                n = 3 * small_div // (2 * big_div)
                items[f"{small} in dotted {big}"] = (
                    {"s": small, "g": f"dotted {big}"},
                    f"A dotted {big} note lasts as long as {n} {small} notes.",
                )
    return Intent("note_values", [
        "How many {s} notes fit in a {g} note?",
        "How many {s} notes make a {g} note?",
        "A {g} note equals how many {s} notes?",
        "{s} notes in a {g} note?",
        "How many {s} notes last as long as one {g} note?",
    ], items)


# --------------------------------------------------------------------------- single facts

#: Facts with their own wordings: (item id, answer, wordings).
FACTS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("middle-c", "Middle C is C4, MIDI note 60.", (
        "What MIDI note is middle C?", "Which note is middle C?", "Middle C in MIDI?",
        "What is the MIDI number of middle C?", "Where is middle C in MIDI?")),
    ("velocity-range", "MIDI velocity goes from 0 to 127; a note-on with velocity 0 counts as a note-off.", (
        "What is the range of MIDI velocity?", "How high can MIDI velocity go?",
        "What values can a MIDI velocity have?", "MIDI velocity range?", "Which velocities does MIDI allow?")),
    ("note-range", "MIDI has 128 note numbers, from 0 to 127; a piano covers 21 (A0) to 108 (C8).", (
        "How many notes does MIDI have?", "What is the range of MIDI note numbers?",
        "Which note numbers exist in MIDI?", "MIDI note number range?", "How many MIDI note numbers are there?")),
    ("channels", "MIDI has 16 channels; General MIDI uses channel 10 for drums.", (
        "How many MIDI channels are there?", "Which MIDI channel is for drums?",
        "What channel do drums use in General MIDI?", "How many channels does MIDI have?",
        "MIDI channels and drums?")),
    ("octave", "An octave has 12 semitones; going up one octave doubles the frequency.", (
        "How many semitones are in an octave?", "What happens to the frequency an octave higher?",
        "How many half steps make an octave?", "What is an octave?", "Semitones per octave?")),
    ("concert-pitch", "Concert pitch is A4 = 440 Hz, MIDI note 69.", (
        "What is concert pitch?", "What is the standard tuning pitch?", "Which note is tuned to 440 Hz?",
        "What frequency is the tuning A?", "Standard tuning reference?")),
    ("bpm", "BPM means beats per minute: at 60 BPM one beat lasts exactly one second.", (
        "What does BPM mean?", "What is BPM?", "Explain BPM.", "What does beats per minute mean?",
        "BPM stands for what?")),
    ("circle", "The circle of fifths orders keys by fifths: each step up a fifth adds one sharp, each step down adds one flat.", (
        "What is the circle of fifths?", "Explain the circle of fifths.", "How does the circle of fifths work?",
        "What does the circle of fifths show?", "Circle of fifths?")),
    ("triad", "A triad is a chord of three notes stacked in thirds: a root, a third and a fifth.", (
        "What is a triad?", "Explain what a triad is.", "What makes a chord a triad?",
        "How is a triad built?", "Triad meaning?")),
    ("sharp-flat", "A sharp raises a note by one semitone and a flat lowers it by one semitone.", (
        "What do sharps and flats do?", "What is the difference between a sharp and a flat?",
        "What does a sharp do to a note?", "What does a flat do to a note?", "Sharp vs flat?")),
)

#: Key facts, checked against the TUI's action registry by a test: (action id, keys as shown, answer).
APP_KEYS: tuple[tuple[str, str, str, tuple[str, ...]], ...] = (
    ("app.help", "F1", "Press F1 to see every key binding.", (
        "How do I see all the keys?", "Which key shows the help?", "How do I open the help screen?",
        "Where can I find the key bindings?", "Show me the shortcuts.")),
    ("app.chat_pane", "F2", "Press F2 to switch to the chat pane.", (
        "How do I get to the chat pane?", "Which key opens the chat?", "How do I switch back to chat?",
        "Go to the chat pane?", "Key for the chat pane?")),
    ("app.music_pane", "F3", "Press F3 to switch to the music pane, where the music models write ABC tunes or MIDI.", (
        "How do I make music?", "Which key opens the music pane?", "Where is the music pane?",
        "How do I generate a tune?", "Key for the music pane?")),
    ("app.state_pane", "F4", "Press F4 to open the state inspector, which shows the model's RNN state.", (
        "How do I look at the state?", "Which key shows the state inspector?", "Where can I inspect the RNN state?",
        "How do I open the state pane?", "Key for the state view?")),
    ("app.command_palette", "Ctrl+P", "Press Ctrl+P to open the command palette.", (
        "How do I open the command palette?", "Is there a command palette?", "Which key opens the palette?",
        "How do I search for a command?", "Command palette key?")),
    ("app.load_model", "Ctrl+O", "Press Ctrl+O and enter the path of an RWKV-7 .pth file, or start the app with --model PATH.", (
        "How do I load a model?", "How do I use a different model?", "How can I open my own model file?",
        "How do I switch to an official RWKV model?", "Load a .pth file how?")),
    ("chat.stop", "Esc", "Press Esc to stop generating.", (
        "How do I stop the reply?", "How do I cancel generation?", "The answer is too long, how do I stop it?",
        "Which key stops generating?", "How can I interrupt the model?")),
    ("chat.regenerate", "Ctrl+R", "Press Ctrl+R to replace the last reply with a new one.", (
        "How do I regenerate the answer?", "Can I get a different reply?", "How do I redo the last answer?",
        "Which key regenerates?", "How do I retry the reply?")),
    ("chat.new", "Ctrl+N", "Press Ctrl+N to start a new conversation.", (
        "How do I start a new chat?", "How do I clear the conversation?", "Which key starts over?",
        "How can I begin a fresh conversation?", "New chat key?")),
    ("chat.export", "Ctrl+S", "Press Ctrl+S to export the conversation as Markdown.", (
        "How do I save the conversation?", "How do I export the chat?", "Can I save this chat as Markdown?",
        "Which key exports the conversation?", "How do I keep a copy of this chat?")),
    ("app.quit", "Ctrl+Q", "Press Ctrl+Q to quit.", (
        "How do I quit?", "How do I exit the app?", "Which key closes rwkv-tui?",
        "How can I leave the program?", "Quit key?")),
)

APP_FACTS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("who", "I am a tiny demo model built into rwkv-tui. I know some music theory and how to use this app; load an official RWKV-7 model for real conversations.", (
        "Who are you?", "What are you?", "What can you do?", "Are you a real language model?",
        "Tell me about yourself.")),
    ("formats", "rwkv-tui loads RWKV-7 (x070) checkpoints in .pth format, like the official RWKV-7 releases.", (
        "Which model files can I load?", "What kind of models does this app run?", "Which checkpoints are supported?",
        "Can I load any model?", "What model format do I need?")),
    ("state", "RWKV keeps everything it has read in a fixed-size state instead of a growing context, so each new token costs the same time and memory.", (
        "What is the state?", "How does RWKV remember the conversation?", "Why does RWKV not need a long context?",
        "What does the RNN state hold?", "Explain the RWKV state.")),
    ("state-files", "The state can be saved to a file and loaded later, so a conversation or a tune continues exactly where it stopped.", (
        "Can I save the state?", "What are state files for?", "How do I continue later where I left off?",
        "Can I load a saved state?", "What is a state file?")),
    ("gpu", "rwkv-tui runs on a CUDA GPU when one is available and on the CPU otherwise.", (
        "Do I need a GPU?", "Does this run on the CPU?", "Will it use my GPU?", "Can I run this without a graphics card?",
        "Which hardware does rwkv-tui use?")),
    ("rwkv", "RWKV is a recurrent neural network language model that trains in parallel like a transformer; RWKV-7 is its seventh version.", (
        "What is RWKV?", "What does RWKV mean?", "Explain RWKV-7.", "Is RWKV a transformer?", "What kind of model is RWKV?")),
    ("demo", "The built-in models are tiny demos trained on generated data, so they only know a little. Load an official RWKV-7 model for real answers.", (
        "Why are your answers so limited?", "Are the built-in models any good?", "Why is this model so small?",
        "What are the demo models?", "Why don't you know more?")),
    ("hello", "Hello! Ask me about intervals, scales, chords, keys, MIDI notes or tempo, or about using rwkv-tui.", (
        "Hi", "Hello", "Hey there", "Good morning", "Hi, how are you?")),
    ("off-topic", "I am a tiny demo model and only know some music theory and how to use this app. Load an official RWKV-7 model for other questions.", (
        "What is the weather today?", "Who won the football match?", "Write me a poem about cats.",
        "What is the capital of France?", "Can you help me with my taxes?", "Tell me a joke.",
        "How do I cook pasta?", "What is 17 times 23?")),
)


def _fact_intent(name: str, facts: Iterable[tuple[str, str, tuple[str, ...]]]) -> list[Intent]:
    """Each fact is an intent of one item whose templates are its own wordings."""
    return [Intent(f"{name}:{item}", list(wordings), {item: ({}, answer)}) for item, answer, wordings in facts]


def intents() -> list[Intent]:
    builders: list[Callable[[], Intent]] = [
        _midi_of_note, _note_of_midi, _frequency_of_a, _interval_between, _semitones_in_interval,
        _note_above, _scale_notes, _chord_notes, _key_signature, _key_from_signature, _relative_key,
        _beat_length, _bar_length, _beats_in_time, _tempo_from_beat, _note_values,
    ]
    result = [build() for build in builders]
    result += _fact_intent("fact", FACTS)
    result += _fact_intent("app", [(action, answer, wordings) for action, _, answer, wordings in APP_KEYS])
    result += _fact_intent("app", APP_FACTS)
    return result


# --------------------------------------------------------------------------- surface variation

_PREFIXES = ("", "", "", "", "Quick question: ", "Hey, ", "Please tell me: ", "I wonder: ")


def _surface(template: str, fields: dict[str, str], rng: random.Random) -> str:
    """Small harmless variations (a lead-in, a missing question mark), so the model keys on
    content rather than exact strings. Note names are never re-cased: "Bb" and "bb" differ."""
    prefix = rng.choice(_PREFIXES)
    first_word = template.split(" ")[0]
    lower_ok = (
        prefix and not template.startswith("{") and first_word not in ("I", "A", "MIDI", "BPM")
        and not first_word[1:2].isupper()
    )
    text = template.format(**fields)
    text = text[0].upper() + text[1:]
    if lower_ok:
        text = text[0].lower() + text[1:]
    text = prefix + text
    if text.endswith("?") and rng.random() < 0.15:
        text = text[:-1]
    return text


def _question(intent: Intent, item: str, template: int, rng: random.Random) -> Question:
    fields, answer = intent.items[item]
    return Question(intent.name, item, template, _surface(intent.templates[template], fields, rng), answer)


# --------------------------------------------------------------------------- split


@dataclass
class ChatSplit:
    train_pairs: list[tuple[int, str, int]]  # (intent index, item, template)
    #: The gate's questions: never trained on, never used to pick a checkpoint.
    heldout: list[Question]
    #: Validation questions (also never trained on): the trainer keeps the checkpoint with the
    #: lowest loss on these, so the gate stays an independent measurement.
    validation: list[Question]
    intents: list[Intent]


def split(n_heldout: int = 200, n_validation: int = 200, seed: int = 0) -> ChatSplit:
    """Choose held-out (item, template) pairs; everything else is training material.

    Only intents with several items and templates contribute held-out pairs (a single fact
    asked in one unseen way would mostly test that wording). Each held-out item keeps at
    least two other wordings in training.
    """
    rng = random.Random(seed)
    n_total = n_heldout + n_validation
    all_intents = intents()
    eligible = [i for i, it in enumerate(all_intents) if len(it.items) >= 5 and len(it.templates) >= 5]
    pairs_by_intent = {
        i: [(i, item, t) for item in all_intents[i].items for t in range(len(all_intents[i].templates))]
        for i in eligible
    }
    total = sum(len(p) for p in pairs_by_intent.values())
    heldout_pairs: set[tuple[int, str, int]] = set()
    # Proportional to the square root of each intent's size, so small intents still count.
    weights = {i: len(p) ** 0.5 for i, p in pairs_by_intent.items()}
    weight_sum = sum(weights.values())
    quota = {i: max(4, round(n_total * w / weight_sum)) for i, w in weights.items()}
    while sum(quota.values()) > n_total:
        biggest = max(quota, key=lambda i: quota[i])
        quota[biggest] -= 1
    while sum(quota.values()) < n_total:
        biggest = max(quota, key=lambda i: weights[i] / quota[i])
        quota[biggest] += 1
    for i, pairs in pairs_by_intent.items():
        intent = all_intents[i]
        candidates = pairs[:]
        rng.shuffle(candidates)
        taken_per_item: dict[str, int] = {}
        chosen = 0
        for pair in candidates:
            if chosen == quota[i]:
                break
            _, item, _ = pair
            if len(intent.templates) - taken_per_item.get(item, 0) - 1 < 2:
                continue
            heldout_pairs.add(pair)
            taken_per_item[item] = taken_per_item.get(item, 0) + 1
            chosen += 1
    assert total > n_total
    train_pairs = [
        (i, item, t)
        for i, intent in enumerate(all_intents)
        for item in intent.items
        for t in range(len(intent.templates))
        if (i, item, t) not in heldout_pairs
    ]
    q_rng = random.Random(seed + 1)
    questions = [_question(all_intents[i], item, t, q_rng) for (i, item, t) in sorted(heldout_pairs, key=str)]
    # Alternate within each intent so gate and validation cover the same mix.
    heldout = questions[0::2]
    validation = questions[1::2]
    return ChatSplit(train_pairs, heldout[:n_heldout], validation[:n_validation], all_intents)


def training_dialogues(chat_split: ChatSplit, copies: int, seed: int = 0) -> list[Question]:
    """Every training pair ``copies`` times, each time with a fresh surface variation."""
    rng = random.Random(seed + 2)
    out = []
    for _ in range(copies):
        for i, item, t in chat_split.train_pairs:
            out.append(_question(chat_split.intents[i], item, t, rng))
    rng.shuffle(out)
    return out


# --------------------------------------------------------------------------- dataset


def encode_dialogue(question: Question) -> tuple[list[int], list[int]]:
    """Bytes of one exchange and its loss mask: only the reply (and the blank line that ends
    it) is learned; the question is context."""
    prompt = f"User: {question.text}\n\nAssistant:".encode("utf-8")
    reply = f" {question.answer}\n\n".encode("utf-8")
    return list(prompt + reply), [0] * len(prompt) + [1] * len(reply)


def build_dataset(out_dir: Path, copies: int = 4, seed: int = 0) -> dict[str, object]:
    """Write the chat corpus as byte tokens (tokenizer "bytes")."""
    from tools.train.dataset import TokenSplit, write_dataset

    out_dir = Path(out_dir)
    chat_split = split(seed=seed)
    train_docs = [encode_dialogue(q) for q in training_dialogues(chat_split, copies, seed)]
    val_docs = [encode_dialogue(q) for q in chat_split.validation]
    train = TokenSplit.from_documents([d for d, _ in train_docs], [m for _, m in train_docs])
    val = TokenSplit.from_documents([d for d, _ in val_docs], [m for _, m in val_docs])
    meta = {
        "kind": "chat", "tokenizer": "bytes", "vocab": 256, "copies": copies, "seed": seed,
        "train_pairs": len(chat_split.train_pairs), "intents": len(chat_split.intents),
        "heldout_questions": len(chat_split.heldout), "validation_questions": len(chat_split.validation),
        "source": "generated by tools/train/chat_data.py (no external data)",
    }
    write_dataset(out_dir, train, val, meta)
    return meta
