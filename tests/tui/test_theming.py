"""Our own themes load from themes/; a broken theme file is skipped with a one-line reason."""

from __future__ import annotations

import json
from pathlib import Path

from tui.theming import load_themes, stylesheets, themes_dir


def test_bundled_dark_and_light_themes() -> None:
    themes, problems = load_themes()
    by_name = {t.name: t for t in themes}
    assert problems == []
    assert by_name["rwkv-dark"].dark and not by_name["rwkv-light"].dark
    sheets = stylesheets()
    assert sheets[0].name == "app.tcss"
    assert {p.name for p in sheets} >= {"rwkv-dark.tcss", "rwkv-light.tcss"}
    assert (themes_dir() / "rwkv-dark.json").is_file()


def test_a_broken_theme_is_skipped(tmp_path: Path) -> None:
    (tmp_path / "good.json").write_text(json.dumps({"name": "good", "primary": "#336699"}))
    (tmp_path / "bad-colour.json").write_text(json.dumps({"name": "bad", "primary": "not-a-colour"}))
    (tmp_path / "bad-json.json").write_text("{")
    themes, problems = load_themes(tmp_path)
    assert [t.name for t in themes] == ["good"]
    assert len(problems) == 2 and all("\n" not in p for p in problems)
    assert any("bad-colour.json" in p and "not a colour" in p for p in problems)
