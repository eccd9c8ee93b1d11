"""SQL over the history: read-only query execution, result formatting and schema listing.

``run_sql`` refuses write statements before anything runs (DuckDB's own parser classifies each
statement), so a typo'd ``DELETE`` cannot touch the history unless the caller asked for writes.
``format_result`` renders rows as csv, json, jsonl or markdown (the terminal table is drawn by the
CLI with rich). ``describe_schema`` lists every table and view with its comments.
"""

from __future__ import annotations

import csv
import datetime as dt
import decimal
import io
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import duckdb

from audit.errors import AuditError
from audit.store import Store

FORMATS = ("table", "csv", "json", "jsonl", "markdown")
"""Output formats of ``audit sql``."""

# DESCRIBE and SHOW parse as SELECT; WITH ... SELECT too.
_READ_TYPES = frozenset(
    {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN, duckdb.StatementType.PRAGMA}
)


@dataclass(frozen=True)
class QueryResult:
    """Column names and rows of the last statement of a query."""

    columns: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]

    def as_dicts(self) -> list[dict[str, Any]]:
        """Rows as dicts keyed by column name."""
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]


@dataclass(frozen=True)
class ColumnInfo:
    """One column of a table or view."""

    name: str
    data_type: str
    comment: str | None


@dataclass(frozen=True)
class RelationInfo:
    """One table or view with its comment and columns."""

    name: str
    kind: str
    comment: str | None
    columns: tuple[ColumnInfo, ...]

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (what ``audit schema --json`` prints)."""
        return {
            "name": self.name,
            "kind": self.kind,
            "comment": self.comment,
            "columns": [
                {"name": c.name, "type": c.data_type, "comment": c.comment} for c in self.columns
            ],
        }


def _one_line(exc: BaseException) -> str:
    """DuckDB's message squeezed onto one line (it puts carets and context on later lines)."""
    kept: list[str] = []
    for part in str(exc).splitlines():
        if part.startswith("LINE "):
            break  # the echoed query with a caret under it: noise on one line
        if part.strip():
            kept.append(part.strip())
    return " ".join(kept)


def parse_statements(sql: str) -> list[duckdb.Statement]:
    """Split ``sql`` into statements with DuckDB's parser; a syntax error is an AuditError."""
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise AuditError(_one_line(exc)) from None
    if not statements:
        raise AuditError("no SQL statement given: pass a query or --file query.sql")
    return statements


def check_read_only(sql: str) -> None:
    """Raise AuditError naming ``--write`` if any statement of ``sql`` could change data."""
    for statement in parse_statements(sql):
        if statement.type not in _READ_TYPES:
            kind = statement.type.name
            raise AuditError(
                f"refusing a {kind} statement: audit sql is read-only; pass --write to allow it"
            )


def run_sql(store: Store, sql: str, *, allow_write: bool = False) -> QueryResult:
    """Run ``sql`` (one or more statements) and return the result of the last one.

    Without ``allow_write`` anything but SELECT / WITH / EXPLAIN / PRAGMA / DESCRIBE / SHOW is
    refused before execution. DuckDB errors become AuditError with DuckDB's message on one line.
    """
    if not allow_write:
        check_read_only(sql)
    statements = parse_statements(sql)
    try:
        for statement in statements[:-1]:
            store.con.execute(statement)
        cursor = store.con.execute(statements[-1])
        columns = tuple(d[0] for d in cursor.description or [])
        rows = tuple(cursor.fetchall()) if columns else ()
    except duckdb.Error as exc:
        raise AuditError(_one_line(exc)) from None
    return QueryResult(columns, rows)


# -- formatting ---------------------------------------------------------------------------------


def _jsonable(value: Any) -> Any:
    """A value JSON can hold; timestamps as ISO 8601, decimals as floats, bytes as hex."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, bytes | bytearray):
        return value.hex()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return str(value)


def cell_text(value: Any) -> str:
    """How one value reads in a table or CSV cell (NULL as empty, lists as JSON)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, dict | list | tuple):
        return json.dumps(_jsonable(value), ensure_ascii=False)
    return str(_jsonable(value))


def _markdown_cell(value: Any) -> str:
    # Pipes would split the cell and newlines end the table row.
    return cell_text(value).replace("|", "\\|").replace("\n", "<br>")


def format_result(result: QueryResult, fmt: str) -> str:
    """Render ``result`` as ``csv``, ``json`` (one array), ``jsonl`` or ``markdown`` text."""
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(result.columns)
        writer.writerows([cell_text(v) for v in row] for row in result.rows)
        return buffer.getvalue()
    if fmt == "json":
        return json.dumps(_jsonable(result.as_dicts()), ensure_ascii=False, indent=2) + "\n"
    if fmt == "jsonl":
        return "".join(
            json.dumps(_jsonable(row), ensure_ascii=False) + "\n" for row in result.as_dicts()
        )
    if fmt == "markdown":
        lines = [
            "| " + " | ".join(result.columns) + " |",
            "|" + "|".join("---" for _ in result.columns) + "|",
        ]
        lines += ["| " + " | ".join(_markdown_cell(v) for v in row) + " |" for row in result.rows]
        return "\n".join(lines) + "\n"
    raise AuditError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")


# -- schema -------------------------------------------------------------------------------------


def describe_schema(store: Store, names: Sequence[str] | None = None) -> list[RelationInfo]:
    """Every table and view of the main schema (or only ``names``), with comments, by name."""
    relations = store.query(
        "SELECT table_name AS name, 'table' AS kind, comment FROM duckdb_tables() "
        "WHERE schema_name = 'main' AND NOT internal AND NOT temporary "
        "UNION ALL SELECT view_name, 'view', comment FROM duckdb_views() "
        "WHERE schema_name = 'main' AND NOT internal AND NOT temporary ORDER BY kind, name"
    )
    columns = store.query(
        "SELECT table_name, column_name, data_type, comment FROM duckdb_columns() "
        "WHERE schema_name = 'main' AND NOT internal ORDER BY table_name, column_index"
    )
    by_relation: dict[str, list[ColumnInfo]] = {}
    for col in columns:
        info = ColumnInfo(col["column_name"], col["data_type"], col["comment"] or None)
        by_relation.setdefault(col["table_name"], []).append(info)
    wanted = set(names) if names else None
    if wanted:
        unknown = wanted - {r["name"] for r in relations}
        if unknown:
            raise AuditError(
                f"no table or view {', '.join(sorted(unknown))}: run `audit schema` for the list"
            )
    return [
        RelationInfo(r["name"], r["kind"], r["comment"] or None, tuple(by_relation[r["name"]]))
        for r in relations
        if wanted is None or r["name"] in wanted
    ]


def format_schema(relations: Sequence[RelationInfo]) -> str:
    """Plain-text listing: each relation with its comment, then its columns with theirs."""
    out: list[str] = []
    for relation in relations:
        out.append(f"{relation.kind} {relation.name}")
        if relation.comment:
            out.append(f"  {relation.comment}")
        width = max((len(c.name) for c in relation.columns), default=0)
        for column in relation.columns:
            note = f"  {column.comment}" if column.comment else ""
            out.append(f"    {column.name.ljust(width)}  {column.data_type}{note}")
        out.append("")
    return "\n".join(out)
