"""Our own themes (``themes/<name>.json`` colours + ``themes/<name>.tcss`` touches) and the app CSS.

A theme file that cannot be read or has a bad colour is skipped with a one-line problem, so a
broken custom theme never stops the app; Textual's built-in themes are always there as well.
"""

from __future__ import annotations

import json
from pathlib import Path

from textual.color import Color, ColorParseError
from textual.theme import Theme

from engine.paths import bundled_dir

COLOR_FIELDS = (
    "primary", "secondary", "accent", "foreground", "background", "surface", "panel", "boost",
    "success", "warning", "error",
)


def themes_dir() -> Path:
    return bundled_dir("themes", "tui.themes")


def stylesheets(directory: Path | None = None) -> list[Path]:
    """The app stylesheet first, then every theme's own stylesheet."""
    directory = directory or themes_dir()
    return [directory / "app.tcss", *sorted(p for p in directory.glob("*.tcss") if p.name != "app.tcss")]


def theme_from_dict(data: object, source: str) -> Theme:
    """Build a Theme from a decoded JSON object; ValueError names the problem."""
    if not isinstance(data, dict):
        raise ValueError(f"{source}: expected a JSON object")
    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"{source}: missing 'name'")
    colors: dict[str, str] = {}
    for field in COLOR_FIELDS:
        value = data.get(field)
        if value is None:
            continue
        try:
            Color.parse(value)
        except (ColorParseError, TypeError):
            raise ValueError(f"{source}: {field} {value!r} is not a colour") from None
        colors[field] = value
    if "primary" not in colors:
        raise ValueError(f"{source}: missing 'primary' colour")
    variables = data.get("variables", {})
    if not isinstance(variables, dict) or not all(isinstance(v, str) for v in variables.values()):
        raise ValueError(f"{source}: 'variables' must map names to CSS values")
    dark = data.get("dark", True)
    if not isinstance(dark, bool):
        raise ValueError(f"{source}: 'dark' must be true or false")
    return Theme(name=name.strip(), dark=dark, variables=dict(variables), **colors)


def load_themes(directory: Path | None = None) -> tuple[list[Theme], list[str]]:
    """Every ``*.json`` theme in the themes folder, and one line per file that was skipped."""
    directory = directory or themes_dir()
    themes: list[Theme] = []
    problems: list[str] = []
    for path in sorted(directory.glob("*.json")):
        try:
            themes.append(theme_from_dict(json.loads(path.read_text(encoding="utf-8")), str(path)))
        except (OSError, ValueError) as exc:
            problems.append(str(exc) if str(path) in str(exc) else f"{path}: {exc}")
    return themes, problems
