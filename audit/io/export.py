"""Export every table of the store to Parquet or JSONL files, through DuckDB's COPY.

Layout under the output folder: ``<table>.parquet`` (or ``.jsonl``) per table, except samples,
which get one folder per model: ``samples/<model>/data.<ext>``. Every file holds every column of
its table, ``model`` included, so a folder (or a glob over all of them) reads back the same with
DuckDB, pandas or polars and no reader has to guess a column's type from a folder name. Folder
names are the model name percent-escaped (see :func:`partition_folder`), so any model name is a
safe, distinct folder. JSON columns are text in Parquet and nested values in JSONL. Views are not
exported: they are derived from the tables and rebuilt by any specdrift database.

An exported samples file imports back unchanged with ``audit import samples`` (JSONL).

Sealed twins stay sealed (which scenarios are sealed is :mod:`audit.store.sealed`'s to say, as for
the report and the viewer): the columns that carry a twin's text (its prompts and tool outputs in
the transcript, the model's reasoning and answer about it, the grader's and the awareness
detector's quotes of them, a judge's rationale, a server's error, the words an edit matched in
it) are written as NULL (a placeholder in NOT NULL columns) for its rows, unless ``unseal``.
Ids, families, outcomes, counts and rates stay, so every rate and test can be recomputed.
"""

from __future__ import annotations

import hashlib
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from audit.errors import AuditError
from audit.store import Store
from audit.store.sealed import sealed_sql

EXPORT_FORMATS = ("parquet", "jsonl")
"""File formats of ``audit export``."""

PARTITIONED = {"samples": "model"}
"""Tables written as one folder per value of a column."""

SEALED_COLUMNS: dict[str, dict[str, str]] = {
    "samples": dict.fromkeys(
        ("transcript", "reasoning", "answer", "grade_evidence", "awareness_evidence"), "NULL"
    ),
    "judge_grades": {"rationale": "NULL"},
    # NOT NULL columns get a value the table accepts, so an export still loads back.
    "sample_failures": {"error": "'(withheld: sealed twin)'"},
    "exposure": {"matched_terms": "[]::VARCHAR[]", "matched_text": "NULL"},
    # A batch sample's answers so far (a completion quotes its tool outputs) and error lines.
    "batch_requests": {"response": "NULL", "error": "NULL"},
}
"""Columns that hold a sealed twin's text, per table, and what an export writes instead."""

# When row ``t`` of each table belongs to a sealed twin (see audit.store.sealed).
_SEALED_ROW = {
    "samples": sealed_sql("t.scenario_id"),
    "exposure": sealed_sql("t.scenario_id"),
    "sample_failures": sealed_sql("t.scenario_id"),
    "judge_grades": "EXISTS (SELECT 1 FROM samples s WHERE s.sample_key = t.sample_key "
    f"AND {sealed_sql('s.scenario_id')})",
    "batch_requests": "EXISTS (SELECT 1 FROM batch_samples b WHERE b.sample_key = t.sample_key "
    f"AND {sealed_sql('b.scenario_id')})",
}

_COPY_FORMAT = {"parquet": "FORMAT parquet", "jsonl": "FORMAT json"}
_EXTENSION = {"parquet": "parquet", "jsonl": "jsonl"}
# Long enough for any real model name, short of the usual 255-byte file name limit.
_MAX_FOLDER = 160


@dataclass(frozen=True)
class ExportResult:
    """Where each table went and how many rows it had."""

    out_dir: Path
    fmt: str
    rows: dict[str, int] = field(default_factory=dict)
    paths: dict[str, Path] = field(default_factory=dict)
    partitions: dict[str, dict[str, Path]] = field(default_factory=dict)
    #: Samples of sealed twins in the export; their text is in it only when ``unsealed``.
    sealed_samples: int = 0
    unsealed: bool = False

    def line(self) -> str:
        """One-line summary for the CLI."""
        total = sum(self.rows.values())
        return f"exported {len(self.rows)} tables ({total} rows) as {self.fmt} to {self.out_dir}"


def partition_folder(value: str) -> str:
    """A folder name for a partition value: distinct per value and safe on any file system.

    Everything but ASCII letters, digits, ``-``, ``_`` and ``.`` is percent-escaped (``/``,
    spaces, ``=``, ``%``, ``~``), and so is a leading ``.`` or ``_`` (readers skip such files as
    hidden). Names too long for a file system are cut and get ``~`` and a hash.
    """
    # quote() never escapes "~"; it is kept for the hashed names below.
    escaped = urllib.parse.quote(value, safe="-_.").replace("~", "%7E")
    if escaped[:1] in (".", "_"):
        escaped = f"%{ord(escaped[0]):02X}{escaped[1:]}"
    if not escaped or len(escaped) > _MAX_FOLDER:
        escaped = f"{escaped[: _MAX_FOLDER - 17]}~{_digest(value)}"
    return escaped


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()[:16]


def partition_folders(values: list[str]) -> dict[str, str]:
    """:func:`partition_folder` for each value, made distinct on case-insensitive file systems.

    Values whose folders differ only in case (``Model`` and ``model``) all get ``~`` and a hash.
    """
    folders = {value: partition_folder(value) for value in values}
    by_folded: dict[str, list[str]] = {}
    for value, folder in folders.items():
        by_folded.setdefault(folder.casefold(), []).append(value)
    for clashing in by_folded.values():
        if len(clashing) > 1:
            for value in clashing:
                folders[value] = f"{folders[value][: _MAX_FOLDER - 17]}~{_digest(value)}"
    return folders


def _tables(store: Store) -> list[str]:
    rows = store.query(
        "SELECT table_name FROM duckdb_tables() WHERE schema_name = 'main' "
        "AND database_name = current_database() AND NOT internal AND NOT temporary "
        "ORDER BY table_name"
    )
    return [row["table_name"] for row in rows]


def _select(store: Store, table: str, fmt: str, where: str = "", *, unseal: bool = False) -> str:
    """The query a table is copied from, every column by name (the row is ``t``).

    Parquet marks JSON columns with a logical type that pandas and polars read as bytes, so they
    are written as plain text; JSONL keeps them as nested JSON values. Columns of
    :data:`SEALED_COLUMNS` are NULL in rows of sealed twins unless ``unseal``.
    """
    rows = store.query(
        "SELECT column_name, data_type FROM duckdb_columns() WHERE schema_name = 'main' "
        "AND database_name = current_database() AND table_name = ? ORDER BY column_index",
        [table],
    )
    sealed = {} if unseal else SEALED_COLUMNS.get(table, {})
    columns = []
    for r in rows:
        name, value = r["column_name"], f't."{r["column_name"]}"'
        if name in sealed:
            value = f"CASE WHEN {_SEALED_ROW[table]} THEN {sealed[name]} ELSE {value} END"
        if r["data_type"] == "JSON" and fmt == "parquet":
            value = f"CAST({value} AS VARCHAR)"
        columns.append(f'{value} AS "{name}"')
    return f'(SELECT {", ".join(columns)} FROM "{table}" AS t{where})'


def _quote_path(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def _prepare_out_dir(out_dir: Path, tables: list[str], fmt: str) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise AuditError(f"{out_dir} is a file: pass a folder to --out")
    clashes = [
        name
        for name in tables
        if (out_dir / name).exists() or (out_dir / f"{name}.{_EXTENSION[fmt]}").exists()
    ]
    if clashes:
        raise AuditError(
            f"{out_dir} already holds an export ({', '.join(clashes[:3])}): "
            "pass an empty or new folder to --out"
        )
    out_dir.mkdir(parents=True, exist_ok=True)


def _copy(store: Store, table: str, source: str, target: Path, fmt: str, params: list) -> None:
    try:
        store.con.execute(f"COPY {source} TO {_quote_path(target)} ({_COPY_FORMAT[fmt]})", params)
    except duckdb.Error as exc:
        raise AuditError(f"cannot export {table}: {str(exc).splitlines()[0]}") from None


def _export_partitioned(
    store: Store, table: str, column: str, out: Path, fmt: str, *, unseal: bool
) -> dict[str, Path]:
    """One folder per value of ``column`` (an empty folder when the table is empty)."""
    target = out / table
    target.mkdir()
    values = [
        r["v"] for r in store.query(f'SELECT DISTINCT "{column}" AS v FROM "{table}" ORDER BY v')
    ]
    folders = partition_folders(values)
    paths: dict[str, Path] = {}
    for value, folder in folders.items():
        (target / folder).mkdir()
        path = target / folder / f"data.{_EXTENSION[fmt]}"
        where = f' WHERE t."{column}" = ?'
        _copy(store, table, _select(store, table, fmt, where, unseal=unseal), path, fmt, [value])
        paths[value] = path
    return paths


def export_store(
    store: Store, out_dir: str | Path, fmt: str = "parquet", *, unseal: bool = False
) -> ExportResult:
    """Write every table of ``store`` under ``out_dir`` as ``fmt`` (parquet or jsonl).

    Sealed twins' text is left out (NULL) unless ``unseal``: an export is what gets handed to
    people and pipelines, and a twin that someone editing the spec has read no longer tells a
    spec patch from a real improvement.
    """
    if fmt not in EXPORT_FORMATS:
        raise AuditError(f"unknown export format {fmt!r}: use one of {', '.join(EXPORT_FORMATS)}")
    out = Path(out_dir)
    tables = _tables(store)
    _prepare_out_dir(out, tables, fmt)
    sealed = store.query(f"SELECT count(*) AS n FROM samples AS t WHERE {_SEALED_ROW['samples']}")
    result = ExportResult(out, fmt, sealed_samples=int(sealed[0]["n"]), unsealed=unseal)
    for table in tables:
        result.rows[table] = int(store.query(f'SELECT count(*) AS n FROM "{table}"')[0]["n"])
        column = PARTITIONED.get(table)
        if column is not None:
            result.partitions[table] = _export_partitioned(
                store, table, column, out, fmt, unseal=unseal
            )
            result.paths[table] = out / table
        else:
            target = out / f"{table}.{_EXTENSION[fmt]}"
            _copy(store, table, _select(store, table, fmt, unseal=unseal), target, fmt, [])
            result.paths[table] = target
    return result
