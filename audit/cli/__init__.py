"""The ``audit`` command line: a thin layer over the library.

Each command parses its options, calls one library function and formats the result. Errors meant
for the user (:class:`audit.errors.AuditError`) become one line on stderr and exit code 2.

Conventions every command follows (tested in ``tests/test_cli_conventions.py``): ``-h`` and
``--help``; ``audit --version``; shell completion (``audit --install-completion``); flags shown
as flags in help; a reader that closes the pipe early (``audit detect | head -1``) ends the
command quietly with exit 0.
"""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from audit.cli.options import discard_stdout
from audit.errors import AuditError
from audit.terminal import printable

HELP_OPTION_NAMES = ["-h", "--help"]


class AuditGroup(TyperGroup):
    """Command group that turns AuditError into a clean exit and a closed pipe into exit 0."""

    def make_context(self, info_name: Any, args: Any, parent: Any = None, **extra: Any) -> Any:
        # The whole command tree exists now (completion options included) and no help has been
        # rendered yet: the last moment to fix how flags are shown.
        show_flags_as_flags(self)
        return super().make_context(info_name, args, parent=parent, **extra)

    def invoke(self, ctx: Any) -> Any:
        # ``ctx`` is the Context of the click typer vendors (a private module, so not named).
        try:
            try:
                return super().invoke(ctx)
            finally:
                _flush_stdout()
        except AuditError as exc:
            # typer vendors click and renders ClickException in a rich box, so print the one
            # line ourselves and exit through typer's own Exit. Messages quote input (names,
            # revisions, lines of a file), so control characters are shown, not obeyed.
            typer.echo(f"error: {printable(str(exc), multiline=False)}", err=True)
            raise typer.Exit(code=exc.exit_code) from None
        except BrokenPipeError:
            # The reader stopped reading (`audit detect | head -1`): that is not an error.
            # click would exit 1 here, which fails a pipeline under `set -o pipefail`.
            discard_stdout()
            raise typer.Exit(0) from None


def _flush_stdout() -> None:
    """Flush what the command printed while its exit status is still ours to choose; a closed
    pipe at this point must not replace the command's own status (a failing gate stays 1)."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        discard_stdout()
    except (OSError, ValueError):  # stdout closed or replaced by a test runner
        pass


def show_flags_as_flags(command: Any) -> None:
    """Show boolean flags without a value type in help.

    Typer 0.2x prints every option's type, flags included (``--json <bool>``), which reads as if
    the flag took a value; ``--json true`` then fails as an unexpected argument. An empty
    metavar leaves the type column blank for flags only. Help options are built lazily, so each
    command's is built here first (with the same names the app uses) to be fixed too.
    """
    params = list(getattr(command, "params", []))
    get_help_option = getattr(command, "get_help_option", None)
    if get_help_option is not None:
        help_option = get_help_option(typer.Context(command, help_option_names=HELP_OPTION_NAMES))
        if help_option is not None:
            params.append(help_option)
    for param in params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
    for sub in getattr(command, "commands", {}).values():
        show_flags_as_flags(sub)


app = typer.Typer(
    cls=AuditGroup,
    help="specdrift: audit model-spec drift on a fixed held-out covert-action set.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,
    context_settings={"help_option_names": HELP_OPTION_NAMES},
)


def _print_version(value: bool) -> None:
    if value:
        from audit import __version__

        typer.echo(f"specdrift {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            help="Print the version of specdrift and exit.",
            is_eager=True,
            callback=_print_version,
        ),
    ] = False,
) -> None:
    """specdrift: audit model-spec drift on a fixed held-out covert-action set."""


def _register_commands() -> None:
    # One module per stage; each adds its commands or sub-groups to the app.
    from audit.cli import (
        analysis,
        awareness,
        batch,
        config,
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
        config,
    ):
        module.register(app)


_register_commands()


def main() -> None:
    """Console-script entry point."""
    app()
