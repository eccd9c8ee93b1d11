"""``audit report``: write the self-contained HTML drift report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from audit.cli.options import (
    ConfigOption,
    DbOption,
    HeldoutOption,
    JsonOption,
    resolve_db,
    resolve_heldout,
)


def register(app: typer.Typer) -> None:
    """Add ``audit report`` to the app."""
    app.command("report")(report)


def report(
    out: Annotated[
        Path, typer.Option("--out", help="HTML file to write (one self-contained file).")
    ] = Path("reports/drift.html"),
    model: Annotated[
        str | None, typer.Option("--model", help="Only this model (default: every model).")
    ] = None,
    since: Annotated[
        str | None,
        typer.Option("--since", help="Only revisions from this one on (index, tag or sha prefix)."),
    ] = None,
    include_prompts: Annotated[
        bool,
        typer.Option(
            "--include-prompts",
            help="Also print held-out prompts and model answers (internal use only; sealed "
            "twins' are never printed).",
        ),
    ] = False,
    heldout: HeldoutOption = None,
    as_json: JsonOption = False,
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """Write the HTML drift report: rates, findings, heatmap and spec changes, offline.

    It reports on one held-out set: --heldout (or heldout.path), else the one with most samples.
    """
    from audit.config import load_config
    from audit.heldout import load_heldout
    from audit.report import render_report
    from audit.store import open_store

    chosen = resolve_heldout(heldout, config)
    set_hash = load_heldout(chosen).set_hash if chosen is not None else None
    with open_store(resolve_db(db, config), read_only=True) as store:
        path = render_report(
            store,
            out,
            model=model,
            since=since,
            include_prompts=include_prompts,
            set_hash=set_hash,
            config=load_config(config),
        )
    size = path.stat().st_size
    if as_json:
        typer.echo(json.dumps({"path": str(path), "bytes": size}, ensure_ascii=False))
    else:
        typer.echo(f"report written to {path} ({size / 1e6:.1f} MB)")
