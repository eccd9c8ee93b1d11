"""Option types shared by several commands, declared once."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from audit.errors import AuditError

DbOption = Annotated[
    Path | None,
    typer.Option(
        "--db", help="DuckDB file (default: db from audit.toml, beside it; else ./audit.duckdb)."
    ),
]
ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", help="Config file (default: nearest audit.toml or \\[tool.audit])."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
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
    written to it (DuckDB locks the file); the store must be closed inside the block."""
    created = str(db_path) != ":memory:" and not db_path.exists()
    try:
        yield
    except AuditError:
        if created:
            for leftover in (db_path, db_path.with_name(db_path.name + ".wal")):
                leftover.unlink(missing_ok=True)
        raise


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
