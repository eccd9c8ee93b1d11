"""Progress for the CLI: a rich bar on a terminal; otherwise no bar, but messages on stderr.

rich is imported when a command asks for progress, not when the CLI starts (see
:mod:`audit.cli`): ``audit --help`` never draws a bar.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from audit.progress import Progress
from audit.terminal import printable

if TYPE_CHECKING:
    from rich.console import Console


class BarProgress:
    """A rich progress bar: done/total, rate and errors (for terminals)."""

    def __init__(self, console: Console) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TaskID,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
        )
        from rich.progress import Progress as RichBar

        self._bar = RichBar(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[rate]}"),
            TextColumn("errors {task.fields[errors]}"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )
        self._task: TaskID | None = None
        self._errors = 0

    def start(self, total: int, label: str) -> None:
        # A batch run starts one bar per wave: the previous wave's bar goes.
        if self._task is not None:
            self._bar.remove_task(self._task)
        self._errors = 0
        self._bar.start()
        self._task = self._bar.add_task(label, total=total, errors=0, rate="")

    def advance(self, done: int = 1, errors: int = 0) -> None:
        if self._task is None:
            return
        self._errors += errors
        speed = next(t.speed for t in self._bar.tasks if t.id == self._task)
        self._bar.update(
            self._task, advance=done, errors=self._errors, rate=f"{speed:.1f}/s" if speed else ""
        )

    def message(self, text: str) -> None:
        # Messages can quote a server's or a worker's text: no markup, no control characters.
        self._bar.console.print(printable(text), markup=False, highlight=False)

    def finish(self) -> None:
        self._bar.stop()


class MessageProgress:
    """No bar, but every message as a plain line on stderr.

    What a command has to say while it works (a runner process died, exposure was skipped)
    must reach a CI log, where stdout and stderr are not terminals.
    """

    def start(self, total: int, label: str) -> None:
        pass

    def advance(self, done: int = 1, errors: int = 0) -> None:
        pass

    def message(self, text: str) -> None:
        # As on the bar: the text can quote a server's or a worker's words.
        typer.echo(printable(text), err=True)

    def finish(self) -> None:
        pass


class LineProgress(MessageProgress):
    """Messages and the label of each started task as plain lines on stderr (CI logs of long
    batch runs)."""

    def start(self, total: int, label: str) -> None:
        typer.echo(label, err=True)


def _terminal_console() -> Console | None:
    """A rich console on stderr if stderr is a terminal, else None."""
    from rich.console import Console

    console = Console(stderr=True)
    return console if console.is_terminal else None


def cli_progress() -> Progress:
    """A progress bar on stderr when it is a terminal; otherwise messages only, on stderr."""
    console = _terminal_console()
    return BarProgress(console) if console is not None else MessageProgress()


def batch_progress() -> Progress:
    """A bar per wave on a terminal; otherwise a line per wave and per batch status change,
    so a batch run of hours shows where it stands in a CI log."""
    console = _terminal_console()
    return BarProgress(console) if console is not None else LineProgress()
