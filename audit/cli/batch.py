"""``audit batch``: list and cancel batches, and run waves through any batch engine.

``audit batch export`` writes a wave's request files in the OpenAI batch format and
``audit batch import`` reads an engine's output files back (``vllm run-batch``, a Ray Data job,
any engine that reads and writes that format); ``audit batch status`` and
``audit batch cancel`` list and cancel the batches of every wave. Each command calls one
function of :mod:`audit.runner.batch`.
"""

from __future__ import annotations

import json
from contextlib import ExitStack
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer

from audit.cli.options import (
    STDIN,
    ConfigOption,
    DbOption,
    JsonOption,
    resolve_db,
    stdin_as_file,
    writable_store,
)
from audit.cli.run import EpochsOption, MaxTurnsOption, ScenarioOption, TwinsOption
from audit.errors import AuditError

batch_app = typer.Typer(
    help="Batch inference: batches of every wave, and request files for other engines.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    """Add ``audit batch`` and its commands."""
    app.add_typer(batch_app, name="batch")


@batch_app.command("status")
def status_command(
    refresh: Annotated[
        bool,
        typer.Option("--refresh", help="Ask the servers for the state of open batches first."),
    ] = False,
    db: DbOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """List every batch of every wave: model, requests, state and ids."""
    from audit.config import load_config
    from audit.runner.batch import batch_status
    from audit.store import open_store

    settings = load_config(config)
    path = resolve_db(db, config)
    parts = []
    if path.exists():  # no database yet: no batches, and none is created to say so
        with open_store(path, read_only=not refresh) as store:
            parts = batch_status(store, settings, refresh=refresh)
    if as_json:
        typer.echo(json.dumps([asdict(p) for p in parts], default=str))
        return
    if not parts:
        typer.echo("no batches yet: audit sweep --batch or audit batch export makes them")
        return
    typer.echo(
        f"{'wave':>4}  {'via':6}  {'status':11}  {'requests':>8}  {'done':>6}  "
        f"{'failed':>6}  {'model':24}  id"
    )
    for part in parts:
        typer.echo(
            f"{part.wave:>4}  {part.via:6}  {part.status:11}  {part.requests:>8}  "
            f"{_count(part.completed):>6}  {_count(part.failed):>6}  {part.model[:24]:24}  "
            f"{part.batch_id or part.part_id}"
        )


def _count(value: int | None) -> str:
    return "-" if value is None else str(value)


@batch_app.command("cancel")
def cancel_command(
    ids: Annotated[
        list[str] | None,
        typer.Argument(help="Batch ids or part ids (see audit batch status).", show_default=False),
    ] = None,
    wave: Annotated[
        int | None, typer.Option("--wave", min=0, help="Every open batch of this wave.")
    ] = None,
    every: Annotated[bool, typer.Option("--all", help="Every open batch.")] = False,
    db: DbOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Cancel open batches (by id, --wave or --all).

    The next sweep or export puts their unanswered requests into a new wave; a cancellation
    costs no retry.
    """
    from audit.config import load_config
    from audit.runner.batch import cancel_batches

    settings = load_config(config)
    with writable_store(resolve_db(db, config)) as store:
        parts = cancel_batches(store, settings, ids=ids or (), wave=wave, every=every)
    if as_json:
        typer.echo(json.dumps([asdict(p) for p in parts], default=str))
        return
    for part in parts:
        typer.echo(f"wave {part.wave} {part.batch_id or part.part_id}: {part.status}")


@batch_app.command("export")
def export_command(
    out: Annotated[Path, typer.Option("--out", help="Folder for the request files.")],
    wave: Annotated[
        int | None,
        typer.Option(
            "--wave", min=0, help="Wave to write: the next one (default), or an exported one again."
        ),
    ] = None,
    model: Annotated[
        list[str] | None,
        typer.Option("--model", help="Configured model (repeatable; default: all)."),
    ] = None,
    rev: Annotated[
        list[str] | None,
        typer.Option("--rev", help="Spec revision or range A..B (repeatable; default: all)."),
    ] = None,
    scenario: ScenarioOption = None,
    epochs: EpochsOption = None,
    max_turns: MaxTurnsOption = None,
    twins: TwinsOption = None,
    db: DbOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Write the next wave's requests as OpenAI batch files for another engine.

    One model per file, for vllm run-batch, a Ray Data job or any engine that reads the format.
    """
    from audit.config import load_config, with_overrides
    from audit.runner.batch import export_wave

    settings = with_overrides(
        load_config(config),
        **{"run.epochs": epochs, "run.max_turns": max_turns, "run.twins": twins},
    )
    with writable_store(resolve_db(db, config)) as store:
        summary = export_wave(
            store, settings, out, wave=wave, models=model, revisions=rev, scenario_ids=scenario
        )
    if as_json:
        typer.echo(json.dumps(asdict(summary), default=str))
        return
    if summary.wave is None:
        typer.echo(
            f"nothing to export: every sample of the matrix is stored or has given up "
            f"({summary.stored} stored)"
        )
        return
    verb = "wrote again" if summary.rewritten else "wrote"
    typer.echo(
        f"wave {summary.wave}: {verb} {summary.requests} requests in {len(summary.files)} "
        f"file(s) under {out}"
    )
    for path in summary.files:
        typer.echo(f"  {path}")
    if summary.sealed:
        typer.echo(
            f"note: {summary.sealed} request(s) carry sealed twins' prompts: the files are model "
            "input, not for the people who edit the spec; delete them after the import",
            err=True,
        )
    typer.echo("then: run the files through the engine and `audit batch import OUTPUT...`")


@batch_app.command("import")
def import_command(
    files: Annotated[
        list[Path],
        typer.Argument(
            help="Output files of the engine (OpenAI batch format); - reads one from standard "
            "input."
        ),
    ],
    db: DbOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Read an engine's output files back into the database.

    Finished samples are graded and stored, the rest wait for the next wave; a bad line
    changes nothing.
    """
    from audit.config import load_config
    from audit.runner.batch import import_outputs

    settings = load_config(config)
    if files.count(STDIN) > 1:
        raise AuditError("standard input (-) can be read once: give the other files by path")
    with ExitStack() as stack:
        readable = [stack.enter_context(stdin_as_file(f, suffix=".jsonl")) for f in files]
        store = stack.enter_context(writable_store(resolve_db(db, config)))
        summary = import_outputs(store, settings, readable)
    counts = summary.counts
    if as_json:
        typer.echo(json.dumps(asdict(summary), default=str))
        return
    typer.echo(
        f"read {counts.lines} lines: {counts.answered} answered, {counts.errors} errors, "
        f"{counts.skipped} already imported; stored {counts.stored} samples, "
        f"{counts.failed} gave up, {counts.continuing} continue"
    )
    for wave in summary.closed_waves:
        typer.echo(f"wave {wave} is answered in full")
    if summary.ready:
        typer.echo(f"next: audit batch export ({summary.ready} samples have a next request)")
