"""``audit awareness``: grade free-standing snippets for eval awareness; ``audit judge``.

Users paste transcripts' reasoning from anywhere into a JSON-lines file and see, line by line,
whether the lexicon detector finds verbalized eval awareness and on which phrase.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from audit.cli.options import JsonOption
from audit.graders.awareness import LabelScores, SnippetResult, grade_snippet_file

FileOption = Annotated[
    Path,
    typer.Option(
        "--file",
        "-f",
        help='JSON-lines file; each line an object with a "text" string and optionally an '
        '"aware" true/false label (then precision and recall are printed at the end).',
    ),
]


def awareness(file: FileOption, json_output: JsonOption = False) -> None:
    """Grade each line's text for verbalized eval awareness and show the matched evidence."""
    report = grade_snippet_file(file)
    scores = report.scores()
    for result in report.results:
        typer.echo(_json_line(result) if json_output else _plain_line(result))
    if scores is not None:
        if json_output:
            typer.echo(json.dumps({"summary": scores.as_dict()}))
        else:
            typer.echo(_plain_scores(scores))


def _plain_line(result: SnippetResult) -> str:
    verdict = "aware" if result.aware else "not aware"
    evidence = "; ".join(f"{e['rule']}: {e['phrase']!r}" for e in result.evidence)
    label = "" if result.label is None else f" (label: {'aware' if result.label else 'not aware'})"
    return f"{result.line}\t{verdict}{label}\t{evidence}".rstrip("\t")


def _json_line(result: SnippetResult) -> str:
    record = {"line": result.line, "aware": result.aware, "evidence": result.evidence}
    if result.label is not None:
        record["label"] = result.label
    return json.dumps(record, ensure_ascii=False)


def _format_rate(value: float | None, interval: tuple[float, float] | None) -> str:
    if value is None or interval is None:
        return "n/a"
    return f"{value:.3f} [95% CI {interval[0]:.3f}-{interval[1]:.3f}]"


def _plain_scores(scores: LabelScores) -> str:
    f1 = "n/a" if scores.f1 is None else f"{scores.f1:.3f}"
    n = scores.tp + scores.fp + scores.fn + scores.tn
    return (
        f"labelled lines: {n} (tp {scores.tp}, fp {scores.fp}, fn {scores.fn}, tn {scores.tn})\n"
        f"precision {_format_rate(scores.precision, scores.precision_interval())}\n"
        f"recall    {_format_rate(scores.recall, scores.recall_interval())}\n"
        f"f1        {f1}"
    )


def register(app: typer.Typer) -> None:
    """Add this stage's commands to the app."""
    app.command("awareness")(awareness)
