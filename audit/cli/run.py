"""``audit run`` and ``audit sweep``: run the held-out set against spec revisions and models.

Both commands call :func:`audit.runner.run_matrix` (or :func:`audit.runner.plan_run` with
``--dry-run``). A rich progress bar shows done/total, rate and errors on a terminal; otherwise
only the one-line summary is printed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.progress import Progress as RichBar

from audit.cli.options import ConfigOption, DbOption, JsonOption, resolve_db
from audit.config import load_config, with_overrides
from audit.progress import NullProgress, Progress
from audit.store import open_store

EpochsOption = Annotated[
    int | None, typer.Option("--epochs", min=1, help="Repetitions per cell (default: run.epochs).")
]
BaseUrlOption = Annotated[
    str | None,
    typer.Option("--base-url", help="Send every request to this OpenAI-compatible endpoint."),
]
DryRunOption = Annotated[
    bool, typer.Option("--dry-run", help="Print the matrix and the number of calls; call nothing.")
]
ScenarioOption = Annotated[
    list[str] | None,
    typer.Option("--scenario", help="Scenario id to run (repeatable; default: the whole set)."),
]


class BarProgress:
    """A rich progress bar: done/total, rate and errors (for terminals)."""

    def __init__(self, console: Console) -> None:
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
        self._bar.start()
        self._task = self._bar.add_task(label, total=total, errors=0, rate="")

    def advance(self, done: int = 1, errors: int = 0) -> None:
        if self._task is None:
            return
        self._errors += errors
        speed = self._bar.tasks[0].speed
        self._bar.update(
            self._task, advance=done, errors=self._errors, rate=f"{speed:.1f}/s" if speed else ""
        )

    def message(self, text: str) -> None:
        self._bar.console.print(text)

    def finish(self) -> None:
        self._bar.stop()


def _progress() -> Progress:
    console = Console(stderr=True)
    return BarProgress(console) if console.is_terminal else NullProgress()


def _execute(
    *,
    command: str,
    models: list[str] | None,
    revisions: list[str] | None,
    scenarios: list[str] | None,
    epochs: int | None,
    base_url: str | None,
    db: Path | None,
    config_path: Path | None,
    dry_run: bool,
    as_json: bool,
) -> None:
    from audit.runner import plan_run, run_matrix

    config = with_overrides(load_config(config_path), **{"run.epochs": epochs})
    store = open_store(resolve_db(db, config_path))
    try:
        if dry_run:
            plan = plan_run(
                store, config, models=models, revisions=revisions, scenario_ids=scenarios
            )
            _print_plan(plan.describe(), as_json)
            return
        summary = run_matrix(
            store,
            config,
            models=models,
            revisions=revisions,
            scenario_ids=scenarios,
            progress=_progress(),
            base_url=base_url,
            command=command,
        )
    finally:
        store.close()
    if as_json:
        typer.echo(json.dumps({**summary.__dict__, "ok": summary.ok}))
    else:
        typer.echo(summary.line())
    if not summary.ok:
        typer.echo(
            f"error: {summary.unstored} sample(s) could not be stored ({summary.store_error}); "
            "rerun to redo them",
            err=True,
        )
        raise typer.Exit(1)


def _print_plan(described: dict, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(described))
        return
    typer.echo(
        f"models     {', '.join(described['models'])}\n"
        f"revisions  {len(described['revisions'])}: {' '.join(described['revisions'])}\n"
        f"scenarios  {described['scenarios']} (with their conditions)\n"
        f"epochs     {described['epochs']}\n"
        f"matrix     {described['matrix_cells']} cells, {described['distinct_samples']} distinct "
        f"samples, {described['already_stored']} already stored\n"
        f"to run     {described['to_run']} samples, at most {described['max_calls']} calls"
    )


def run_command(
    model: Annotated[
        list[str], typer.Option("--model", help="Configured model name (repeatable).")
    ],
    rev: Annotated[
        list[str] | None,
        typer.Option("--rev", help="Spec revision: sha prefix, tag or index (default: all)."),
    ] = None,
    epochs: EpochsOption = None,
    scenario: ScenarioOption = None,
    base_url: BaseUrlOption = None,
    dry_run: DryRunOption = False,
    db: DbOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Run the held-out set for one model against one or more spec revisions."""
    _execute(
        command="run",
        models=model,
        revisions=rev,
        scenarios=scenario,
        epochs=epochs,
        base_url=base_url,
        db=db,
        config_path=config,
        dry_run=dry_run,
        as_json=as_json,
    )


def sweep_command(
    epochs: EpochsOption = None,
    scenario: ScenarioOption = None,
    base_url: BaseUrlOption = None,
    dry_run: DryRunOption = False,
    db: DbOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Run the whole matrix from config: every model x every stored spec revision."""
    _execute(
        command="sweep",
        models=None,
        revisions=None,
        scenarios=scenario,
        epochs=epochs,
        base_url=base_url,
        db=db,
        config_path=config,
        dry_run=dry_run,
        as_json=as_json,
    )


def register(app: typer.Typer) -> None:
    """Add ``audit run`` and ``audit sweep``."""
    app.command("run")(run_command)
    app.command("sweep")(sweep_command)
