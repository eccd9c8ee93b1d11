"""SQL over the history: read-only query execution, result formatting and schema listing.

``run_sql`` is what ``audit sql`` runs, from Python too: without ``allow_write`` it refuses
write statements before anything runs (DuckDB's own parser classifies each statement), and runs
the rest in a read-only transaction on the sandbox ``open_query_store`` opens: a read-only
connection that cannot read files (unless ``allow_files``), reach the network or load extensions,
with its settings locked. Given a path it opens that sandbox itself; given a store that lacks it
(one from :func:`audit.store.open_store`), it refuses, because DuckDB cannot add those settings
to a connection that is already open without keeping them for the rest of its life.
``format_result`` renders rows as csv, json, jsonl or markdown (the terminal table is drawn by the
CLI with rich). ``describe_schema`` lists every table and view with its comments.
"""

from __future__ import annotations

import csv
import datetime as dt
import decimal
import io
import itertools
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from audit.errors import AuditError
from audit.store import Store, open_store

FORMATS = ("table", "csv", "json", "jsonl", "markdown")
"""Output formats of ``audit sql``."""

READ_ONLY_PRAGMAS = frozenset(
    {
        "collations",
        "database_list",
        "database_size",
        "functions",
        "metadata_info",
        "platform",
        "show",
        "show_databases",
        "show_tables",
        "show_tables_expanded",
        "storage_info",
        "table_info",
        "user_agent",
        "version",
    }
)
"""Pragmas that only report on the database; the others change settings or read files
(``import_database``), so they need ``--write``."""

# Keywords of statements that change data, files, settings or extensions. Only PIVOT statements
# (DuckDB's MULTI type, which wraps whatever holds the pivot) are scanned for them.
_WRITE_KEYWORDS = frozenset(
    {
        "alter",
        "attach",
        "begin",
        "call",
        "checkpoint",
        "commit",
        "copy",
        "create",
        "deallocate",
        "delete",
        "detach",
        "drop",
        "execute",
        "export",
        "import",
        "insert",
        "install",
        "load",
        "merge",
        "pragma",
        "prepare",
        "reset",
        "rollback",
        "set",
        "truncate",
        "update",
        "use",
        "vacuum",
    }
)
_QUERY_STARTS = frozenset(
    {"pivot", "pivot_wider", "pivot_longer", "unpivot", "select", "from", "with", "(", "explain"}
)
# Table functions that write although they sit in a SELECT: checkpoint() rewrites the file.
_WRITING_FUNCTIONS = frozenset({"checkpoint", "force_checkpoint"})


def query_settings(*, allow_files: bool = False) -> dict[str, Any]:
    """DuckDB settings of a connection that runs SQL typed at the command line.

    Extensions are neither downloaded nor loaded on demand, Python variables are not scanned as
    tables and, unless ``allow_files``, no file or URL outside the database can be read or
    written. The configuration is locked last, so a query cannot ``SET`` its way back.
    """
    settings: dict[str, Any] = {
        "autoinstall_known_extensions": False,
        "autoload_known_extensions": False,
        "python_enable_replacements": False,
    }
    if not allow_files:
        settings["enable_external_access"] = False
    settings["lock_configuration"] = True
    return settings


def open_query_store(
    path: str | Path | None, *, write: bool = False, allow_files: bool = False
) -> Store:
    """Open the database for ``audit sql``: read-only with :func:`query_settings` unless ``write``.

    With ``write`` the store opens normally: the user asked to change things.
    """
    if write:
        return open_store(path)
    return open_store(path, read_only=True, settings=query_settings(allow_files=allow_files))


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


def _words(sql: str) -> list[tuple[int, str]]:
    """(offset, lower-cased text) of each token of ``sql``, comments left out."""
    tokens = duckdb.tokenize(sql)
    words = []
    for index, (start, kind) in enumerate(tokens):
        if kind == duckdb.token_type.comment:
            continue
        end = tokens[index + 1][0] if index + 1 < len(tokens) else len(sql)
        words.append((start, sql[start:end].strip().lower()))
    return words


def _with_article(phrase: str) -> str:
    return ("an " if phrase[:1].lower() in "aeiou" else "a ") + phrase


def _statement_type(statement: duckdb.Statement) -> duckdb.StatementType | None:
    try:
        return statement.type
    except ValueError:  # a type newer than the Python enum knows (UPDATE EXTENSIONS in 2.0)
        return None


def _parses_as_one_statement(sql: str) -> bool:
    try:
        return len(duckdb.extract_statements(sql)) == 1
    except duckdb.Error:
        return False


def _explained_statement(sql: str, words: list[tuple[int, str]]) -> str | None:
    """The text of the statement an EXPLAIN explains (after ANALYZE and any option list)."""
    index = 1  # words[0] is EXPLAIN
    while index < len(words) and words[index][1] in ("analyze", "analyse", "verbose"):
        index += 1
    if index < len(words) and words[index][1] == "(":
        rest = sql[words[index][0] :]
        if _parses_as_one_statement(rest):  # EXPLAIN (SELECT ...)
            return rest
        depth = 0
        while index < len(words):  # skip an option list such as (ANALYZE, FORMAT json)
            depth += {"(": 1, ")": -1}.get(words[index][1], 0)
            index += 1
            if depth == 0:
                break
    return sql[words[index][0] :] if index < len(words) else None


def _writing_function(words: list[tuple[int, str]]) -> str | None:
    """The first call of a table function that writes (``checkpoint(``), if any."""
    for (_, word), (_, following) in itertools.pairwise(words):
        if word.strip('"') in _WRITING_FUNCTIONS and following == "(":
            return word.strip('"')
    return None


def _refusal(statement: duckdb.Statement) -> str | None:
    """Why ``statement`` may not run read-only (a phrase), or None when it only reads."""
    sql = statement.query
    words = _words(sql)
    first = words[0][1] if words else ""
    kind = _statement_type(statement)
    writer = _writing_function(words)
    if writer is not None:
        return f"a {writer}() call (it rewrites the database file)"
    if kind == duckdb.StatementType.SELECT:  # also WITH, FROM, VALUES, DESCRIBE, SHOW, SUMMARIZE
        return None
    if kind == duckdb.StatementType.EXPLAIN:
        # EXPLAIN ANALYZE runs the statement it explains, so that statement must be a read too.
        inner = _explained_statement(sql, words)
        if inner is None or not _parses_as_one_statement(inner):
            return "an EXPLAIN whose statement cannot be checked"
        reason = _refusal(duckdb.extract_statements(inner)[0])
        return None if reason is None else f"an EXPLAIN of {reason}"
    if kind == duckdb.StatementType.PRAGMA:
        name = words[1][1] if len(words) > 1 else ""
        return None if name in READ_ONLY_PRAGMAS else f"PRAGMA {name}"
    if kind == duckdb.StatementType.MULTI:
        # DuckDB wraps a PIVOT, and whatever holds it (SELECT, EXPLAIN, CREATE TABLE AS, INSERT),
        # in one MULTI statement: a read starts like a query and uses no writing keyword.
        writes = [w for _, w in words if w in _WRITE_KEYWORDS]
        if first in _QUERY_STARTS and not writes:
            return None
        return _with_article(f"{(writes or [first])[0].upper()} statement")
    if first in ("with", "(") or not first:
        return _with_article(f"{kind.name if kind else 'unknown'} statement")
    return _with_article(f"{first.upper()} statement")


def check_read_only(sql: str) -> None:
    """Raise AuditError naming ``--write`` if any statement of ``sql`` could change anything.

    Reads are the SELECT-like statements (SELECT, WITH, FROM, VALUES, DESCRIBE, SHOW, SUMMARIZE,
    PIVOT), EXPLAIN of a read (EXPLAIN ANALYZE runs its statement) and the reporting pragmas of
    :data:`READ_ONLY_PRAGMAS`. Everything else is refused before anything runs.
    """
    for statement in parse_statements(sql):
        reason = _refusal(statement)
        if reason is not None:
            raise AuditError(f"refusing {reason}: audit sql is read-only; pass --write to allow it")


def run_sql(
    target: Store | str | Path,
    sql: str,
    *,
    allow_write: bool = False,
    allow_files: bool = False,
) -> QueryResult:
    """Run ``sql`` (one or more statements) as ``audit sql`` does; return the last one's result.

    ``target`` is a database path (opened with :func:`open_query_store` and closed again: the
    same connection settings as ``audit sql``) or a store from :func:`open_query_store`.
    Without ``allow_write`` every statement must pass :func:`check_read_only` before any runs,
    and they run in a read-only transaction on that sandbox, which cannot read files or URLs
    (unless ``allow_files``), install or load extensions, or change its settings. A store
    without the sandbox is refused with an AuditError naming the fix. With ``allow_write`` the
    statements run unchecked, as ``audit sql --write`` runs them. DuckDB errors become
    AuditError with DuckDB's message on one line.
    """
    if not isinstance(target, Store):
        with open_query_store(target, write=allow_write, allow_files=allow_files) as store:
            return run_sql(store, sql, allow_write=allow_write, allow_files=allow_files)
    store = target
    statements = parse_statements(sql)
    if allow_write:
        return _execute(store.con, statements)
    check_read_only(sql)
    _check_sandbox(store, allow_files=allow_files)
    try:
        store.con.execute("BEGIN TRANSACTION READ ONLY")
    except duckdb.TransactionException:
        raise AuditError(
            "cannot run a read-only query inside an open transaction: commit or roll it back first"
        ) from None
    try:
        return _execute(store.con, statements)
    finally:
        store.con.execute("ROLLBACK")


def _check_sandbox(store: Store, *, allow_files: bool) -> None:
    """Raise AuditError unless ``store`` is what :func:`open_query_store` opens for reads:
    read-only, with the :func:`query_settings` of this ``allow_files``."""
    wanted = {
        "enable_external_access": True,  # query_settings names it only to turn it off
        **query_settings(allow_files=allow_files),
    }
    rows = store.con.execute(
        "SELECT name, value FROM duckdb_settings() WHERE name IN (SELECT unnest(?))",
        [list(wanted)],
    ).fetchall()
    current = {name: value.lower() for name, value in rows}
    differing = [name for name, value in wanted.items() if current.get(name) != str(value).lower()]
    if store.read_only and not differing:
        return
    problem = (
        "is writable"
        if not store.read_only
        else f"has {differing[0]} = {current.get(differing[0])}"
    )
    opener = "open_query_store(path, allow_files=True)" if allow_files else "open_query_store(path)"
    raise AuditError(
        f"run_sql reads through the audit sql sandbox and this store {problem}: pass the "
        f"database path, or a store from audit.query.{opener}; pass allow_write=True to run "
        "trusted SQL unchecked"
    )


def _execute(con: duckdb.DuckDBPyConnection, statements: list[duckdb.Statement]) -> QueryResult:
    try:
        for statement in statements[:-1]:
            con.execute(statement)
        cursor = con.execute(statements[-1])
        columns = tuple(d[0] for d in cursor.description or [])
        rows = tuple(cursor.fetchall()) if columns else ()
    except duckdb.PermissionException as exc:
        raise AuditError(
            f"{_one_line(exc)}: audit sql reads only the database; pass --allow-files to let "
            "queries read local files"
        ) from None
    except duckdb.Error as exc:
        message = _one_line(exc)
        if "read-only mode" in message:  # e.g. nextval() in a SELECT: a write the parser misses
            message += ": audit sql is read-only; pass --write to allow it"
        raise AuditError(message) from None
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
