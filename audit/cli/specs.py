"""``audit specs``: track the revisions of a spec file in git."""

from __future__ import annotations

import typer

specs_app = typer.Typer(help="Track the revisions of a spec file in git.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(specs_app, name="specs")
