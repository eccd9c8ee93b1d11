"""``audit sql``, ``audit schema``, ``audit import samples|inspect`` and ``audit export``.

Each command opens the database, calls one library function (:mod:`audit.query`,
:mod:`audit.io`) and prints its result.
"""

from __future__ import annotations

import json
import sys
from contextlib import ExitStack
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from audit.cli.options import (
    STDIN,
    ConfigOption,
    DbOption,
    HeldoutOption,
    JsonOption,
    SourceIdAlias,
    chosen_source,
    read_text_or_stdin,
    resolve_db,
    resolve_heldout,
    stdin_as_file,
    writable_store,
)
from audit.errors import AuditError
from audit.terminal import printable

if TYPE_CHECKING:
    from audit.io.import_samples import ImportResult

import_app = typer.Typer(
    help="Join graded samples from elsewhere to the history (JSONL, Inspect AI logs).",
    no_args_is_help=True,
)

SourceOption = Annotated[
    str | None,
    typer.Option(
        "--source", help="Spec source id that spec_rev refers to (default: the only one)."
    ),
]


def register(app: typer.Typer) -> None:
    """Add ``audit sql``, ``audit schema``, ``audit import`` and ``audit export``."""
    app.command("sql")(sql_command)
    app.command("schema")(schema_command)
    app.command("export")(export_command)
    app.add_typer(import_app, name="import")


def sql_command(
    query: Annotated[
        str | None, typer.Argument(help="SQL to run (or use --file).", show_default=False)
    ] = None,
    file: Annotated[
        Path | None,
        typer.Option(
            "--file",
            help="Read the SQL from this file, - for standard input (the last statement prints).",
        ),
    ] = None,
    fmt: Annotated[
        str | None,
        typer.Option(
            "--format",
            help="table, csv, json, jsonl or markdown (default: table on a terminal, else csv).",
            show_default=False,
        ),
    ] = None,
    write: Annotated[
        bool, typer.Option("--write", help="Allow statements that change the database.")
    ] = False,
    allow_files: Annotated[
        bool,
        typer.Option(
            "--allow-files",
            help="Let read-only queries read local files (read_csv, read_parquet, glob).",
        ),
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the rows as JSON (the same as --format json).")
    ] = False,
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """Run SQL over the history (read-only unless --write). `audit schema` lists the tables."""
    from audit.query import FORMATS, format_result, run_sql

    if as_json and fmt not in (None, "json"):
        raise AuditError(f"--json and --format {fmt} disagree: give one")
    fmt = "json" if as_json else fmt or ("table" if sys.stdout.isatty() else "csv")
    if fmt not in FORMATS:
        raise AuditError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")
    sql = _sql_text(query, file)
    # Given the path, run_sql opens the sandbox itself: Python callers get the same one.
    result = run_sql(resolve_db(db, config), sql, allow_write=write, allow_files=allow_files)
    if fmt == "table":
        _print_table(result)
    elif fmt in ("json", "jsonl"):
        typer.echo(format_result(result, fmt), nl=False)  # JSON escapes control characters
    else:
        typer.echo(printable(format_result(result, fmt)), nl=False)


def _sql_text(query: str | None, file: Path | None) -> str:
    if (query is None) == (file is None):
        raise AuditError('give either a query ("SELECT ...") or --file query.sql, not both')
    if file is None:
        return str(query)
    return read_text_or_stdin(file)


def _print_table(result: object) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from audit.query import QueryResult, cell_text

    assert isinstance(result, QueryResult)
    table = Table(show_edge=False, header_style="bold")
    # Text objects, not strings: rich reads strings as markup ("[link=...]" would become a
    # hyperlink), and it passes ESC through; values from the database are shown, never obeyed.
    for column in result.columns:
        table.add_column(Text(printable(column, multiline=False)), overflow="fold")
    for row in result.rows:
        table.add_row(*(Text(printable(cell_text(v))) for v in row))
    # Off a terminal rich would wrap at 80 columns; give it room so pipes get whole rows.
    width = None if sys.stdout.isatty() else 200
    console = Console(width=width, highlight=False)
    console.print(table)
    plural = "" if len(result.rows) == 1 else "s"
    console.print(f"({len(result.rows)} row{plural})")


def schema_command(
    names: Annotated[
        list[str] | None, typer.Argument(help="Only these tables or views.", show_default=False)
    ] = None,
    json_output: JsonOption = False,
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """List every table and view with its comment and its columns with theirs."""
    from audit.query import describe_schema, format_schema
    from audit.store import open_store

    path = resolve_db(db, config)
    # A database that does not exist yet still has a schema to show: use an in-memory one.
    target: Path | str = path if path.exists() else ":memory:"
    with open_store(target, read_only=target != ":memory:") as store:
        relations = describe_schema(store, names or None)
    if json_output:
        typer.echo(json.dumps([r.to_json() for r in relations], ensure_ascii=False, indent=2))
    else:
        typer.echo(printable(format_schema(relations)), nl=False)  # comments come from the file


@import_app.command("samples")
def import_samples_command(
    file: Annotated[
        Path,
        typer.Argument(
            help="JSONL file: one graded sample a line, or an exported samples file; - reads "
            "standard input."
        ),
    ],
    source: SourceOption = None,
    source_alias: SourceIdAlias = None,
    heldout: HeldoutOption = None,
    as_json: JsonOption = False,
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """Import graded samples (model, spec_rev, scenario_id, epoch, outcome, eval_aware, ...)."""
    from audit.cli.progress import cli_progress
    from audit.heldout import load_heldout
    from audit.io import import_samples

    held = load_heldout(resolve_heldout(heldout, config))
    path = resolve_db(db, config)
    with stdin_as_file(file, suffix=".jsonl") as readable, writable_store(path) as store:
        result = import_samples(
            store,
            readable,
            heldout=held,
            source_id=chosen_source(source, source_alias),
            progress=cli_progress(),
        )
    if file == STDIN:
        result = replace(result, path="-")
    _print_import(result, as_json)


@import_app.command("inspect")
def import_inspect_command(
    logs: Annotated[
        list[Path],
        typer.Argument(
            help="Inspect AI eval logs (.json, or .eval with the extra), or folders of them; "
            "all are imported in one transaction; - reads one log from standard input."
        ),
    ],
    mapping: Annotated[
        Path | None,
        typer.Option(
            "--mapping",
            help="TOML file mapping sample ids and scores (not needed for logs of specdrift's "
            "own Inspect task); - reads standard input.",
        ),
    ] = None,
    skip_errors: Annotated[
        bool,
        typer.Option(
            "--skip-errors",
            help="Store the scored samples and count the errored ones (default: refuse the log).",
        ),
    ] = False,
    model: Annotated[
        str | None,
        typer.Option(
            "--model", help="Model name to store (default: the mapping's, else the log's)."
        ),
    ] = None,
    source: SourceOption = None,
    source_alias: SourceIdAlias = None,
    heldout: HeldoutOption = None,
    as_json: JsonOption = False,
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """Import Inspect AI eval logs: specdrift's own task as they are, others through a mapping."""
    from audit.heldout import load_heldout
    from audit.io import import_inspect_logs, load_mapping

    if logs.count(STDIN) + (mapping == STDIN) > 1:
        raise AuditError("standard input (-) can be read once: give the other files by path")
    held = load_heldout(resolve_heldout(heldout, config))
    with ExitStack() as stack:
        if mapping is not None:
            mapping = stack.enter_context(stdin_as_file(mapping, suffix=".toml"))
        parsed = load_mapping(mapping) if mapping is not None else None
        readable = [
            stack.enter_context(stdin_as_file(log, suffix=_log_suffix)) if log == STDIN else log
            for log in logs
        ]
        store = stack.enter_context(writable_store(resolve_db(db, config)))
        result = import_inspect_logs(
            store,
            readable,
            parsed,
            heldout=held,
            source_id=chosen_source(source, source_alias),
            skip_errors=skip_errors,
            model=model,
        )
    _print_import(result, as_json)


def _log_suffix(data: bytes) -> str:
    """The file suffix of an Inspect log read from standard input: ``.eval`` logs are zip
    archives, ``.json`` logs text."""
    return ".eval" if data.startswith(b"PK\x03\x04") else ".json"


def _print_import(result: ImportResult, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps({**asdict(result), "skipped": result.skipped}, ensure_ascii=False))
    else:
        typer.echo(printable(result.line()))


def export_command(
    out: Annotated[Path, typer.Option("--out", help="Folder to write (new or empty).")],
    fmt: Annotated[str, typer.Option("--format", help="parquet or jsonl.")] = "parquet",
    unseal: Annotated[
        bool,
        typer.Option(
            "--unseal",
            help="Also write sealed twins' transcripts, reasoning, answers and evidence. Only "
            "for people who never edit the spec: a twin they read stops catching spec patches.",
        ),
    ] = False,
    as_json: JsonOption = False,
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """Export every table (samples partitioned by model) as Parquet or JSONL files."""
    from audit.io import export_store
    from audit.store import open_store

    with open_store(resolve_db(db, config), read_only=True) as store:
        result = export_store(store, out, fmt, unseal=unseal)
    if as_json:
        typer.echo(json.dumps(asdict(result), default=str, ensure_ascii=False))
    else:
        typer.echo(printable(result.line()))
    if result.unsealed and result.sealed_samples:
        typer.echo(
            f"warning: --unseal: {out} holds the sealed text of {result.sealed_samples} samples "
            "of sealed twins (prompts, tool outputs, answers); keep it from anyone who edits the "
            "spec",
            err=True,
        )
    elif result.sealed_samples:
        typer.echo(
            f"note: the text of {result.sealed_samples} samples of sealed twins was left out "
            "(NULL); their outcomes and rates are in the export",
            err=True,
        )
