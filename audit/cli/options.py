"""Option types shared by several commands, declared once."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

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


def resolve_db(db: Path | None, config: Path | None = None) -> Path:
    """The database path: the --db flag (relative to the working folder), else the config's
    ``db`` (relative to the config file's folder), else ./audit.duckdb."""
    if db is not None:
        return db
    from audit.config import load_config

    return Path(load_config(config).db)
