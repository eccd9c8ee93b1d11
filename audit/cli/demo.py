"""``audit demo``: the whole pipeline offline, on the shipped spec history and model organisms."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from audit.cli.progress import cli_progress
from audit.terminal import printable

if TYPE_CHECKING:
    from audit.analysis import Finding


def register(app: typer.Typer) -> None:
    """Add ``audit demo`` to the app."""
    app.command("demo")(demo_command)


def finding_lines(findings: Sequence[Finding]) -> list[str]:
    """One line per model: how many findings of which cause, and the most significant one."""
    by_model: dict[str, list[Finding]] = defaultdict(list)
    for finding in findings:
        by_model[finding.model].append(finding)
    lines = []
    for model, group in sorted(by_model.items()):
        causes = Counter(f.primary_cause or f.kind for f in group)
        counted = ", ".join(f"{cause} {n}" for cause, n in causes.most_common())
        strongest = min(group, key=lambda f: f.q_value if f.q_value is not None else 1.0)
        summary = strongest.summary.removeprefix(f"{model}: ")
        lines.append(f"{model} [{counted}]: {summary}")
    return lines


def demo_command(
    db: Annotated[
        Path | None,
        typer.Option(
            "--db", help="DuckDB file (default ./audit.duckdb; audit.toml's db is not used)."
        ),
    ] = None,
    out: Annotated[Path, typer.Option("--out", help="Where to write the HTML report.")] = Path(
        "reports/drift.html"
    ),
    workdir: Annotated[
        Path, typer.Option("--workdir", help="Folder for the replayed spec repository.")
    ] = Path(".audit-work/demo"),
    epochs: Annotated[
        int | None, typer.Option("--epochs", min=1, help="Samples per cell (default 4; quick 3).")
    ] = None,
    quick: Annotated[
        bool,
        typer.Option(
            "--quick",
            help="First and last version of each organism, 5 of the 10 revisions, 3 epochs.",
        ),
    ] = False,
) -> None:
    """Run the offline demo: spec history, simulated model organisms, DuckDB, HTML report."""
    from audit.demo import run_demo

    # Never the database audit.toml names: the demo's samples are simulated.
    db_path = db or Path("audit.duckdb")
    result = run_demo(
        db_path=db_path,
        report_path=out,
        workdir=workdir,
        epochs=epochs,
        quick=quick,
        progress=cli_progress(),
    )
    run = result.run
    typer.echo(
        f"spec revisions: {result.revisions}   models (simulated organisms): "
        f"{len(result.models)}   scenarios: {result.scenarios}"
    )
    typer.echo(f"samples: {run.line()}")
    typer.echo(f"findings: {len(result.findings)} (strongest per model; all: audit detect --json)")
    for line in finding_lines(result.findings):
        typer.echo(printable(f"  {line}"))
    typer.echo(f"database: {result.db_path}")
    typer.echo(f"report:   {result.report_path}")
    typer.echo(f"done in {result.elapsed_s:.1f} s. Next:")
    typer.echo(f"  open {result.report_path}")
    typer.echo(f'  audit sql --db {result.db_path} "SELECT * FROM findings"')
    typer.echo(f"  audit gate --db {result.db_path} --baseline 0 --candidate -1")
