"""Errors of the music features, each a one-line message a user can act on."""

from __future__ import annotations

from engine.errors import EngineError


class MusicError(EngineError):
    """Base class for music problems (files, tools, ports, rendering)."""


class MidiFileError(MusicError):
    """A .mid file is missing, unreadable or not a Standard MIDI File."""


class AbcError(MusicError):
    """ABC text that abc2midi cannot turn into MIDI, or abc2midi is not installed."""


class MidiPortError(MusicError):
    """A MIDI output port is unavailable (no such port, no ALSA/JACK, port vanished)."""


class RenderError(MusicError):
    """Audio rendering failed (FluidSynth or a sound font missing, or the render is silent)."""
