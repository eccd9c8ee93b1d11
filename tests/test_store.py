"""The DuckDB store: migrations, batched writes, locking."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audit.errors import AuditError, StoreLockedError
from audit.store import SQL_VALUES_ROWS, open_store
from audit.store.schema import LATEST_VERSION, MIGRATIONS


def test_new_database_has_every_migration_recorded(tmp_path: Path) -> None:
    with open_store(tmp_path / "a.duckdb") as store:
        rows = store.query("SELECT version FROM schema_version ORDER BY version")
        assert [r["version"] for r in rows] == [m.version for m in MIGRATIONS]
        assert store.schema_version() == LATEST_VERSION


def test_reopening_applies_nothing_twice(tmp_path: Path) -> None:
    path = tmp_path / "a.duckdb"
    open_store(path).close()
    with open_store(path) as store:
        count = store.query("SELECT count(*) AS n FROM schema_version")[0]["n"]
    assert count == len(MIGRATIONS)


def test_every_table_view_and_column_is_commented(tmp_path: Path) -> None:
    with open_store(tmp_path / "a.duckdb") as store:
        relations = store.query(
            "SELECT table_name AS name, comment FROM duckdb_tables() "
            "WHERE schema_name = 'main' AND NOT internal AND NOT temporary "
            "UNION ALL SELECT view_name, comment FROM duckdb_views() "
            "WHERE schema_name = 'main' AND NOT internal AND NOT temporary"
        )
        assert {"samples", "v_rates", "schema_version"} <= {r["name"] for r in relations}
        assert [r["name"] for r in relations if not r["comment"]] == []
        undocumented = store.query(
            "SELECT table_name || '.' || column_name AS name FROM duckdb_columns() "
            "WHERE schema_name = 'main' AND NOT internal AND database_name = current_database() "
            "AND coalesce(comment, '') = '' ORDER BY ALL"
        )
        assert [r["name"] for r in undocumented] == []
        # The check sees view columns too (a view's columns are listed like a table's).
        n_view_columns = store.query(
            "SELECT count(*) AS n FROM duckdb_columns() WHERE table_name = 'v_findings'"
        )[0]["n"]
        assert n_view_columns >= 25


def test_insert_rows_writes_one_batch_and_respects_conflicts(tmp_path: Path) -> None:
    with open_store(tmp_path / "a.duckdb") as store:
        rows = [
            {"set_hash": f"sha256:{i}", "version": "1", "canary": "c", "n_scenarios": i}
            for i in range(3)
        ]
        assert store.insert_rows("heldout_sets", rows) == 3
        store.insert_rows("heldout_sets", rows[:1], on_conflict="ignore")
        changed = [{**rows[0], "n_scenarios": 99}]
        store.insert_rows("heldout_sets", changed, on_conflict="replace")
        got = store.query("SELECT set_hash, n_scenarios FROM heldout_sets ORDER BY set_hash")
    assert got == [
        {"set_hash": "sha256:0", "n_scenarios": 99},
        {"set_hash": "sha256:1", "n_scenarios": 1},
        {"set_hash": "sha256:2", "n_scenarios": 2},
    ]


def test_transaction_rolls_back_everything_on_error(tmp_path: Path) -> None:
    with open_store(tmp_path / "a.duckdb") as store:
        with pytest.raises(RuntimeError), store.transaction():
            store.insert_rows(
                "heldout_sets", [{"set_hash": "x", "version": "1", "canary": "c", "n_scenarios": 1}]
            )
            raise RuntimeError("boom")
        assert store.query("SELECT count(*) AS n FROM heldout_sets")[0]["n"] == 0


def test_second_writer_process_gets_one_line_error(tmp_path: Path) -> None:
    path = tmp_path / "held.duckdb"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from audit.store import open_store; "
            f"s = open_store({str(path)!r}); print('ready', flush=True); time.sleep(30)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        with pytest.raises(StoreLockedError) as info:
            open_store(path)
        assert "in use by another process" in str(info.value)
        assert "\n" not in str(info.value)
    finally:
        holder.kill()
        holder.wait()


def test_read_only_open_of_missing_file_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(AuditError, match="no database"):
        open_store(tmp_path / "missing.duckdb", read_only=True)


def test_garbage_file_is_a_user_error(tmp_path: Path) -> None:
    path = tmp_path / "junk.duckdb"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(AuditError):
        open_store(path)


# -- Arrow batches built from buffers ----------------------------------------------------------

_TYPED_COLUMNS = {
    "text": "VARCHAR",
    "doc": "JSON",
    "small": "INTEGER",
    "big": "BIGINT",
    "ratio": "DOUBLE",
    "flag": "BOOLEAN",
    "moment": "TIMESTAMPTZ",
}
_ZONES = st.sampled_from(
    [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(-timedelta(hours=8))]
)
_VALUES = {
    "text": st.none() | st.text(max_size=12),
    "doc": st.none()
    | st.text(max_size=5).map(json.dumps)
    | st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    "small": st.none() | st.integers(-(2**31), 2**31 - 1),
    "big": st.none() | st.integers(-(2**63), 2**63 - 1),
    # An int among floats takes the pa.array path; both must store the same.
    "ratio": st.none() | st.floats(allow_nan=False) | st.integers(-(2**40), 2**40),
    "flag": st.none() | st.booleans(),
    "moment": st.none() | st.datetimes(timezones=_ZONES),
}


@settings(max_examples=150, deadline=None)
@given(rows=st.lists(st.fixed_dictionaries(_VALUES), min_size=1, max_size=3 * SQL_VALUES_ROWS))
def test_rows_as_sql_values_or_built_arrow_store_what_pa_array_stores(rows: list[dict]) -> None:
    import pyarrow as pa

    body = ", ".join(f"{name} {kind}" for name, kind in _TYPED_COLUMNS.items())
    numbered = [{"n": n, **row} for n, row in enumerate(rows)]
    with open_store(":memory:") as store:
        for table in ("one_by_one", "batch", "plain"):
            store.con.execute(f"CREATE TABLE {table} (n INTEGER, {body})")
        for row in numbered:  # SQL parameters
            store.insert_rows("one_by_one", [row])
        store.insert_rows("batch", numbered)  # Arrow built from buffers, past a few rows
        plain = {
            name: pa.array(
                [
                    json.dumps(r[name]) if name == "doc" and isinstance(r[name], dict) else r[name]
                    for r in numbered
                ]
            )
            for name in numbered[0]
        }
        store.insert_rows("plain", pa.table(plain))
        expected = store.query("SELECT * FROM plain ORDER BY n")
        assert len(expected) == len(rows)
        assert store.query("SELECT * FROM batch ORDER BY n") == expected
        assert store.query("SELECT * FROM one_by_one ORDER BY n") == expected


def test_writing_plain_rows_imports_neither_pandas_nor_a_few_rows_pyarrow() -> None:
    # pa.array imports pandas (0.2-0.3 s per process); a run's own row needs no pyarrow at all.
    script = (
        "import sys\n"
        "from datetime import datetime, UTC\n"
        "from audit.store import open_store\n"
        "def run(n):\n"
        "    return {'run_id': f'r{n}', 'command': 'run', 'started_at': datetime.now(UTC),\n"
        "            'set_hash': 's', 'tool_version': 'v', 'config': {'a': n}, 'planned': n,\n"
        "            'skipped': 0, 'mode': 'live'}\n"
        "with open_store(':memory:') as store:\n"
        "    store.insert_rows('runs', [run(0)])\n"
        "    loaded = ['pyarrow' in sys.modules]\n"
        "    store.insert_rows('runs', [run(n) for n in range(1, 40)])\n"
        "    assert store.query('SELECT sum(planned) AS n FROM runs') == [{'n': 780}]\n"
        "print(loaded + ['pyarrow' in sys.modules, 'pandas' in sys.modules])\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[False, True, False]"


def test_opening_an_up_to_date_database_for_writing_changes_no_byte(tmp_path: Path) -> None:
    path = tmp_path / "a.duckdb"
    open_store(path).close()
    before = path.read_bytes()
    with open_store(path) as store:
        assert store.schema_version() == LATEST_VERSION
    assert path.read_bytes() == before  # no migration, no COMMENT ON: nothing to write


def test_failing_commands_leave_the_file_byte_identical(tmp_path: Path) -> None:
    from analysis_fixtures import (
        BASE_SPEC,
        GENERIC_EDIT,
        add_revisions,
        add_samples,
        planted,
        uniform,
    )
    from typer.testing import CliRunner

    from audit.cli import app

    db = tmp_path / "audit.duckdb"
    with open_store(db) as store:
        add_revisions(store, [BASE_SPEC, BASE_SPEC + GENERIC_EDIT])
        add_samples(store, "m", BASE_SPEC, planted(uniform(0.5)), epochs=2)
    bad_lines = tmp_path / "bad.jsonl"
    bad_lines.write_text('{"model": "m", "epoch": 0}\n', encoding="utf-8")
    failing = [
        ["import", "samples", str(bad_lines)],
        ["sql", "--write", "INSERT INTO no_such_table VALUES (1)"],
        ["detect", "--source", "no-such-source"],
        ["run", "--model", "no-such-model", "--rev", "0"],
        ["judge", "--judge-model", "j", "--api-key-env", "NO_SUCH_KEY_VARIABLE"],
    ]
    before = db.read_bytes()
    for args in failing:
        result = CliRunner().invoke(app, [*args, "--db", str(db)])
        assert result.exit_code == 2, (args, result.output)
        assert db.read_bytes() == before, args
        assert not db.with_name(db.name + ".wal").exists(), args
