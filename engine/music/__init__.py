"""Music: the MIDI-LLM token language, ABC notation, generation, live playback and rendering.

Modules, one job each:

* ``midi_vocab`` — the 20,096-token MIDI-LLM vocabulary by rule (ids, instrument bins).
* ``midi_codec`` — MIDI files / note events ⇄ token text and ids, with the published
  tokenizer's rules (training data and model output both go through it).
* ``abc`` — ABC prompts with TunesFormer control codes; ABC → MIDI through abc2midi.
* ``generate`` — ABC and MIDI generation on an engine model (MIDI with ChatRWKV's music recipe),
  yielding note events while the model writes.
* ``ports`` / ``player`` — MIDI outputs through python-rtmidi and a deadline-scheduled player.
* ``render`` — MIDI → loudness-normalised .wav with FluidSynth.
* ``files`` — atomic saves; ``errors`` — one-line error types.
"""
