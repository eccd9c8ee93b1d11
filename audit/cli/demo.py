"""``audit demo``: the whole pipeline offline, on the shipped spec history and model organisms."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from audit.cli.options import JsonOption
from audit.cli.progress import cli_progress
from audit.terminal import printable

if TYPE_CHECKING:
    from audit.analysis import Finding
    from audit.counterfactual import CounterfactualResult
    from audit.demo import DemoResult


def register(app: typer.Typer) -> None:
    """Add ``audit demo`` to the app."""
    app.command("demo")(demo_command)


def finding_lines(findings: Sequence[Finding]) -> list[str]:
    """One line per model: how many findings of which cause, and the most significant one.

    A model with a spec-patching finding gets a second line: the sealed-twin test of its most
    significant one, the evidence of patching that needs no text matching.
    """
    by_model: dict[str, list[Finding]] = defaultdict(list)
    for finding in findings:
        by_model[finding.model].append(finding)
    lines = []
    for model, group in sorted(by_model.items()):
        causes = Counter(f.primary_cause or f.kind for f in group)
        counted = ", ".join(f"{cause} {n}" for cause, n in causes.most_common())
        strongest = min(group, key=_q)
        summary = strongest.summary.removeprefix(f"{model}: ")
        lines.append(f"{model} [{counted}]: {summary}")
        patching = [f for f in group if f.primary_cause == "spec_patching"]
        if patching:
            finding = min(patching, key=_q)
            where = f"{finding.baseline_rev[:7]} -> {finding.rev[:7]}"
            lines.append(f"  sealed twins, spec patching {where}: {twin_gap_words(finding)}")
    return lines


def _q(finding: Finding) -> float:
    return finding.q_value if finding.q_value is not None else 1.0


def twin_gap_words(finding: Finding) -> str:
    """A finding's twin test in one phrase, e.g. "public scenarios -31.0 points, their sealed
    twins -0.9; twin gap -30.1 (95% CI -38.2 to -22.0) over 20 pairs, q=0.001"."""
    gap = finding.twin_gap
    if gap is None:
        return "no twin samples at both points (run with twins for the twin test)"
    low, high = gap["ci"]
    q = "" if gap.get("q_value") is None else f", q={gap['q_value']:.2g}"
    return (
        f"public scenarios {100 * gap['public_change']:+.1f} points, their sealed twins "
        f"{100 * gap['twin_change']:+.1f}; twin gap {100 * gap['gap']:+.1f} "
        f"(95% CI {100 * low:+.1f} to {100 * high:+.1f}) over {gap['n_pairs']} pairs{q}"
    )


def counterfactual_lines(results: Sequence[CounterfactualResult]) -> list[str]:
    """One line per (model, mode) experiment."""
    lines = []
    for result in results:
        est = result.estimate
        if est is None:
            lines.append(f"{result.model} {result.mode}: {result.note or 'no pairs'}")
            continue
        low, high = est.effect.low or 0.0, est.effect.high or 0.0
        lines.append(
            f"{result.model} {result.mode}: {100 * (est.covert_original.value or 0):.1f}% -> "
            f"{100 * (est.covert_counterfactual.value or 0):.1f}%, "
            f"{100 * (est.effect.value or 0):+.1f} points [{100 * low:+.1f}, {100 * high:+.1f}], "
            f"p={est.p_value:.2g}, {est.n_pairs} pairs"
        )
    return lines


def demo_json(result: DemoResult) -> dict[str, Any]:
    """What ``audit demo --json`` prints: where things went, the run's counts, the
    counterfactual experiments and every finding the summary is drawn from."""
    return {
        "db": str(result.db_path),
        "report": str(result.report_path),
        "spec_repo": str(result.spec_repo),
        "revisions": result.revisions,
        "models": list(result.models),
        "scenarios": result.scenarios,
        "samples": {**asdict(result.run), "ok": result.run.ok},
        "counterfactuals": [c.to_json() for c in result.counterfactuals],
        "findings": [f.to_json() for f in result.findings],
        "elapsed_s": result.elapsed_s,
    }


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
    as_json: JsonOption = False,
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
    if as_json:
        typer.echo(json.dumps(demo_json(result), default=str))
        return
    typer.echo(
        f"spec revisions: {result.revisions}   models (simulated organisms): "
        f"{len(result.models)}   scenarios: {result.scenarios}"
    )
    typer.echo(f"samples: {run.line()}")
    typer.echo("counterfactuals (covert rate before -> after the edit, effect, McNemar p):")
    for line in counterfactual_lines(result.counterfactuals):
        typer.echo(f"  {line}")
    typer.echo(f"findings: {len(result.findings)} (strongest per model; all: audit detect --json)")
    for line in finding_lines(result.findings):
        typer.echo(printable(f"  {line}"))
    typer.echo(f"database: {result.db_path}")
    typer.echo(f"report:   {result.report_path}")
    typer.echo(f"done in {result.elapsed_s:.1f} s. Next:")
    typer.echo(f"  open {result.report_path}")
    typer.echo(f"  audit view --db {result.db_path}   # the transcripts behind each finding")
    typer.echo(f'  audit sql --db {result.db_path} "SELECT * FROM findings"')
    typer.echo(f"  audit gate --db {result.db_path} --baseline 0 --candidate -1")
