"""Every command's --help renders whole: nothing eaten as markup, every command listed."""

from __future__ import annotations

import re

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from modelhost.cli.main import app

COMMANDS = (
    "serve",
    "deploy",
    "invoke",
    "endpoints",
    "models",
    "delete",
    "scale",
    "transform",
    "jobs",
    "logs",
    "invoke-async",
    "queue",
)


def help_text(*args: str) -> str:
    result = CliRunner().invoke(app, [*args, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return result.output


def test_the_top_level_help_lists_every_command_in_plain_words() -> None:
    text = help_text()
    assert "``" not in text
    for command in COMMANDS:
        assert command in text
    assert set(COMMANDS) <= set(get_command(app).commands)  # type: ignore[attr-defined]


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_help_keeps_its_words(command: str) -> None:
    text = help_text(command)
    assert not re.search(r"\w \.(\s|$)", text)  # a bracketed part eaten as markup: "Port ."
    assert "``" not in text


def test_serve_names_its_environment_variables() -> None:
    text = help_text("serve")
    for name in ("MODELHOST_HOST", "MODELHOST_PORT", "MODELHOST_DATA_DIR"):
        assert name in text
