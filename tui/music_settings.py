"""The Music pane's settings: one validated value object, shared by the panel, config and engine.

Every field is checked with the engine's own rules (sampling limits, TunesFormer control codes,
ABC header fields, loudness range) the moment it is typed, so a bad value never reaches the
engine thread or the config file; the same checks read the config file, where a bad field costs
only that field. The engine-side objects (``MidiSettings``, ``AbcSettings``, the ABC prompt)
are built from here, so the pane and ``rwkv-tui music generate`` mean the same thing by each value.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal

from engine import EngineError, SamplingParams
from engine.music import abc as abc_notation
from engine.music import generate as music_generate
from engine.music.player import MAX_TEMPO, MAX_VELOCITY_SCALE, MIN_TEMPO, MIN_VELOCITY_SCALE
from engine.music.ports import PortChoice
from engine.music.render import DEFAULT_TARGET_LUFS, MAX_TARGET_LUFS, MIN_TARGET_LUFS
from tui.values import coerce_number, shown

MusicMode = Literal["midi", "abc"]
MODES: tuple[MusicMode, ...] = ("midi", "abc")
MODE_LABELS: dict[str, str] = {"midi": "MIDI tokens", "abc": "ABC notation"}

#: Token budget when the length field is left empty.
DEFAULT_MAX_TOKENS: dict[str, int] = {
    "midi": music_generate.MidiSettings.max_tokens, "abc": music_generate.AbcSettings.max_tokens,
}


@dataclass(frozen=True)
class MusicSettings:
    """What the settings panel edits; sent with every generation so the latest values apply."""

    mode: MusicMode = "midi"
    temperature: float = music_generate.MidiSettings.temperature
    top_p: float = music_generate.MidiSettings.top_p
    top_k: int = music_generate.MidiSettings.top_k
    #: Token budget; None = the mode's default (4096 MIDI, 1024 ABC).
    max_tokens: int | None = None
    seed: int | None = None
    # -- MIDI mode
    piano_only: bool = False
    #: After about this many tokens, ending becomes likely (the recipe's length control).
    length_target: int = music_generate.MidiSettings.length_target
    #: A .mid (or token .txt) to continue; empty = a new piece. Not saved in the config file.
    continue_from: str = ""
    # -- ABC mode
    controls: str = ""
    unit: str = ""
    meter: str = ""
    key: str = ""
    tune_start: str = ""
    # -- export
    lufs: float = DEFAULT_TARGET_LUFS

    @property
    def budget(self) -> int:
        return self.max_tokens if self.max_tokens is not None else DEFAULT_MAX_TOKENS[self.mode]

    def with_field(self, name: str, value: object) -> "MusicSettings":
        """A copy with one field set from typed text or a JSON value; ValueError says what is wrong."""
        if name not in FIELD_NAMES:
            raise ValueError(f"unknown music setting {shown(name)}")
        return replace(self, **{name: coerce_field(name, value)}).validate_field(name)

    def validate_field(self, name: str) -> "MusicSettings":
        """Check one field against the engine's rules (ValueError with the reason)."""
        try:
            if name in ("temperature", "top_p", "top_k", "max_tokens", "seed"):
                self.sampling_params()
            elif name == "length_target":
                if self.length_target < 1:
                    raise ValueError("must be ≥ 1")
            elif name == "controls":
                self.abc_controls()
            elif name in ("unit", "meter", "key"):
                abc_notation.AbcHeader(**{name: getattr(self, name) or None}).lines()
            elif name == "tune_start":
                abc_notation.build_prompt(None, None, self.tune_start_text)
            elif name == "lufs":
                if not MIN_TARGET_LUFS <= self.lufs <= MAX_TARGET_LUFS:
                    raise ValueError(f"must be between {MIN_TARGET_LUFS:g} and {MAX_TARGET_LUFS:g} LUFS")
            elif name == "mode":
                if self.mode not in MODES:
                    raise ValueError(f"must be one of {', '.join(MODES)}")
        except EngineError as exc:
            raise ValueError(_short(str(exc))) from None
        return self

    def validate(self) -> "MusicSettings":
        for name in FIELD_NAMES:
            self.validate_field(name)
        return self

    # ------------------------------------------------------------------ engine objects

    def sampling_params(self) -> SamplingParams:
        return SamplingParams(
            temperature=self.temperature, top_p=self.top_p, top_k=self.top_k, max_tokens=self.budget,
            seed=self.seed,
        ).validate()

    def midi_settings(self) -> music_generate.MidiSettings:
        return music_generate.MidiSettings(
            temperature=self.temperature, top_p=self.top_p, top_k=self.top_k, max_tokens=self.budget,
            seed=self.seed, piano_only=self.piano_only, length_target=self.length_target,
        ).validate()

    def abc_settings(self) -> music_generate.AbcSettings:
        self.sampling_params()
        return music_generate.AbcSettings(
            temperature=self.temperature, top_p=self.top_p, top_k=self.top_k, max_tokens=self.budget,
            seed=self.seed,
        )

    def abc_controls(self) -> abc_notation.AbcControls | None:
        return abc_notation.AbcControls.parse(self.controls) if self.controls.strip() else None

    @property
    def tune_start_text(self) -> str:
        """The tune start as typed on one line, with ``\\n`` standing for a line break."""
        return self.tune_start.replace("\\n", "\n")

    def abc_prompt(self) -> str:
        header = abc_notation.AbcHeader(unit=self.unit or None, meter=self.meter or None, key=self.key or None)
        return abc_notation.build_prompt(self.abc_controls(), header, self.tune_start_text)

    # ------------------------------------------------------------------ config file

    def to_dict(self) -> dict[str, Any]:
        """The fields worth keeping between sessions (not the file to continue)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in TRANSIENT_FIELDS}

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> tuple["MusicSettings", list[str]]:
        """Validated settings and one line per rejected field (the rest are kept)."""
        settings = cls()
        problems: list[str] = []
        for name, value in data.items():
            if name not in FIELD_NAMES or name in TRANSIENT_FIELDS:
                problems.append(f"{source}: unknown music setting {shown(name)}; {LEFT_AS_WRITTEN}")
                continue
            try:
                settings = settings.with_field(name, value)
            except ValueError as exc:
                problems.append(f"{source}: music.{name}: {exc}")
        return settings, problems


LEFT_AS_WRITTEN = "left in the file as written, not used"


@dataclass(frozen=True)
class MusicSection:
    """The music pane's section of the config file: settings, output port, tempo and volume.

    Keys this version does not know (a newer version's, or a typo) are reported and saved back
    as written, at the top of the section and inside ``settings``, so a settings change never
    deletes what the user wrote.
    """

    settings: MusicSettings = field(default_factory=MusicSettings)
    port: PortChoice | None = None
    tempo: float = 1.0
    volume: float = 1.0
    unused: dict[str, Any] = field(default_factory=dict)
    unused_settings: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, section: object, source: str = "config: music") -> tuple["MusicSection", list[str]]:
        """The section as the pane uses it, and one line per problem (each bad entry → its default)."""
        if section is None:
            return cls(), []
        if not isinstance(section, dict):
            return cls(), [f"{source}: must be an object, found {type(section).__name__}; using the defaults"]
        problems: list[str] = []
        settings, unused_settings = MusicSettings(), {}
        stored = section.get("settings", {})
        if isinstance(stored, dict):
            settings, settings_problems = MusicSettings.from_dict(stored, source)
            problems += settings_problems
            unused_settings = {k: v for k, v in stored.items() if k not in FIELD_NAMES or k in TRANSIENT_FIELDS}
        else:
            problems.append(f"{source}: 'settings' must be an object; using the defaults")
        port = None
        if section.get("port") is not None and section.get("port") != "":
            try:
                if not isinstance(section["port"], str):
                    raise ValueError(f"expected text like port:JACK:NAME, found {shown(section['port'])}")
                port = PortChoice.from_setting(section["port"])
            except (ValueError, EngineError) as exc:
                problems.append(f"{source}: port: {exc}")
        tempo = _ranged(section, "tempo", MIN_TEMPO, MAX_TEMPO, source, problems)
        volume = _ranged(section, "volume", MIN_VELOCITY_SCALE, MAX_VELOCITY_SCALE, source, problems)
        unused = {k: v for k, v in section.items() if k not in SECTION_KEYS}
        problems += [f"{source}: unknown key {shown(k)}; {LEFT_AS_WRITTEN}" for k in unused]
        return cls(settings, port, tempo, volume, unused, unused_settings), problems

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.unused,
            "settings": {**self.unused_settings, **self.settings.to_dict()},
            "port": self.port.to_setting() if self.port is not None else None,
            "tempo": self.tempo,
            "volume": self.volume,
        }


SECTION_KEYS = frozenset({"settings", "port", "tempo", "volume"})


def _ranged(section: dict[str, Any], name: str, low: float, high: float, source: str, problems: list[str]) -> float:
    """A factor of the section (1.0 when absent or not a number; the nearest limit when outside)."""
    if name not in section:
        return 1.0
    try:
        value = coerce_number(section[name], whole=False)
    except ValueError as exc:
        problems.append(f"{source}: music.{name}: {exc}; using 1")
        return 1.0
    if not low <= value <= high:
        clamped = min(high, max(low, value))
        problems.append(f"{source}: music.{name}: must be between {low:g} and {high:g}, found {shown(section[name])}; "
                        f"using {clamped:g}")
        return clamped
    return value


FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in fields(MusicSettings))
TRANSIENT_FIELDS = frozenset({"continue_from"})
_INT_FIELDS = {"top_k", "max_tokens", "seed", "length_target"}
_FLOAT_FIELDS = {"temperature", "top_p", "lufs"}
_OPTIONAL_FIELDS = {"max_tokens", "seed"}
_TEXT_FIELDS = {"controls", "unit", "meter", "key", "tune_start", "continue_from"}


def coerce_field(name: str, value: object) -> object:
    """Typed text or a JSON value → the field's type (ValueError with the reason)."""
    if name in _OPTIONAL_FIELDS and (value is None or (isinstance(value, str) and value.strip().lower() in ("", "none", "random", "default"))):
        return None
    if name == "mode":
        if value not in MODES:
            raise ValueError(f"must be one of {', '.join(MODES)}, found {shown(value)}")
        return value
    if name == "piano_only":
        if not isinstance(value, bool):
            raise ValueError(f"expected true or false, found {shown(value)}")
        return value
    if name in _TEXT_FIELDS:
        if not isinstance(value, str):
            raise ValueError(f"expected text, found {type(value).__name__}")
        return value.strip() if name != "tune_start" else value
    return coerce_number(value, whole=name in _INT_FIELDS)


def _short(message: str) -> str:
    """Engine messages without the prefixes that the field label already says."""
    for prefix in ("invalid sampling setting: ", "control codes: "):
        message = message.removeprefix(prefix)
    return message
