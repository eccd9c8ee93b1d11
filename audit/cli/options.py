"""Option types shared by several commands, declared once."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from audit.errors import AuditError

if TYPE_CHECKING:
    from audit.store import Store

DbOption = Annotated[
    Path | None,
    typer.Option(
        "--db", help="DuckDB file (default: db from audit.toml, beside it; else ./audit.duckdb)."
    ),
]
ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        help="Config file, - for standard input (default: nearest audit.toml or \\[tool.audit]).",
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
SourceIdAlias = Annotated[
    str | None,
    typer.Option("--source-id", hidden=True, help="Former name of --source, still accepted."),
]
"""The spec source option is ``--source`` on every command; ``--source-id`` (its name on the
``specs`` commands before) stays accepted, unlisted."""
HeldoutOption = Annotated[
    Path | None,
    typer.Option(
        "--heldout",
        help="Held-out set folder (default: heldout.path in audit.toml, else the starter set "
        "shipped with specdrift).",
    ),
]


def resolve_db(db: Path | None, config: Path | None = None) -> Path:
    """The database path: the --db flag (relative to the working folder), else the config's
    ``db`` (relative to the config file's folder), else ./audit.duckdb."""
    if db is not None:
        return db
    from audit.config import load_config

    return Path(load_config(config).db)


def heldout_override(flag: Path | None) -> dict[str, str | None]:
    """The ``--heldout`` flag as a config override (flags are relative to the working folder)."""
    return {"heldout.path": None if flag is None else str(flag)}


def resolve_heldout(flag: Path | None, config: Path | None = None) -> Path | None:
    """The held-out set folder: the --heldout flag, else ``heldout.path`` of the config (relative
    to the config file's folder), else None (the starter set)."""
    if flag is not None:
        return flag
    from audit.config import load_config

    configured = load_config(config).heldout.path
    return Path(configured) if configured else None


@contextmanager
def new_database_removed_on_error(db_path: Path) -> Iterator[None]:
    """A database file that a failing command created is removed again, so a mistyped flag or a
    bad input never leaves a new (empty, migrated) database behind. Only this process can have
    written to it (DuckDB locks the file); the store must be closed inside the block. A new file
    that already holds rows when the error comes (a run that stored samples, then failed) is
    kept: those rows are the user's."""
    created = str(db_path) != ":memory:" and not db_path.exists()
    try:
        yield
    except AuditError:
        if created and db_path.exists() and not _holds_rows(db_path):
            for leftover in (db_path, db_path.with_name(db_path.name + ".wal")):
                leftover.unlink(missing_ok=True)
        raise


def _holds_rows(db_path: Path) -> bool:
    """Whether any table but the migrations' own record holds a row (True when unsure)."""
    import duckdb

    try:
        con = duckdb.connect(str(db_path), read_only=True)
    except duckdb.Error:
        return True
    try:
        tables = con.execute(
            "SELECT table_name FROM duckdb_tables() WHERE table_name <> 'schema_version'"
        ).fetchall()
        return any(
            con.execute(f'SELECT 1 FROM "{name}" LIMIT 1').fetchone() is not None
            for (name,) in tables
        )
    finally:
        con.close()


@contextmanager
def writable_store(db_path: Path) -> Iterator[Store]:
    """The store for a command that writes, opened (and created) here; a new file is removed
    again when the command fails before writing anything (see
    :func:`new_database_removed_on_error`)."""
    from audit.store import open_store

    with new_database_removed_on_error(db_path), open_store(db_path) as store:
        yield store


def discard_stdout() -> None:
    """Point stdout at /dev/null after its reader went away (a closed pipe), so the
    interpreter's last flush at exit cannot fail again and print a traceback."""
    try:
        fd = sys.stdout.fileno()
    except (OSError, ValueError, AttributeError):
        return  # not a real file (a test runner's buffer): nothing left to fail at exit
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


def chosen_source(source: str | None, alias: str | None) -> str | None:
    """The spec source given as ``--source`` or, under its former name, ``--source-id``."""
    if source is not None and alias is not None and source != alias:
        raise AuditError(
            f"--source {source!r} and --source-id {alias!r} disagree: --source-id is the old "
            "name of --source; give one"
        )
    return source if source is not None else alias


STDIN = Path("-")
"""``-`` in place of a file to read: standard input."""


def read_text_or_stdin(path: Path, what: str = "") -> str:
    """The text of a file, or of standard input for ``-``; one-line errors naming ``what`` the
    file is for."""
    try:
        if path == STDIN:
            return sys.stdin.read()
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise AuditError(f"cannot read {what + ' ' if what else ''}{path}: {exc}") from None


@contextmanager
def stdin_as_file(path: Path, *, suffix: str | Callable[[bytes], str] = "") -> Iterator[Path]:
    """``path`` itself, or for ``-`` a temporary file holding what standard input gave, for
    library functions that read files by path (and may read them twice, or seek); removed
    afterwards. ``suffix`` is the file's suffix, or a function choosing it from the content
    (readers that tell formats apart by suffix)."""
    if path != STDIN:
        yield path
        return
    import tempfile

    data = sys.stdin.buffer.read()
    if not data:
        raise AuditError("standard input is empty: pipe the file in, or give its path instead of -")
    with tempfile.TemporaryDirectory(prefix="specdrift-stdin-") as folder:
        ending = suffix(data) if callable(suffix) else suffix
        target = Path(folder) / f"stdin{ending}"
        target.write_bytes(data)
        yield target
