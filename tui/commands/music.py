"""``rwkv-tui music``: generate ABC or MIDI music, play it live, save .mid/.abc/.txt/.wav.

Actions: ``generate`` (a piece, optionally played live and rendered), ``ports`` (MIDI outputs),
``play`` (a .mid or token file to a port), ``render`` (.mid → .wav), ``encode`` (.mid → tokens)
and ``decode`` (tokens → .mid). Text streams to stdout as it is written; status goes to stderr,
so ``rwkv-tui music generate > piece.txt`` keeps only the music.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from pathlib import Path

NAME = "music"
HELP = "generate, play and export music with RWKV ABC / MIDI models"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from tui.cli import add_model_arguments

    sub = parser.add_subparsers(dest="music_command", metavar="ACTION", required=True)

    gen = sub.add_parser("generate", help="generate a piece (ABC or MIDI tokens)",
                         description="Generate a piece; without --out it is saved as rwkv-<mode>-<time>.*")
    add_model_arguments(gen)
    gen.add_argument("--mode", choices=("midi", "abc"), default="midi", help="token language (default: midi)")
    gen.add_argument("--out", metavar="BASE", help="save BASE.mid and BASE.txt (MIDI) or BASE.abc and BASE.mid (ABC)")
    gen.add_argument("--mid", metavar="FILE", help="save the MIDI file here")
    gen.add_argument("--txt", metavar="FILE", help="save the MIDI token text here")
    gen.add_argument("--abc", metavar="FILE", help="save the ABC tune here")
    gen.add_argument("--wav", metavar="FILE", help="also render a .wav with FluidSynth")
    gen.add_argument("--quiet", action="store_true", help="do not stream the tokens / ABC text to stdout")
    sampling = gen.add_argument_group("sampling (defaults: ChatRWKV's music demo)")
    sampling.add_argument("--temperature", type=float, default=1.0)
    sampling.add_argument("--top-p", type=float, default=0.8)
    sampling.add_argument("--top-k", type=int, default=8, help="0 disables")
    sampling.add_argument("--max-tokens", type=int, help="token budget (default: 4096 MIDI, 1024 ABC)")
    sampling.add_argument("--seed", type=int, help="fix the random seed to repeat a piece exactly")
    midi = gen.add_argument_group("MIDI mode")
    midi.add_argument("--continue", dest="continue_from", metavar="FILE",
                      help="continue a .mid file (or a .txt of MIDI tokens)")
    midi.add_argument("--piano-only", action="store_true", help="only piano notes")
    midi.add_argument("--length-target", type=int, default=2000,
                      help="tokens after which ending becomes likely (default 2000)")
    midi.add_argument("--repetition-penalty", type=float, default=0.5, help="(default 0.5)")
    abc = gen.add_argument_group("ABC mode")
    abc.add_argument("--controls", default="", help='control codes, e.g. "S:2 B:8 E:6 B:8"')
    abc.add_argument("--unit", help="L: default note length, e.g. 1/8")
    abc.add_argument("--meter", help="M: meter, e.g. 6/8")
    abc.add_argument("--key", help="K: key, e.g. D or Ador")
    abc.add_argument("--tune-start", default="", help="the first notes of the tune")
    abc.add_argument("--no-chords", action="store_true", help="no accompaniment for chord symbols in the MIDI")
    _add_play_arguments(gen)
    _add_render_arguments(gen)

    ports = sub.add_parser("ports", help="list MIDI output ports (ALSA and JACK)")
    ports.add_argument("--json", action="store_true", help="machine-readable output")

    render = sub.add_parser("render", help="render a .mid file to .wav with FluidSynth")
    render.add_argument("midi", help="input .mid")
    render.add_argument("wav", help="output .wav")
    _add_render_arguments(render)

    play = sub.add_parser("play", help="play a .mid file (or MIDI token .txt) to a MIDI port")
    play.add_argument("file", help=".mid or .txt of MIDI tokens")
    _add_play_arguments(play, flag=False)

    encode = sub.add_parser("encode", help="encode a .mid file as MIDI-LLM tokens")
    encode.add_argument("midi", help="input .mid")
    encode.add_argument("--out", metavar="FILE", help="write the tokens here (default: stdout)")
    encode.add_argument("--ids", action="store_true", help="write token ids instead of text")
    encode.add_argument("--reference-filter", action="store_true",
                        help="drop pieces of 30 s or less, like the published data pipeline")

    decode = sub.add_parser("decode", help="decode MIDI-LLM token text to a .mid file")
    decode.add_argument("tokens", help="token text file ('-' reads stdin)")
    decode.add_argument("midi", help="output .mid")


def _add_play_arguments(parser: argparse.ArgumentParser, flag: bool = True) -> None:
    group = parser.add_argument_group("live playback")
    if flag:
        group.add_argument("--play", action="store_true", help="play live while generating")
    group.add_argument("--port", help="output port name (substring match; default: the first port found)")
    group.add_argument("--api", choices=("JACK", "ALSA"), help="MIDI API of --port (default: any)")
    group.add_argument("--virtual", metavar="NAME", help="create a virtual output port instead")
    group.add_argument("--tempo", type=float, default=1.0, help="playback speed factor (default 1.0)")
    group.add_argument("--volume", type=float, default=1.0, help="velocity factor 0–2 (default 1.0)")


def _add_render_arguments(parser: argparse.ArgumentParser) -> None:
    from engine.music.render import DEFAULT_PEAK_DBFS, DEFAULT_TARGET_LUFS

    group = parser.add_argument_group("audio rendering")
    group.add_argument("--lufs", type=float, default=DEFAULT_TARGET_LUFS,
                       help=f"loudness target (default {DEFAULT_TARGET_LUFS:g} LUFS)")
    group.add_argument("--peak", type=float, default=DEFAULT_PEAK_DBFS,
                       help=f"sample-peak ceiling (default {DEFAULT_PEAK_DBFS:g} dBFS)")
    group.add_argument("--soundfont", help="a .sf2 sound font (default: the system's General MIDI font)")


def run(args: argparse.Namespace) -> int:
    _check_numbers(args)
    action = {
        "generate": _generate, "ports": _ports, "render": _render, "play": _play_file,
        "encode": _encode, "decode": _decode,
    }[args.music_command]
    return action(args)


def _check_numbers(args: argparse.Namespace) -> None:
    """Refuse a nonsense number before any work (a model load, a port, a file written), with
    the valid range, by the engine's own checks: the same rules as the app's settings."""
    from engine.music.player import check_tempo, check_volume
    from engine.music.render import check_targets

    if getattr(args, "tempo", None) is not None:
        check_tempo(args.tempo)
    if getattr(args, "volume", None) is not None:
        check_volume(args.volume)
    if getattr(args, "lufs", None) is not None:
        check_targets(args.lufs, args.peak)
    if args.music_command == "generate":
        _midi_settings(args) if args.mode == "midi" else _abc_settings(args)


def _midi_settings(args: argparse.Namespace):  # noqa: ANN202 - engine.music.generate.MidiSettings
    from engine.music import generate as gen

    return gen.MidiSettings(
        temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
        max_tokens=args.max_tokens if args.max_tokens is not None else gen.MidiSettings.max_tokens, seed=args.seed,
        piano_only=args.piano_only, length_target=args.length_target,
        repetition_penalty=args.repetition_penalty,
    ).validate()


def _abc_settings(args: argparse.Namespace):  # noqa: ANN202 - engine.music.generate.AbcSettings
    from engine.music import generate as gen

    return gen.AbcSettings(
        temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
        max_tokens=args.max_tokens if args.max_tokens is not None else gen.AbcSettings.max_tokens, seed=args.seed,
    ).validate()


def _status(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- ports & playback


def _ports(args: argparse.Namespace) -> int:
    from engine.music.ports import list_output_ports

    listing = list_output_ports()
    if args.json:
        import json

        print(json.dumps({"ports": [{"api": p.api, "name": p.name} for p in listing.ports],
                          "problems": listing.problems}, indent=2))
        return 0
    for port in listing.ports:
        print(f"{port.api}\t{port.name}")
    for problem in listing.problems:
        _status(f"note: {problem}")
    if not listing.ports:
        _status("no MIDI output ports; start a synthesizer (e.g. FluidSynth with JACK) or use --virtual")
    return 0


def _open_player(args: argparse.Namespace):  # noqa: ANN202 - engine.music.player.Player
    from engine.music.errors import MidiPortError
    from engine.music.player import Player
    from engine.music.ports import PortChoice, list_output_ports, open_sink

    if args.virtual:
        choice = PortChoice(args.api or "JACK", args.virtual, virtual=True)
    else:
        listing = list_output_ports()
        candidates = [p for p in listing.ports if args.api is None or p.api == args.api]
        if args.port:
            wanted = args.port.lower()
            candidates = [p for p in candidates if wanted in p.name.lower()]
        if not candidates:
            why = "; ".join(listing.problems)
            target = f"matching {args.port!r}" if args.port else "at all"
            raise MidiPortError(f"no MIDI output port {target}" + (f" ({why})" if why else ""))
        choice = PortChoice(candidates[0].api, candidates[0].name)
    sink = open_sink(choice)
    _status(f"playing to {sink.description}")
    player = Player(sink, on_error=lambda message: _status(f"playback stopped: {message}"))
    player.tempo = args.tempo
    player.velocity_scale = args.volume
    return player


def _wait_for_end(player) -> None:  # noqa: ANN001
    player.wait()


def _play_file(args: argparse.Namespace) -> int:
    from engine.music import midi_codec as codec

    path = Path(args.file)
    player = _open_player(args)
    try:
        if path.suffix.lower() == ".txt":
            result = codec.decode_tokens(_read_text(path))
            _status(result.summary())
            player.load(_events_to_messages(result.events), result.end_ms)
        else:
            player.load_midi(codec.load_midi_file(path))
        player.play()
        with _interrupts(player.stop):
            _wait_for_end(player)
    finally:
        player.close()
    return 0


def _events_to_messages(events):  # noqa: ANN001, ANN202
    from engine.music.player import note_event_messages

    return note_event_messages(events)


class _interrupts:
    """Ctrl-C calls ``action`` (cancel / stop) instead of raising, for the duration."""

    def __init__(self, action) -> None:  # noqa: ANN001
        self.action = action
        self.hit = False

    def __enter__(self) -> "_interrupts":
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, *_: object) -> None:
        self.hit = True
        self.action()

    def __exit__(self, *_exc: object) -> None:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, self._previous)


# --------------------------------------------------------------------------- generate


def _default_base(mode: str) -> str:
    return time.strftime(f"rwkv-{mode}-%Y%m%d-%H%M%S")


def _load_music_model(args: argparse.Namespace):  # noqa: ANN202
    from engine import load_model
    from engine.catalog import resolve_model_path
    from engine.demo_models import demo_model_path

    path = resolve_model_path(args.model) if args.model else demo_model_path(args.mode)
    return load_model(path, device=args.device, dtype=args.dtype)


def _generate(args: argparse.Namespace) -> int:
    from engine.music.errors import MusicError

    if args.mode == "midi" and (args.controls or args.unit or args.meter or args.key or args.tune_start):
        raise MusicError("--controls, --unit, --meter, --key and --tune-start are ABC-mode options (add --mode abc)")
    if args.mode == "abc" and (args.continue_from or args.piano_only):
        raise MusicError("--continue and --piano-only are MIDI-mode options")
    model = _load_music_model(args)
    return _generate_midi(args, model) if args.mode == "midi" else _generate_abc(args, model)


def _generate_midi(args: argparse.Namespace, model) -> int:  # noqa: ANN001
    from engine.music import generate as gen
    from engine.music.files import save_midi, save_text

    settings = _midi_settings(args)
    prompt: list[int] = []
    if args.continue_from:
        source = Path(args.continue_from)
        if source.suffix.lower() == ".txt":
            prompt = gen.midi_prompt_from_text(_read_text(source), settings.prompt_limit)
        else:
            prompt = gen.midi_prompt_from_file(str(source), settings.prompt_limit)
        _status(f"continuing {source} ({len(prompt)} prompt tokens)")
    base = args.out or (None if (args.mid or args.txt) else _default_base("midi"))
    mid_path = args.mid or (base + ".mid" if base else None)
    txt_path = args.txt or (base + ".txt" if base else None)
    player = _open_player(args) if args.play else None
    generation = gen.MidiGeneration(model, settings, prompt_tokens=prompt)
    try:
        if player is not None:
            player.begin()
            player.play()
        with _interrupts(generation.cancel) as interrupt:
            first = True
            for chunk in generation:
                if player is not None:
                    player.feed_events(chunk.events, chunk.time_ms)
                if not args.quiet and chunk.text:
                    sys.stdout.write(("" if first else " ") + chunk.text)
                    sys.stdout.flush()
                    first = False
        if not args.quiet:
            sys.stdout.write("\n")
        result = generation.result
        assert result is not None
        if player is not None:
            player.finish(result.end_ms)
            if not interrupt.hit:
                with _interrupts(player.stop):
                    _wait_for_end(player)
    finally:
        if player is not None:
            player.close()
    saved = []
    if txt_path:
        saved.append(save_text(txt_path, result.text))
    if mid_path:
        saved.append(save_midi(mid_path, result.to_midi()))
    stats = result.stats
    notes = sum(1 for e in result.events if e.is_on)
    _status(f"{len(result.tokens)} tokens ({stats.tokens_per_second:.1f} tok/s), {notes} notes, "
            f"{result.end_ms / 1000:.1f} s of music; stopped: {result.stop_reason.value}")
    if result.invalid_tokens:
        _status(f"skipped {result.invalid_tokens} unreadable token(s)")
    if args.wav:
        saved.append(_render_to(result.to_midi(), args).path)
    for path in saved:
        _status(f"saved {path}")
    return 130 if result.stop_reason.value == "cancelled" else 0


def _generate_abc(args: argparse.Namespace, model) -> int:  # noqa: ANN001
    from engine.music import abc
    from engine.music import generate as gen
    from engine.music.errors import AbcError
    from engine.music.files import save_midi, save_text

    controls = abc.AbcControls.parse(args.controls) if args.controls.strip() else None
    header = abc.AbcHeader(unit=args.unit, meter=args.meter, key=args.key)
    prompt = abc.build_prompt(controls, header, args.tune_start.replace("\\n", "\n"))
    settings = _abc_settings(args)
    base = args.out or (None if (args.abc or args.mid) else _default_base("abc"))
    abc_path = args.abc or (base + ".abc" if base else None)
    mid_path = args.mid or (base + ".mid" if base else None)
    generation = gen.AbcGeneration(model, prompt, settings)
    if not args.quiet:
        sys.stdout.write(prompt)
    with _interrupts(generation.cancel):
        for delta in generation:
            if not args.quiet:
                sys.stdout.write(delta)
                sys.stdout.flush()
    if not args.quiet:
        sys.stdout.write("\n")
    result = generation.result
    assert result is not None
    stats = result.stats
    _status(f"{len(result.tokens)} characters ({stats.tokens_per_second:.1f} tok/s); "
            f"{'complete tune' if result.complete else 'stopped: ' + result.stop_reason.value}")
    tune = abc.with_reference_number(result.text)
    saved = []
    if abc_path:
        saved.append(save_text(abc_path, tune))
    midi = None
    if mid_path or args.wav or args.play:
        try:
            converted = abc.abc_to_midi(tune, chords=not args.no_chords)
        except AbcError as exc:
            if args.mid or args.wav or args.play:
                for path in saved:
                    _status(f"saved {path}")
                raise
            _status(f"no .mid saved: {exc}")
        else:
            midi = converted.midi
            if converted.errors:
                _status(f"abc2midi: {len(converted.errors)} problem(s) worked around, first: {converted.errors[0]}")
    if midi is not None and mid_path:
        saved.append(save_midi(mid_path, midi))
    if midi is not None and args.wav:
        saved.append(_render_to(midi, args).path)
    for path in saved:
        _status(f"saved {path}")
    if midi is not None and args.play:
        player = _open_player(args)
        try:
            player.load_midi(midi)
            player.play()
            with _interrupts(player.stop):
                _wait_for_end(player)
        finally:
            player.close()
    return 130 if result.stop_reason.value == "cancelled" else 0


# --------------------------------------------------------------------------- files


def _render_to(midi, args: argparse.Namespace):  # noqa: ANN001, ANN202
    from engine.music.render import render_wav

    _status("rendering audio with FluidSynth …")
    result = render_wav(midi, args.wav, soundfont=args.soundfont, target_lufs=args.lufs, peak_dbfs=args.peak)
    _status(f"rendered {result.summary()}")
    return result


def _render(args: argparse.Namespace) -> int:
    from engine.music.render import render_wav

    result = render_wav(args.midi, args.wav, soundfont=args.soundfont, target_lufs=args.lufs, peak_dbfs=args.peak)
    _status(f"saved {result.summary()}")
    return 0


def _read_text(path: Path) -> str:
    from engine.music.errors import MusicError

    try:
        return sys.stdin.read() if str(path) == "-" else path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise MusicError(f"{path}: cannot read ({exc.strerror or exc})") from None


def _encode(args: argparse.Namespace) -> int:
    from engine.music import midi_codec as codec
    from engine.music.files import save_text

    options = codec.EncodeOptions.reference() if args.reference_filter else codec.EncodeOptions()
    result = codec.encode_midi(args.midi, options)
    lines = [" ".join(map(str, p.ids)) if args.ids else p.text for p in result.pieces]
    if args.out:
        save_text(args.out, "\n".join(lines))
    else:
        for line in lines:
            print(line)
    _status(f"{len(result.pieces)} piece(s); {result.dropped_events} event(s) of unsupported instruments dropped"
            + (f"; {result.discarded_pieces} short piece(s) discarded" if result.discarded_pieces else ""))
    return 0


def _decode(args: argparse.Namespace) -> int:
    from engine.music import midi_codec as codec
    from engine.music.files import save_midi

    result = codec.decode_tokens(_read_text(Path(args.tokens)))
    save_midi(args.midi, result.to_midi())
    _status(f"saved {args.midi}: {result.summary()}")
    return 0
