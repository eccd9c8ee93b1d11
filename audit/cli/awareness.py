"""``audit awareness``: grade free-standing snippets for eval awareness; ``audit judge``.

Users paste transcripts' reasoning from anywhere into a JSON-lines file and see, line by line,
whether the lexicon detector finds verbalized eval awareness and on which phrase.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from audit.cli.options import (
    ConfigOption,
    DbOption,
    HeldoutOption,
    JsonOption,
    read_text_or_stdin,
    resolve_db,
    resolve_heldout,
    stdin_as_file,
    writable_store,
)

if TYPE_CHECKING:
    from audit.graders.awareness import LabelScores, SnippetResult

FileOption = Annotated[
    Path,
    typer.Option(
        "--file",
        "-f",
        help='JSON-lines file (- for standard input); each line an object with a "text" string '
        'and optionally an "aware" true/false label (then precision and recall are printed at '
        "the end).",
    ),
]


def awareness(file: FileOption, json_output: JsonOption = False) -> None:
    """Grade each line's text for verbalized eval awareness and show the matched evidence."""
    from audit.graders.awareness import grade_snippet_file

    with stdin_as_file(file, suffix=".jsonl") as readable:
        report = grade_snippet_file(readable)
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


def judge(
    judge_model: Annotated[
        str, typer.Option("--judge-model", help="Model name of the judge, as its server knows it.")
    ],
    base_url: Annotated[
        str | None,
        typer.Option(
            "--base-url", help="OpenAI-compatible endpoint of the judge (default: OpenAI)."
        ),
    ] = None,
    api_key_env: Annotated[
        str,
        typer.Option("--api-key-env", help="Environment variable holding the judge's API key."),
    ] = "OPENAI_API_KEY",
    model: Annotated[
        str | None, typer.Option("--model", help="Only judge samples of this audited model.")
    ] = None,
    grader: Annotated[
        str, typer.Option("--grader", help="Name the grades are stored under (one row each).")
    ] = "llm_judge",
    rubric: Annotated[
        Path | None,
        typer.Option(
            "--rubric", help="Text file replacing the built-in rubric (- for standard input)."
        ),
    ] = None,
    limit: Annotated[
        int | None, typer.Option("--limit", min=1, help="Judge at most this many samples.")
    ] = None,
    redo: Annotated[
        bool,
        typer.Option(
            "--redo",
            help="Judge again samples already judged with this grader, judge model and rubric "
            "(replacing those grades; another rubric or judge never replaces).",
        ),
    ] = False,
    concurrency: Annotated[
        int, typer.Option("--concurrency", min=1, max=256, help="Judge requests in flight.")
    ] = 8,
    heldout: HeldoutOption = None,
    db: DbOption = None,
    config: ConfigOption = None,
    json_output: JsonOption = False,
) -> None:
    """Grade stored samples with an LLM judge; grades go to judge_grades beside the rules'."""
    from audit.graders.judge import judge_client, judge_stored_samples
    from audit.heldout import load_heldout

    rubric_text = None if rubric is None else read_text_or_stdin(rubric, "rubric")
    client = judge_client(base_url, api_key_env)
    with writable_store(resolve_db(db, config)) as store:
        summary = judge_stored_samples(
            store,
            client,
            judge_model,
            heldout=load_heldout(resolve_heldout(heldout, config)),
            rubric=rubric_text,
            model=model,
            grader=grader,
            limit=limit,
            redo=redo,
            concurrency=concurrency,
        )
    if json_output:
        typer.echo(json.dumps(summary.as_dict()))
    else:
        typer.echo(
            f"judged {summary.judged} of {summary.selected} selected samples with "
            f"{summary.judge_model} as {summary.grader!r}, rubric {summary.rubric_hash[:19]} "
            f"({summary.invalid} invalid verdicts, "
            f"{summary.skipped_unknown_scenario} skipped: scenario not in the held-out set)"
        )


def register(app: typer.Typer) -> None:
    """Add this stage's commands to the app."""
    app.command("awareness")(awareness)
    app.command("judge")(judge)
