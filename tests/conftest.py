"""Fixtures shared by every test module. Area-specific fixtures live beside their tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from audit.store import Store, open_store


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    """A fresh DuckDB file with the schema applied; always closed."""
    db = open_store(tmp_path / "audit.duckdb")
    try:
        yield db
    finally:
        db.close()
