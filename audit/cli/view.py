"""``audit view``: browse findings, the samples behind them and their transcripts locally."""

from __future__ import annotations

from typing import Annotated

import typer

from audit.cli.options import ConfigOption, DbOption, resolve_db


def register(app: typer.Typer) -> None:
    """Add ``audit view`` to the app."""
    app.command("view")(view)


def view(
    port: Annotated[
        int,
        typer.Option("--port", min=0, max=65535, help="Port on 127.0.0.1 (0: a free one)."),
    ] = 0,
    include_prompts: Annotated[
        bool,
        typer.Option(
            "--include-prompts",
            help="Also show held-out prompts and tool results (internal use only); sealed "
            "twins' text is never shown.",
        ),
    ] = False,
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """Serve a read-only viewer on 127.0.0.1: findings, their samples, transcripts with evidence.

    Prints the URL and serves until Ctrl-C. The database is opened read-only, and only while
    pages are asked for: runs can write to it between page loads.
    """
    from audit.view import serve_viewer

    def ready(url: str) -> None:
        typer.echo(f"specdrift viewer (read-only) at {url}")
        typer.echo("press Ctrl-C to stop")

    serve_viewer(resolve_db(db, config), port=port, include_prompts=include_prompts, on_ready=ready)
    typer.echo("viewer stopped")
