"""The DuckDB store: opening the file, applying migrations, writing rows in batches.

Every stage reads from and writes to one DuckDB file, so any stage can be rerun alone. Writes go
through :meth:`Store.insert_rows`, which hands DuckDB one Arrow table per batch instead of
inserting row by row (a few rows go as SQL parameters). pyarrow (with numpy, about 0.1 s to
import) is loaded by the first batch, so a command that only reads, or writes a row or two,
does without it.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb

from audit.errors import AuditError, StoreLockedError
from audit.store.schema import LATEST_VERSION, MIGRATIONS

if TYPE_CHECKING:
    import pyarrow as pa

DEFAULT_DB_PATH = Path("audit.duckdb")

_LOCK_PATTERNS = ("could not set lock", "conflicting lock")


class Store:
    """An open DuckDB database with the specdrift schema applied."""

    def __init__(self, con: duckdb.DuckDBPyConnection, path: Path | None, read_only: bool) -> None:
        self.con = con
        self.path = path
        self.read_only = read_only
        self._transaction_depth = 0

    def close(self) -> None:
        self.con.close()

    @contextmanager
    def released(self, wait_s: float = 3600.0, retry_s: float = 0.1) -> Iterator[None]:
        """Close the file for the length of the block, then open it again.

        A batch sweep polls its batches for hours between writes; released, the file can be
        opened meanwhile (``audit batch status`` in another terminal). Reopening waits while
        another process holds the file, up to ``wait_s``. An in-memory store is kept open.
        """
        if self.path is None or self.read_only:
            yield
            return
        self.con.close()
        try:
            yield
        finally:
            self.con = _reconnect(self.path, wait_s, retry_s)

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading -----------------------------------------------------------------------------

    def query(
        self, sql: str, params: Sequence[Any] | Mapping[str, Any] | None = None
    ) -> list[dict]:
        """Run a query and return its rows as dicts (convenient for small results)."""
        cursor = self.con.execute(sql, params) if params is not None else self.con.execute(sql)
        columns = [d[0] for d in cursor.description or []]
        return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]

    def schema_version(self) -> int:
        return _current_version(self.con)

    # -- writing -----------------------------------------------------------------------------

    def insert_rows(
        self,
        table: str,
        rows: Sequence[Mapping[str, Any]] | pa.Table,
        *,
        on_conflict: str = "error",
    ) -> int:
        """Insert a batch of rows (dicts or an Arrow table) by column name; returns rows given.

        ``on_conflict`` is ``"error"``, ``"ignore"`` (keep the stored row) or ``"replace"``.
        Columns missing from the batch take their defaults. Up to :data:`SQL_VALUES_ROWS` dicts
        go in as SQL parameters, more as one Arrow batch.
        """
        if not _IDENTIFIER.fullmatch(table):
            raise ValueError(f"not a table name: {table!r}")
        verb = {"error": "INSERT", "ignore": "INSERT OR IGNORE", "replace": "INSERT OR REPLACE"}[
            on_conflict
        ]
        if isinstance(rows, Sequence):
            if not rows:
                return 0
            if len(rows) <= SQL_VALUES_ROWS:
                return self._insert_values(table, rows, verb)
            batch = _to_arrow(table, rows, self.con)
        else:
            batch = rows
        if batch.num_rows == 0:
            return 0
        self.con.register("_specdrift_batch", batch)
        try:
            self.con.execute(f"{verb} INTO {table} BY NAME SELECT * FROM _specdrift_batch")
        finally:
            self.con.unregister("_specdrift_batch")
        return batch.num_rows

    def _insert_values(self, table: str, rows: Sequence[Mapping[str, Any]], verb: str) -> int:
        types = _column_types(self.con, table)
        names = _known_columns(table, rows, types)
        json_columns = {name for name in names if types[name] == "JSON"}
        params = [
            json.dumps(row[name])
            if name in json_columns and row[name] is not None and not isinstance(row[name], str)
            else row[name]
            for row in rows
            for name in names
        ]
        columns = ", ".join(f'"{name}"' for name in names)
        values = ", ".join(["(" + ", ".join("?" * len(names)) + ")"] * len(rows))
        self.con.execute(f"{verb} INTO {table} ({columns}) VALUES {values}", params)
        return len(rows)

    @contextmanager
    def transaction(self) -> Iterator[Store]:
        """Run a block in one transaction: all of its writes land, or none do.

        A block inside another ``transaction()`` joins the outer one (DuckDB has no nested
        transactions), so a helper that writes in a transaction of its own can be part of a
        larger all-or-nothing write, as an import's registration of the held-out set is.
        """
        if self._transaction_depth:
            self._transaction_depth += 1
            try:
                yield self
            finally:
                self._transaction_depth -= 1
            return
        self.con.execute("BEGIN TRANSACTION")
        self._transaction_depth = 1
        try:
            yield self
        except BaseException:
            self.con.execute("ROLLBACK")
            raise
        else:
            self.con.execute("COMMIT")
        finally:
            self._transaction_depth = 0


_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

SQL_VALUES_ROWS = 8
"""Batches of up to this many dict rows are inserted as SQL parameters rather than Arrow: as
quick for a few rows, and a command that writes only a run's row or a finding needs no pyarrow
(0.1 s to import, and ``pa.array`` imports pandas: 0.2-0.3 s more)."""


def _reconnect(path: Path, wait_s: float, retry_s: float) -> duckdb.DuckDBPyConnection:
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return duckdb.connect(str(path))
        except duckdb.IOException as exc:
            locked = any(p in str(exc).lower() for p in _LOCK_PATTERNS)
            if not locked or time.monotonic() > deadline:
                raise StoreLockedError(
                    f"database {path} stayed in use by another process: close it, then run the "
                    "command again (a batch sweep resumes where it stopped)"
                ) from None
            time.sleep(retry_s)


def _column_types(con: duckdb.DuckDBPyConnection, table: str) -> dict[str, str]:
    rows = con.execute(
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = ?",
        [table],
    ).fetchall()
    if not rows:
        raise ValueError(f"unknown table {table!r}")
    return dict(rows)


def _to_arrow(
    table: str, rows: Sequence[Mapping[str, Any]], con: duckdb.DuckDBPyConnection
) -> pa.Table:
    """Build an Arrow table from dicts, typing JSON columns as strings so DuckDB casts them.

    Columns of plain values are laid out from their buffers (:mod:`audit.store.arrow_columns`),
    because ``pa.array`` imports pandas (0.2-0.3 s, once per process); anything else goes
    through ``pa.array``.
    """
    import pyarrow as pa

    from audit.store import arrow_columns

    if not rows:
        return pa.table({})
    types = _column_types(con, table)
    names = _known_columns(table, rows, types)
    columns: dict[str, pa.Array] = {}
    for name in names:
        values = [row[name] for row in rows]
        if types[name] == "JSON":
            values = [v if v is None or isinstance(v, str) else json.dumps(v) for v in values]
        column = arrow_columns.for_duckdb_type(values, types[name])
        columns[name] = pa.array(values) if column is None else column
    return pa.table(columns)


def _known_columns(
    table: str, rows: Sequence[Mapping[str, Any]], types: Mapping[str, str]
) -> list[str]:
    """The columns the first row names; ValueError if the table lacks one of them."""
    names = list(rows[0].keys())
    unknown = [n for n in names if n not in types]
    if unknown:
        raise ValueError(f"table {table} has no column(s) {unknown}")
    return names


def _current_version(con: duckdb.DuckDBPyConnection) -> int:
    exists = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'schema_version'"
    ).fetchone()
    if not exists or exists[0] == 0:
        return 0
    row = con.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()
    return int(row[0]) if row else 0


def pending_migrations(con: duckdb.DuckDBPyConnection) -> list[int]:
    current = _current_version(con)
    return [m.version for m in MIGRATIONS if m.version > current]


def migrate(con: duckdb.DuckDBPyConnection) -> list[int]:
    """Apply pending migrations, each in its own transaction; return the versions applied.

    A database already at :data:`LATEST_VERSION` is only read: DuckDB rewrites the file for any
    statement that changes the catalog, a ``COMMENT ON`` included, so running them on every open
    would leave a command that fails with a file whose bytes differ from before.
    """
    current = _current_version(con)
    if current > LATEST_VERSION:
        raise AuditError(
            f"database schema version {current} is newer than this specdrift "
            f"({LATEST_VERSION}): upgrade specdrift"
        )
    if current == LATEST_VERSION:
        return []
    con.execute(
        "CREATE TABLE IF NOT EXISTS schema_version ("
        " version INTEGER PRIMARY KEY, description VARCHAR NOT NULL,"
        " applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
    )
    con.execute(
        "COMMENT ON TABLE schema_version IS 'Schema migrations applied to this database, in order.'"
    )
    applied: list[int] = []
    for migration in MIGRATIONS:
        if migration.version <= current:
            continue
        con.execute("BEGIN TRANSACTION")
        try:
            con.execute(migration.sql)
            con.execute(
                "INSERT INTO schema_version (version, description) VALUES (?, ?)",
                [migration.version, migration.description],
            )
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")
        applied.append(migration.version)
    return applied


def open_store(
    path: str | Path | None = None,
    *,
    read_only: bool = False,
    settings: Mapping[str, Any] | None = None,
) -> Store:
    """Open (creating if needed) the DuckDB database at ``path`` and bring its schema up to date.

    ``None`` opens ``audit.duckdb`` in the working folder; ``":memory:"`` an in-memory database.
    ``settings`` are DuckDB configuration options applied when the database starts (see
    :func:`audit.query.query_settings`). A file held by another process raises
    :class:`StoreLockedError` with a one-line message.
    """
    target = DEFAULT_DB_PATH if path is None else path
    in_memory = str(target) == ":memory:"
    db_path = None if in_memory else Path(target)
    if db_path is not None and read_only and not db_path.exists():
        raise AuditError(f"no database at {db_path}: run a sync or the demo first, or pass --db")
    if db_path is not None and db_path.is_dir():
        raise AuditError(f"{db_path} is a folder, not a DuckDB file: pass a file path with --db")
    try:
        con = duckdb.connect(str(target), read_only=read_only, config=dict(settings or {}))
    except duckdb.ConnectionException as exc:
        # DuckDB shares one database per file within a process, with one configuration.
        raise AuditError(
            f"database {target} is already open in this process with other settings "
            f"({str(exc).splitlines()[0]}): close it first"
        ) from None
    except duckdb.IOException as exc:
        message = str(exc).lower()
        if any(p in message for p in _LOCK_PATTERNS):
            raise StoreLockedError(
                f"database {target} is in use by another process: wait for it to finish "
                "or use another --db"
            ) from None
        raise AuditError(f"cannot open database {target}: {str(exc).splitlines()[0]}") from None
    except duckdb.Error as exc:
        raise AuditError(
            f"{target} is not a usable DuckDB database ({str(exc).splitlines()[0]}): "
            "pass another --db"
        ) from None
    if not read_only:
        migrate(con)
    elif pending_migrations(con):
        con.close()
        raise AuditError(
            f"database {target} has an older schema: run any writing command "
            "(e.g. audit specs sync) once to migrate it"
        )
    return Store(con, db_path, read_only)
