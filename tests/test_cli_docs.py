"""Every command has help text and is documented in the README, so docs and --help stay in step."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import typer.main

from audit.cli import app

README = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")


def _commands(group: Any, prefix: str = "audit") -> list[tuple[str, Any]]:
    """Every command and sub-command as (``audit a b``, command); groups have ``commands``."""
    found: list[tuple[str, Any]] = []
    for name, command in group.commands.items():
        path = f"{prefix} {name}"
        found.append((path, command))
        if hasattr(command, "commands"):
            found.extend(_commands(command, path))
    return found


COMMANDS = _commands(typer.main.get_command(app))


def test_the_cli_has_the_commands_of_every_stage() -> None:
    names = {path for path, _ in COMMANDS}
    for expected in (
        "audit demo",
        "audit specs sync",
        "audit heldout verify",
        "audit awareness",
        "audit run",
        "audit sweep",
        "audit serve-organisms",
        "audit detect",
        "audit gate",
        "audit report",
        "audit view",
        "audit sql",
        "audit schema",
        "audit import samples",
        "audit export",
    ):
        assert expected in names


@pytest.mark.parametrize("path,command", COMMANDS, ids=[p for p, _ in COMMANDS])
def test_command_has_help_and_is_in_the_readme(path: str, command: Any) -> None:
    assert (command.help or command.short_help or "").strip(), f"{path} has no help text"
    assert re.search(rf"{re.escape(path)}\b", README), f"{path} is not in README.md"
    for parameter in command.params:
        if getattr(parameter, "param_type_name", "") == "option" and parameter.name != "help":
            assert (parameter.help or "").strip(), f"{path} {parameter.opts[0]} has no help"
