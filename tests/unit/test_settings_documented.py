"""Every setting is documented in the README (a setting nobody can find does not exist)."""

from __future__ import annotations

from pathlib import Path

from modelhost.settings import Settings

README = Path(__file__).resolve().parents[2] / "README.md"


def test_every_setting_is_in_the_readme() -> None:
    text = README.read_text()
    missing = [
        f"MODELHOST_{name.upper()}"
        for name in Settings.model_fields
        if f"`MODELHOST_{name.upper()}`" not in text
    ]
    assert missing == [], f"document these in README.md's configuration table: {missing}"
