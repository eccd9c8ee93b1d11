"""The ``audit`` command line: a thin layer over the library.

Each command parses its options, calls one library function and formats the result. Errors meant
for the user (:class:`audit.errors.AuditError`) become one line on stderr and exit code 2.
"""

from __future__ import annotations

import click
import typer
from typer.core import TyperGroup

from audit.errors import AuditError
from audit.terminal import printable


class AuditGroup(TyperGroup):
    """Command group that turns AuditError into a clean exit."""

    def invoke(self, ctx: click.Context):  # type: ignore[no-untyped-def]
        try:
            return super().invoke(ctx)
        except AuditError as exc:
            # typer vendors click and renders ClickException in a rich box, so print the one
            # line ourselves and exit through typer's own Exit. Messages quote input (names,
            # revisions, lines of a file), so control characters are shown, not obeyed.
            typer.echo(f"error: {printable(str(exc), multiline=False)}", err=True)
            raise typer.Exit(code=exc.exit_code) from None


app = typer.Typer(
    cls=AuditGroup,
    help="specdrift: audit model-spec drift on a fixed held-out covert-action set.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _register_commands() -> None:
    # One module per stage; each adds its commands or sub-groups to the app.
    from audit.cli import (
        analysis,
        awareness,
        batch,
        counterfactual,
        demo,
        heldout,
        organisms,
        report,
        run,
        specs,
        sql,
        view,
    )

    for module in (
        demo,
        specs,
        heldout,
        awareness,
        run,
        batch,
        counterfactual,
        organisms,
        analysis,
        report,
        sql,
        view,
    ):
        module.register(app)


_register_commands()


def main() -> None:
    """Console-script entry point."""
    app()
