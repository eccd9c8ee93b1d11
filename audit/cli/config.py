"""``audit config``: the effective configuration and where each value came from, a check of the
config file, and the reference of every key (the README's, generated from the model)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from audit.cli.options import ConfigOption, HeldoutOption, JsonOption, heldout_override
from audit.terminal import printable

config_app = typer.Typer(
    help="The configuration: show the effective values, check the file, print the reference.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    """Add ``audit config`` to the app."""
    app.add_typer(config_app, name="config")


@config_app.command("show")
def show_command(
    db: Annotated[
        Path | None, typer.Option("--db", help="As a command's --db flag would set it.")
    ] = None,
    heldout: HeldoutOption = None,
    assignments: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="KEY=VALUE as a flag would set it (repeatable), e.g. --set run.epochs=5.",
        ),
    ] = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Print the effective configuration: every key, its value, and where it came from
    (default, file, flag, env)."""
    from audit.config_explain import explain_config, parse_assignments

    overrides = {
        **parse_assignments(assignments or []),
        "db": None if db is None else str(db),
        **heldout_override(heldout),
    }
    explained = explain_config(config, overrides)
    if as_json:
        typer.echo(json.dumps(explained.to_json(), indent=2, default=str))
        return
    where = explained.file or "none (defaults)"
    typer.echo(printable(f"# config file: {where}"))
    width = max(len(e.key) for e in explained.entries)
    for entry in explained.entries:
        # The file is named once, above; an environment variable at its value.
        origin = f"env {entry.detail}" if entry.origin == "env" else entry.origin
        value = json.dumps(entry.value, default=str)
        typer.echo(printable(f"{entry.key:<{width}}  {value}  [{origin}]"))


@config_app.command("check")
def check_command(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Check the config file and what it points at; list every problem. Exit 2 on an error."""
    from audit.config_explain import check_config

    file, problems = check_config(config)
    errors = [p for p in problems if p.severity == "error"]
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "file": None if file is None else str(file),
                    "ok": not errors,
                    "problems": [p.to_json() for p in problems],
                },
                indent=2,
            )
        )
    else:
        for problem in problems:
            typer.echo(printable(problem.line()), err=problem.severity == "error")
        if not errors:
            typer.echo(printable(f"config {file or '(defaults)'}: ok"))
    if errors:
        raise typer.Exit(2)


@config_app.command("reference")
def reference_command() -> None:
    """Print every config key with its default and meaning (Markdown; the README's table)."""
    from audit.config_explain import config_reference

    typer.echo(config_reference(), nl=False)
