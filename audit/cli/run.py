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

from audit.cli.options import ConfigOption, DbOption, JsonOption, resolve_db
from audit.cli.progress import cli_progress
from audit.config import load_config, with_overrides
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
            progress=cli_progress(),
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
