"""Export every table of the store to Parquet or JSONL files, through DuckDB's COPY.

Layout under the output folder: ``<table>.parquet`` (or ``.jsonl``) per table, except samples,
which are partitioned by model as ``samples/model=<name>/data_0.<ext>`` (hive style, so DuckDB,
pandas, polars and Spark read the folder back with a ``model`` column; names are URL-escaped).
JSON columns are text in Parquet and nested values in JSONL. Views are not exported:
they are derived from the tables and rebuilt by any specdrift database.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from audit.errors import AuditError
from audit.store import Store

EXPORT_FORMATS = ("parquet", "jsonl")
"""File formats of ``audit export``."""

PARTITIONED = {"samples": "model"}
"""Tables written as hive partitions, with their partition column."""

_COPY_FORMAT = {"parquet": "FORMAT parquet", "jsonl": "FORMAT json"}
_EXTENSION = {"parquet": "parquet", "jsonl": "jsonl"}


@dataclass(frozen=True)
class ExportResult:
    """Where each table went and how many rows it had."""

    out_dir: Path
    fmt: str
    rows: dict[str, int] = field(default_factory=dict)
    paths: dict[str, Path] = field(default_factory=dict)

    def line(self) -> str:
        """One-line summary for the CLI."""
        total = sum(self.rows.values())
        return f"exported {len(self.rows)} tables ({total} rows) as {self.fmt} to {self.out_dir}"


def _tables(store: Store) -> list[str]:
    rows = store.query(
        "SELECT table_name FROM duckdb_tables() WHERE schema_name = 'main' "
        "AND NOT internal AND NOT temporary ORDER BY table_name"
    )
    return [row["table_name"] for row in rows]


def _select(store: Store, table: str, fmt: str) -> str:
    """The query a table is copied from.

    Parquet marks JSON columns with a logical type that pandas and polars read as bytes, so they
    are written as plain text; JSONL keeps them as nested JSON values.
    """
    if fmt != "parquet":
        return f'"{table}"'
    rows = store.query(
        "SELECT column_name, data_type FROM duckdb_columns() WHERE schema_name = 'main' "
        "AND table_name = ? ORDER BY column_index",
        [table],
    )
    columns = [
        f'CAST("{r["column_name"]}" AS VARCHAR) AS "{r["column_name"]}"'
        if r["data_type"] == "JSON"
        else f'"{r["column_name"]}"'
        for r in rows
    ]
    return f'(SELECT {", ".join(columns)} FROM "{table}")'


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


def export_store(store: Store, out_dir: str | Path, fmt: str = "parquet") -> ExportResult:
    """Write every table of ``store`` under ``out_dir`` as ``fmt`` (parquet or jsonl)."""
    if fmt not in EXPORT_FORMATS:
        raise AuditError(f"unknown export format {fmt!r}: use one of {', '.join(EXPORT_FORMATS)}")
    out = Path(out_dir)
    tables = _tables(store)
    _prepare_out_dir(out, tables, fmt)
    result = ExportResult(out, fmt)
    for table in tables:
        count = int(store.query(f'SELECT count(*) AS n FROM "{table}"')[0]["n"])
        partition = PARTITIONED.get(table)
        if partition is not None:
            target = out / table
            options = f"{_COPY_FORMAT[fmt]}, PARTITION_BY ({partition}), FILE_EXTENSION "
            options += f"'{_EXTENSION[fmt]}'"
            if count == 0:
                # A partitioned COPY of no rows writes nothing; an empty folder says "no samples".
                target.mkdir()
                options = ""
        else:
            target = out / f"{table}.{_EXTENSION[fmt]}"
            options = _COPY_FORMAT[fmt]
        if options:
            try:
                source = _select(store, table, fmt)
                store.con.execute(f"COPY {source} TO {_quote_path(target)} ({options})")
            except duckdb.Error as exc:
                raise AuditError(f"cannot export {table}: {str(exc).splitlines()[0]}") from None
        result.rows[table] = count
        result.paths[table] = target
    return result
