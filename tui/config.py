"""The user's settings file: theme, key map, sampling defaults, system prompt, think mode.

Lives at ``<XDG config>/rwkv-tui/config.json`` (``RWKV_TUI_CONFIG`` overrides the path). A damaged
file never stops the app: every field is checked on its own, a bad field falls back to its default,
and the problems come back as one-line messages for a notification. A file that cannot be read as
JSON at all (bad UTF-8, nesting no settings file has, oversized) gives the defaults and is moved to
``config.json.bak`` before the next save. What the user wrote that this version cannot use (sections
of a newer version or another pane, unknown key-map actions and settings) is saved back as written
and reported again at the next start, so a settings change never deletes it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import platformdirs

from engine import EngineError, SamplingParams, ThinkMode
from engine.atomic import atomic_write_text
from tui.actions import ACTION_IDS, keymap_clashes
from tui.values import coerce_number, shown

APP_NAME = "rwkv-tui"
DEFAULT_THEME = "rwkv-dark"
CONFIG_VERSION = 1

#: Sampling fields the settings panel edits and the file stores (ban_tokens is per model).
SAMPLING_FIELDS: tuple[str, ...] = (
    "temperature", "top_p", "top_k", "presence_penalty", "frequency_penalty", "penalty_decay",
    "max_tokens", "seed",
)
_INT_FIELDS = {"top_k", "max_tokens", "seed"}
#: A settings file is a few kilobytes; anything far larger is not one (and is not read into memory).
MAX_CONFIG_BYTES = 1 << 20
#: Our own file nests three levels deep; the limit leaves room for other sections, and keeps the
#: recursive JSON writer far from Python's recursion limit.
MAX_DEPTH = 64


def config_path() -> Path:
    override = os.environ.get("RWKV_TUI_CONFIG")
    if override:
        return Path(override).expanduser()
    return Path(platformdirs.user_config_dir(APP_NAME)) / "config.json"


@dataclass
class AppConfig:
    theme: str = DEFAULT_THEME
    keymap: dict[str, str] = field(default_factory=dict)
    sampling: SamplingParams = field(default_factory=SamplingParams)
    system_prompt: str = ""
    think: ThinkMode = ThinkMode.OFF
    #: Sections owned by other parts of the app or newer versions, saved back untouched.
    extra: dict[str, Any] = field(default_factory=dict)
    #: Entries of the ``keymap`` and ``sampling`` sections that this version cannot use (unknown
    #: names, unusable keys), saved back as written: {"keymap": {...}, "sampling": {...}}.
    unused: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = dict(self.extra)
        keymap = {**self.keymap, **self.unused.get("keymap", {})}
        data.update(
            version=CONFIG_VERSION,
            theme=self.theme,
            keymap=dict(sorted(keymap.items())),
            sampling={**self.unused.get("sampling", {}),
                      **{name: getattr(self.sampling, name) for name in SAMPLING_FIELDS}},
            system_prompt=self.system_prompt,
            think=self.think.value,
        )
        return data


@dataclass
class LoadedConfig:
    config: AppConfig
    #: One line per problem found; empty when the file was fine or absent.
    problems: list[str]
    #: True when the file could not be parsed at all (it is moved aside before the next save).
    corrupt: bool = False


_LEFT_AS_WRITTEN = "left in the file as written, not used"


def parse_config(data: object, source: str = "config") -> LoadedConfig:
    """Validate a decoded JSON document field by field."""
    problems: list[str] = []
    config = AppConfig()
    if not isinstance(data, dict):
        return LoadedConfig(config, [f"{source}: expected a JSON object, found {type(data).__name__}"], corrupt=True)
    known = {f.name for f in fields(AppConfig)} | {"version"}
    config.extra = {k: v for k, v in data.items() if k not in known}

    theme = data.get("theme", DEFAULT_THEME)
    if isinstance(theme, str) and theme.strip():
        config.theme = theme.strip()
    else:
        problems.append(f"{source}: 'theme' must be a theme name")

    keymap = data.get("keymap", {})
    if isinstance(keymap, dict):
        unused_keys: dict[str, Any] = {}
        for action_id, keys in keymap.items():
            if action_id not in ACTION_IDS:
                problems.append(f"{source}: keymap names unknown action {shown(action_id)}; {_LEFT_AS_WRITTEN}")
                unused_keys[action_id] = keys
            elif not isinstance(keys, str) or not keys.strip() or any(not k.strip() for k in keys.split(",")):
                problems.append(f"{source}: keymap[{action_id!r}] must be keys like \"ctrl+r\" or \"f5,ctrl+r\", "
                                f"found {shown(keys)}; {_LEFT_AS_WRITTEN}")
                unused_keys[action_id] = keys
            else:
                config.keymap[action_id] = ",".join(k.strip() for k in keys.split(","))
        if unused_keys:
            config.unused["keymap"] = unused_keys
        problems.extend(f"{source}: {clash}" for clash in keymap_clashes(config.keymap))
    else:
        problems.append(f"{source}: 'keymap' must be an object of action id → keys")

    sampling = data.get("sampling", {})
    if isinstance(sampling, dict):
        config.sampling, sampling_problems = _parse_sampling(sampling, source)
        problems.extend(sampling_problems)
        unknown = {name: value for name, value in sampling.items() if name not in SAMPLING_FIELDS}
        if unknown:
            config.unused["sampling"] = unknown
    else:
        problems.append(f"{source}: 'sampling' must be an object")

    system_prompt = data.get("system_prompt", "")
    if isinstance(system_prompt, str):
        config.system_prompt = system_prompt
    else:
        problems.append(f"{source}: 'system_prompt' must be text")

    think = data.get("think", ThinkMode.OFF.value)
    try:
        config.think = ThinkMode(think)
    except ValueError:
        problems.append(f"{source}: 'think' must be one of {', '.join(m.value for m in ThinkMode)}")
    return LoadedConfig(config, problems)


def _parse_sampling(values: dict[str, Any], source: str) -> tuple[SamplingParams, list[str]]:
    problems: list[str] = []
    accepted: dict[str, Any] = {}
    for name, value in values.items():
        if name not in SAMPLING_FIELDS:
            problems.append(f"{source}: unknown sampling setting {shown(name)}; {_LEFT_AS_WRITTEN}")
            continue
        try:
            accepted[name] = coerce_sampling_value(name, value)
        except ValueError as exc:
            problems.append(f"{source}: sampling.{name}: {exc}")
    # Validate one field at a time so a single bad value costs only that value.
    params = SamplingParams()
    for name, value in accepted.items():
        try:
            params = params.with_(**{name: value})
        except EngineError as exc:
            problems.append(f"{source}: {exc}")
    return params, problems


def coerce_sampling_value(name: str, value: object) -> int | float | None:
    """Turn a JSON value or typed text into the field's type; ValueError says what is wrong."""
    if name == "seed" and (value is None or (isinstance(value, str) and value.strip().lower() in ("", "none", "random"))):
        return None
    return coerce_number(value, whole=name in _INT_FIELDS)


def load_config(path: Path | None = None) -> LoadedConfig:
    """Read the settings file; a missing file gives the defaults without complaint."""
    path = path or config_path()
    try:
        with open(path, "rb") as file:
            raw = file.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        return LoadedConfig(AppConfig(), [])
    except OSError as exc:
        return LoadedConfig(AppConfig(), [f"{path}: unreadable ({exc.strerror or exc}); using default settings"])
    data, problem = _decode(raw)
    if problem is not None:
        message = f"{path}: {problem}; using default settings, the file is kept as {path.name}.bak"
        return LoadedConfig(AppConfig(), [message], corrupt=True)
    loaded = parse_config(data, source=str(path))
    if loaded.corrupt:
        loaded.problems = [p + f"; using default settings, the file is kept as {path.name}.bak" for p in loaded.problems]
    return loaded


def _decode(raw: bytes) -> tuple[object, str | None]:
    """The JSON document in ``raw``, or why it cannot be a settings file."""
    if len(raw) > MAX_CONFIG_BYTES:
        return None, f"too large for a settings file (over {MAX_CONFIG_BYTES >> 20} MiB)"
    try:
        text = raw.decode("utf-8-sig")  # a byte-order mark, as some editors write, is fine
    except UnicodeDecodeError as exc:
        return None, f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start})"
    try:
        data = json.loads(text)
    except RecursionError:
        return None, f"not a settings file (nested more than {MAX_DEPTH} levels deep)"
    except ValueError as exc:
        return None, f"not valid JSON ({exc})"
    return data, _unwritable(data)


def _unwritable(data: object) -> str | None:
    """Why a decoded document could not be written back (or used) as it is, if it could not.

    JSON allows nesting deeper than our recursive writer can follow, and ``\\ud800`` escapes that
    decode to text no UTF-8 file can hold: both would fail at the next save, not here.
    """
    pending: list[tuple[object, int]] = [(data, 1)]
    while pending:
        value, depth = pending.pop()
        if depth > MAX_DEPTH:
            return f"not a settings file (nested more than {MAX_DEPTH} levels deep)"
        if isinstance(value, dict):
            pending.extend((key, depth) for key in value)
            pending.extend((item, depth + 1) for item in value.values())
        elif isinstance(value, list):
            pending.extend((item, depth + 1) for item in value)
        elif isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                return f"holds text that is not valid Unicode (an unpaired surrogate escape such as \\ud800)"
    return None


def save_config(config: AppConfig, path: Path | None = None, *, keep_corrupt: bool = False) -> Path:
    """Write the settings atomically. ``keep_corrupt`` first moves an unparsable file to ``.bak``."""
    path = path or config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    if keep_corrupt and path.exists():
        os.replace(path, path.with_name(path.name + ".bak"))
    return atomic_write_text(path, json.dumps(config.to_dict(), indent=2, ensure_ascii=False) + "\n")
