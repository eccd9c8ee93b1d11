"""CLI commands of the analysis stage: ``audit detect`` and ``audit gate``.

Each parses its options, calls one library function (:func:`audit.analysis.detect`,
:func:`audit.analysis.gate`) and formats what it returns.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from audit.cli.options import (
    ConfigOption,
    DbOption,
    HeldoutOption,
    JsonOption,
    SourceIdAlias,
    chosen_source,
    discard_stdout,
    heldout_override,
    resolve_db,
    writable_store,
)
from audit.errors import AuditError
from audit.terminal import printable

if TYPE_CHECKING:
    from audit.analysis import GateResult

ModelOption = Annotated[str | None, typer.Option("--model", help="Only this model.")]
SourceOption = Annotated[
    str | None, typer.Option("--source", help="Spec source id (default: the only one stored).")
]
SetHashOption = Annotated[
    str | None,
    typer.Option("--set-hash", help="Held-out set to analyse, when several are stored."),
]


class _MessagesToStderr:
    """Progress sink that only shows the library's messages (detection takes seconds)."""

    def start(self, total: int, label: str) -> None:
        pass

    def advance(self, done: int = 1, errors: int = 0) -> None:
        pass

    def message(self, text: str) -> None:
        typer.echo(f"note: {printable(text)}", err=True)

    def finish(self) -> None:
        pass


def detect_command(
    model: ModelOption = None,
    baseline: Annotated[
        str | None,
        typer.Option("--baseline", help="Baseline revision: sha prefix, tag or index (default 0)."),
    ] = None,
    source: SourceOption = None,
    source_alias: SourceIdAlias = None,
    set_hash: SetHashOption = None,
    heldout: HeldoutOption = None,
    as_json: JsonOption = False,
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """Detect and attribute covert-rate changes along the history; store and print findings.

    With --heldout (or heldout.path) only that set's samples are analysed."""
    from audit.analysis import detect
    from audit.config import load_config, with_overrides

    settings = with_overrides(load_config(config), **heldout_override(heldout))
    with writable_store(resolve_db(db, config)) as store:
        findings = detect(
            store,
            settings,
            model=model,
            baseline=baseline,
            source_id=chosen_source(source, source_alias),
            set_hash=set_hash,
            progress=_MessagesToStderr(),
        )
    if as_json:
        typer.echo(json.dumps([f.to_json() for f in findings], indent=2))
        return
    if not findings:  # every model with samples at a stored revision gets at least a "none"
        typer.echo("no samples were made on a stored spec revision: nothing was compared")
        return
    for finding in findings:  # summaries name models and scenarios from the database
        typer.echo(printable(f"[{finding.kind}] {finding.summary}"))


def gate_command(
    baseline: Annotated[
        str, typer.Option("--baseline", help="Baseline spec revision (sha prefix, tag, index).")
    ],
    candidate: Annotated[
        str, typer.Option("--candidate", help="Candidate spec revision (sha prefix, tag, index).")
    ],
    model: Annotated[
        str | None, typer.Option("--model", help="Candidate model (default: every model).")
    ] = None,
    baseline_model: Annotated[
        str | None,
        typer.Option("--baseline-model", help="Model at the baseline (default: --model)."),
    ] = None,
    source: SourceOption = None,
    source_alias: SourceIdAlias = None,
    set_hash: SetHashOption = None,
    heldout: HeldoutOption = None,
    junit: Annotated[
        Path | None,
        typer.Option(
            "--junit",
            help="Also write a JUnit XML report to FILE: one test case per model and check.",
        ),
    ] = None,
    markdown: Annotated[
        Path | None,
        typer.Option(
            "--markdown",
            help="Also append the Markdown summary to FILE (e.g. $GITHUB_STEP_SUMMARY).",
        ),
    ] = None,
    as_json: JsonOption = False,
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """Pre-release gate: exit 0 pass, 1 fail (regression, held-out text anywhere in the
    candidate spec, drop explained by patching or awareness), 2 usage error. Each model is
    judged on its own (one-sided tests). Prints a Markdown summary for a CI job summary;
    --junit and --markdown write the verdict for CI."""
    from audit.analysis import gate
    from audit.config import load_config, with_overrides
    from audit.store import open_store

    settings = with_overrides(load_config(config), **heldout_override(heldout))
    with open_store(resolve_db(db, config), read_only=True) as store:
        result = gate(
            store,
            settings,
            baseline=baseline,
            candidate=candidate,
            model=model,
            baseline_model=baseline_model,
            source_id=chosen_source(source, source_alias),
            set_hash=set_hash,
            progress=_MessagesToStderr(),
        )
    write_gate_files(result, junit=junit, markdown=markdown)
    text = json.dumps(result.to_json(), indent=2) + "\n" if as_json else result.markdown()
    echo_verdict(text if as_json else printable(text))
    for warning in result.warnings:
        typer.echo(printable(f"warning: {warning}", multiline=False), err=True)
    raise typer.Exit(result.exit_code)


def write_gate_files(result: GateResult, *, junit: Path | None, markdown: Path | None) -> None:
    """The JUnit report (replaced) and the Markdown summary (appended, as a CI step summary
    file collects what each command of the step adds)."""
    from audit.analysis.junit import gate_junit

    try:
        if junit is not None:
            junit.write_text(gate_junit(result), encoding="utf-8")
        if markdown is not None:
            with markdown.open("a", encoding="utf-8") as handle:
                handle.write(printable(result.markdown()))
    except OSError as exc:
        raise AuditError(
            f"cannot write {exc.filename}: {exc.strerror}; choose a writable path"
        ) from None


def echo_verdict(text: str) -> None:
    """Print the verdict; a reader that stopped reading (`| head`) does not change the exit
    code, which is the verdict (a failing gate stays 1 in a pipeline)."""
    try:
        typer.echo(text, nl=False)
        sys.stdout.flush()
    except BrokenPipeError:
        discard_stdout()


def register(app: typer.Typer) -> None:
    """Add ``detect`` and ``gate`` to the app."""
    app.command("detect")(detect_command)
    app.command("gate")(gate_command)
