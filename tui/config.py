"""The user's settings file: theme, key map, sampling defaults, system prompt, think mode.

Lives at ``<XDG config>/rwkv-tui/config.json`` (``RWKV_TUI_CONFIG`` overrides the path). A damaged
file never stops the app: every field is checked on its own, a bad field falls back to its default,
and the problems come back as one-line messages for a notification. Sections this module does not
know (written by a newer version or by another pane) are kept as they are when the file is saved.
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
from tui.actions import ACTION_IDS
from tui.values import coerce_number

APP_NAME = "rwkv-tui"
DEFAULT_THEME = "rwkv-dark"
CONFIG_VERSION = 1

#: Sampling fields the settings panel edits and the file stores (ban_tokens is per model).
SAMPLING_FIELDS: tuple[str, ...] = (
    "temperature", "top_p", "top_k", "presence_penalty", "frequency_penalty", "penalty_decay",
    "max_tokens", "seed",
)
_INT_FIELDS = {"top_k", "max_tokens", "seed"}


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

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = dict(self.extra)
        data.update(
            version=CONFIG_VERSION,
            theme=self.theme,
            keymap=dict(sorted(self.keymap.items())),
            sampling={name: getattr(self.sampling, name) for name in SAMPLING_FIELDS},
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
        for action_id, keys in keymap.items():
            if action_id not in ACTION_IDS:
                problems.append(f"{source}: keymap names unknown action {action_id!r}")
            elif not isinstance(keys, str) or not keys.strip() or any(not k.strip() for k in keys.split(",")):
                problems.append(f"{source}: keymap[{action_id!r}] must be keys like \"ctrl+r\" or \"f5,ctrl+r\"")
            else:
                config.keymap[action_id] = ",".join(k.strip() for k in keys.split(","))
    else:
        problems.append(f"{source}: 'keymap' must be an object of action id → keys")

    sampling = data.get("sampling", {})
    if isinstance(sampling, dict):
        config.sampling, sampling_problems = _parse_sampling(sampling, source)
        problems.extend(sampling_problems)
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
            problems.append(f"{source}: unknown sampling setting {name!r}")
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
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return LoadedConfig(AppConfig(), [])
    except OSError as exc:
        return LoadedConfig(AppConfig(), [f"{path}: unreadable ({exc.strerror or exc}); using default settings"])
    try:
        data = json.loads(text)
    except ValueError as exc:
        message = f"{path}: not valid JSON ({exc}); using default settings, the file is kept as {path.name}.bak"
        return LoadedConfig(AppConfig(), [message], corrupt=True)
    loaded = parse_config(data, source=str(path))
    if loaded.corrupt:
        loaded.problems = [p + f"; using default settings, the file is kept as {path.name}.bak" for p in loaded.problems]
    return loaded


def save_config(config: AppConfig, path: Path | None = None, *, keep_corrupt: bool = False) -> Path:
    """Write the settings atomically. ``keep_corrupt`` first moves an unparsable file to ``.bak``."""
    path = path or config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    if keep_corrupt and path.exists():
        os.replace(path, path.with_name(path.name + ".bak"))
    return atomic_write_text(path, json.dumps(config.to_dict(), indent=2, ensure_ascii=False) + "\n")
