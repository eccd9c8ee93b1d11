"""``audit export``: every table to Parquet or JSONL, read back exactly (DuckDB, pandas, polars)."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pandas as pd
import polars as pl
import pytest
from typer.testing import CliRunner

from audit.cli import app
from audit.errors import AuditError
from audit.io import export_store, import_samples
from audit.spec_history import sync_spec_history
from audit.spec_history.replay import replay_specs_history
from audit.store import Store, open_store

MODELS = ("ext-model", "org/model v2")  # the second needs escaping in a partition path


@pytest.fixture(scope="module")
def spec_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return replay_specs_history(tmp_path_factory.mktemp("export") / "specs")


@pytest.fixture
def filled(store: Store, spec_repo: Path, tmp_path: Path) -> Store:
    """Synced spec history plus imported samples of two models, a finding and an estimate."""
    sync_spec_history(store, spec_repo, "spec/model-spec.md", source_id="demo")
    shas = [r["sha"] for r in store.query("SELECT sha FROM spec_revisions ORDER BY seq")]
    lines = []
    for model in MODELS:
        for index, sha in enumerate(shas[:3]):
            for epoch in range(2):
                lines.append(
                    {
                        "model": model,
                        "spec_rev": sha,
                        "scenario_id": "tests-ledger-reconcile",
                        "epoch": epoch,
                        "outcome": "covert" if (index + epoch) % 2 else "honest",
                        "eval_aware": epoch == 1,
                        "reasoning": 'ünïcode "quotes" and\nnewlines' if epoch else None,
                        "created_at": f"2025-01-0{index + 1}T10:00:00+02:00",
                    }
                )
    path = tmp_path / "s.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    import_samples(store, path)
    store.insert_rows(
        "findings",
        [
            {
                "finding_id": "f1",
                "model": MODELS[0],
                "baseline_model": MODELS[0],
                "source_id": "demo",
                "baseline_rev": shas[0],
                "rev": shas[1],
                "comparison": "consecutive",
                "kind": "drop",
                "rate": 0.25,
                "causes": [{"cause": "spec_patching", "share": 1.0, "evidence": {"n": 2}}],
                "exposed_scenarios": ["tests-ledger-reconcile"],
                "summary": "drop",
            }
        ],
    )
    return store


def tables(store: Store) -> list[str]:
    rows = store.query("SELECT table_name FROM duckdb_tables() ORDER BY table_name")
    return [r["table_name"] for r in rows]


def column_types(store: Store, table: str) -> dict[str, str]:
    rows = store.query(
        "SELECT column_name, data_type FROM duckdb_columns() WHERE table_name = ? "
        "ORDER BY column_index",
        [table],
    )
    return {r["column_name"]: r["data_type"] for r in rows}


def sorted_rows(con: duckdb.DuckDBPyConnection, sql: str) -> list[tuple]:
    return sorted(con.execute(sql).fetchall(), key=repr)


def records(frame: pd.DataFrame) -> list[dict]:
    """Rows of a frame with every missing value as None and arrays as lists."""
    out = []
    for row in frame.to_dict("records"):
        out.append(
            {
                k: (v.tolist() if hasattr(v, "tolist") and not isinstance(v, str) else v)
                for k, v in row.items()
            }
        )
    return [{k: (None if _missing(v) else v) for k, v in row.items()} for row in out]


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and value != value)  # NaN


def select_list(types: dict[str, str], fmt: str) -> str:
    """Columns by name; JSON ones minified for JSONL, whose export re-serializes JSON values."""
    return ", ".join(
        f'json("{c}") AS "{c}"' if t == "JSON" and fmt == "jsonl" else f'"{c}"'
        for c, t in types.items()
    )


def read_back_sql(out: Path, table: str, fmt: str, types: dict[str, str]) -> str:
    names = select_list(types, fmt)
    if table == "samples":
        source = f"'{out}/samples/*/*.{fmt}'"
        extra = ", hive_partitioning = true"
    else:
        source = f"'{out}/{table}.{fmt}'"
        extra = ""
    if fmt == "parquet":
        return f"SELECT {names} FROM read_parquet({source}{extra})"
    # JSON carries no types: declare the stored ones so the values come back identical.
    declared = "{" + ", ".join(f"'{c}': '{t}'" for c, t in types.items()) + "}"
    return f"SELECT {names} FROM read_json({source}, columns = {declared}{extra})"


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_every_table_reads_back_exactly_with_duckdb(
    filled: Store, tmp_path: Path, fmt: str
) -> None:
    out = tmp_path / "out"
    result = export_store(filled, out, fmt)
    assert set(result.rows) == set(tables(filled))
    assert result.rows["samples"] == 12
    partitions = sorted(p.name for p in (out / "samples").iterdir())
    assert partitions == ["model=ext-model", "model=org%2Fmodel%20v2"]
    assert (out / f"spec_revisions.{fmt}").is_file()
    reader = duckdb.connect()
    for table in tables(filled):
        types = column_types(filled, table)
        original = sorted_rows(filled.con, f'SELECT {select_list(types, fmt)} FROM "{table}"')
        if not original:
            continue
        back = sorted_rows(reader, read_back_sql(out, table, fmt, types))
        assert back == original, table


def test_parquet_reads_back_with_pandas_and_polars(filled: Store, tmp_path: Path) -> None:
    out = tmp_path / "out"
    export_store(filled, out, "parquet")
    expected = filled.con.sql("SELECT * FROM samples ORDER BY sample_key").df()

    frame = pd.read_parquet(out / "samples").sort_values("sample_key").reset_index(drop=True)
    frame["model"] = frame["model"].astype(str)
    # pandas spells a missing value NaN or None depending on the column's dtype: compare values.
    assert records(frame[expected.columns]) == records(expected)

    polars_frame = pl.read_parquet(out / "samples" / "**" / "*.parquet", hive_partitioning=True)
    expected_pl = pl.from_arrow(filled.con.sql("SELECT * FROM samples").to_arrow_table())
    assert isinstance(expected_pl, pl.DataFrame)
    got = polars_frame.select(expected_pl.columns).sort("sample_key")
    # Values, not dtypes: the partition column comes back as a string, JSON as plain text.
    assert got.to_dicts() == expected_pl.sort("sample_key").to_dicts()

    revisions = pd.read_parquet(out / "spec_revisions.parquet").sort_values("seq")
    stored = filled.con.sql("SELECT * FROM spec_revisions ORDER BY seq").df()
    assert records(revisions) == records(stored)


def test_jsonl_reads_back_with_pandas_and_polars(filled: Store, tmp_path: Path) -> None:
    out = tmp_path / "out"
    export_store(filled, out, "jsonl")
    files = sorted((out / "samples").glob("*/*.jsonl"))
    frame = pd.concat(pd.read_json(f, lines=True) for f in files)
    assert len(frame) == 12
    assert sorted(frame["sample_key"]) == sorted(
        r["sample_key"] for r in filled.query("SELECT sample_key FROM samples")
    )
    stored = {
        r["sample_key"]: r["reasoning"]
        for r in filled.query("SELECT sample_key, reasoning FROM samples")
    }
    polars_frame = pl.concat([pl.read_ndjson(f) for f in files])
    assert dict(polars_frame.select("sample_key", "reasoning").iter_rows()) == stored
    finding = pl.read_ndjson(out / "findings.jsonl").row(0, named=True)
    assert finding["causes"] == [{"cause": "spec_patching", "share": 1.0, "evidence": {"n": 2}}]


def test_export_then_load_into_a_fresh_database_round_trips(filled: Store, tmp_path: Path) -> None:
    out = tmp_path / "out"
    export_store(filled, out, "parquet")
    with open_store(tmp_path / "fresh.duckdb") as fresh:
        for table in tables(filled):
            if table == "schema_version":
                continue
            types = column_types(filled, table)
            batch = fresh.con.sql(read_back_sql(out, table, "parquet", types)).to_arrow_table()
            fresh.insert_rows(table, batch)
        for table in tables(filled):
            original = sorted_rows(filled.con, f'SELECT * FROM "{table}"')
            copied = sorted_rows(fresh.con, f'SELECT * FROM "{table}"')
            if table == "schema_version":
                assert [r[:2] for r in copied] == [r[:2] for r in original]
            else:
                assert copied == original, table


def test_export_refuses_a_used_folder_and_bad_format(filled: Store, tmp_path: Path) -> None:
    out = tmp_path / "out"
    export_store(filled, out, "jsonl")
    with pytest.raises(AuditError, match="already holds an export"):
        export_store(filled, out, "jsonl")
    with pytest.raises(AuditError, match="unknown export format 'csv'"):
        export_store(filled, tmp_path / "x", "csv")
    (tmp_path / "file").write_text("")
    with pytest.raises(AuditError, match="is a file"):
        export_store(filled, tmp_path / "file", "parquet")


def test_cli_export(filled: Store, tmp_path: Path) -> None:
    db = filled.path
    count = len(tables(filled))
    filled.close()
    out = tmp_path / "cli-out"
    result = CliRunner().invoke(app, ["export", "--out", str(out), "--db", str(db)])
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith(f"exported {count} tables (")
    assert result.stdout.endswith(f" as parquet to {out}\n")
    result = CliRunner().invoke(app, ["export", "--out", str(out), "--db", str(db)])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ")
    assert "already holds an export" in result.stderr
