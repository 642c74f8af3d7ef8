"""Pictures of each pane (pytest-textual-snapshot). Update after a deliberate change with
``pytest tests/tui/test_snapshots.py --snapshot-update`` and check the report first.

Everything in the picture is deterministic: the tiny model's name and shape, a transcript put in
through the engine's outbox (so no random text and no timings), cursors that do not blink, and no
toasts.
"""

from __future__ import annotations

from typing import Any

from textual.widgets import Input, TextArea

from tests.tui.conftest import start, wait_until
from tui.protocol import ConversationInfo, Stats, TranscriptReplaced, TurnView

SIZE = (120, 36)

TRANSCRIPT = (
    TurnView(0, "What is a perfect fifth?",
             "A perfect fifth spans **7 semitones**, for example C to G.\n"
             "- C major triad: C E G\n- MIDI: 60 → 67", "stop string", 31, 0.0, True, 0),
    TurnView(1, "Show the MIDI note numbers in Python.",
             "<think>\nThe user wants code. Keep it short.\n</think>\n"
             "```python\nnotes = {\"C4\": 60, \"G4\": 67}\nprint(notes[\"G4\"] - notes[\"C4\"])\n```",
             "stop string", 42, 0.0, True, 68),
    TurnView(2, "And a fourth?", "Five semitones: C to F.", "cancelled", 9, 0.0, True, 131),
)


def seed_transcript(app: Any) -> None:
    app.worker.outbox.put(TranscriptReplaced(TRANSCRIPT))
    app.worker.outbox.put(ConversationInfo(TRANSCRIPT, 151, 67584, 3, 3 * 67584, 512 * 1024 * 1024))
    app.worker.outbox.put(Stats(False, 0.0, None, 9, 0, 67584, 151))


async def settle(pilot: Any, app: Any, transcript: bool = True) -> None:
    await start(pilot, app)
    if transcript:
        seed_transcript(app)
        await wait_until(pilot, lambda: len(app.chat_pane.views()) == 6)
    await pilot.pause(0.3)
    for widget in app.query(TextArea):
        widget.cursor_blink = False
    for widget in app.query(Input):
        widget.cursor_blink = False
    app.clear_notifications()
    await pilot.pause(0.2)


def test_chat_pane(snap_compare, make_app) -> None:
    app = make_app()

    async def run_before(pilot: Any) -> None:
        await settle(pilot, app)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_chat_pane_with_settings_and_editing(snap_compare, make_app) -> None:
    app = make_app()

    async def run_before(pilot: Any) -> None:
        await settle(pilot, app)
        await pilot.press("f5")
        app.chat_pane.start_edit(2)
        await pilot.pause(0.2)
        await settle(pilot, app, transcript=False)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_chat_pane_light_theme(snap_compare, make_app) -> None:
    app = make_app()

    async def run_before(pilot: Any) -> None:
        app.theme = "rwkv-light"
        await settle(pilot, app)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_music_pane(snap_compare, make_app, tiny_checkpoint, monkeypatch) -> None:
    from engine.music.ports import PortInfo, PortListing

    # The MIDI ports of the machine running the test must not show in the picture.
    listing = PortListing([PortInfo("JACK", "FLUID Synth (1234):midi_00")], ["ALSA: no sequencer"])
    monkeypatch.setattr("tui.panes.music.list_output_ports", lambda: listing)
    app = make_app(music_model=str(tiny_checkpoint))

    async def run_before(pilot: Any) -> None:
        await settle(pilot, app, transcript=False)
        await wait_until(pilot, lambda: app.music_pane.model is not None)
        await pilot.press("f3")
        await settle(pilot, app, transcript=False)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def seed_inspector(app: Any) -> None:
    """Fixed numbers for the inspector (the seeded transcript has no real state behind it)."""
    import torch

    from engine.state_stats import StateStats
    from tui.protocol import InspectorUpdate

    stats = StateStats(
        wkv_norms=torch.tensor([[0.8, 2.5], [4.0, 1.6]]), att_x_norms=torch.tensor([3.1, 1.2]),
        ffn_x_norms=torch.tensor([0.9, 2.4]), wkv_max_abs=0.75, nbytes=67584, dtype="float32", tokens_seen=151,
    )
    changes = tuple(0.02 + 0.015 * ((i * 7) % 11) / 10 for i in range(40))
    app.worker.outbox.put(InspectorUpdate(stats, changes, reset=True))


def test_state_pane(snap_compare, make_app) -> None:
    app = make_app()

    async def run_before(pilot: Any) -> None:
        await settle(pilot, app)
        seed_inspector(app)
        await pilot.press("f4")
        await settle(pilot, app, transcript=False)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_help_screen(snap_compare, make_app) -> None:
    app = make_app()

    async def run_before(pilot: Any) -> None:
        await settle(pilot, app, transcript=False)
        await pilot.press("f1")
        await pilot.pause(0.3)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)
