"""Music: the MIDI-LLM token language, ABC notation, live playback and rendering."""
