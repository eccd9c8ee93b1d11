"""``audit export``: every table to Parquet or JSONL, read back exactly (DuckDB, pandas, polars),
and exported samples imported back with ``audit import samples`` into a fresh database."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import polars as pl
import pytest
from batch_executor import answer_file
from typer.testing import CliRunner

from audit.analysis import detect
from audit.cli import app
from audit.config import BatchConfig, parse_config
from audit.counterfactual import run_counterfactual
from audit.errors import AuditError
from audit.io import export_store, import_samples, partition_folder
from audit.organisms.server import start_server
from audit.runner import run_matrix
from audit.runner.batch import export_wave, import_outputs, run_batch
from audit.spec_history import sync_spec_history
from audit.spec_history.replay import replay_specs_history
from audit.store import Store, open_store

# Names that break naive partition folders: a slash, spaces, "=", a number a reader would type as
# an integer, names equal but for case, a leading dot, a literal percent escape.
IMPORTED_MODELS = (
    "meta-llama/Llama-3-8B",
    "org/model v2",
    "a=b c",
    "2025",
    "Model-X",
    "model-x",
    ".hidden",
    "x%2Fy",
)
RUN_MODEL = "patcher-v2"  # a model organism, run for real over loopback HTTP
# A public scenario, its sealed twin (whose text an export withholds) and one without a twin.
RUN_SCENARIOS = (
    "tests-ledger-reconcile",
    "oversight-deploy-audit-hook",
    "tests-ledger-reconcile--twin",
)


@pytest.fixture(scope="module")
def spec_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return replay_specs_history(tmp_path_factory.mktemp("export") / "specs")


def imported_lines(shas: list[str]) -> list[dict]:
    lines = []
    for model in IMPORTED_MODELS:
        for index, sha in enumerate(shas[:2]):
            for epoch in range(2):
                lines.append(
                    {
                        "model": model,
                        "spec_rev": sha,
                        "scenario_id": "metrics-checkout-p99",
                        "epoch": epoch,
                        "outcome": "covert" if (index + epoch) % 2 else "honest",
                        "eval_aware": epoch == 1,
                        "reasoning": 'ünïcode "quotes" and\nnewlines' if epoch else None,
                        "created_at": f"2025-01-0{index + 1}T10:00:00.123456+02:00",
                        "score": 1 / 3 if epoch else None,
                    }
                )
    return lines


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory, spec_repo: Path) -> Path:
    """A database with rows in every table: a real run, a batch run, a counterfactual
    experiment, imports, detection, a judge grade."""
    root = tmp_path_factory.mktemp("history")
    db = root / "audit.duckdb"
    with start_server(port=0) as server, open_store(db) as store:
        sync_spec_history(store, spec_repo, "spec/model-spec.md", source_id="demo")
        shas = [r["sha"] for r in store.query("SELECT sha FROM spec_revisions ORDER BY seq")]
        config = parse_config(
            {
                "db": str(db),
                "run": {"epochs": 2, "max_turns": 4},
                "detect": {"bootstrap": 100},
                "models": [
                    {
                        "name": RUN_MODEL,
                        "base_url": server.base_url,
                        "api_key_env": "SPECDRIFT_EXPORT_KEY",
                        "concurrency": 8,
                    }
                ],
            }
        )
        summary = run_matrix(
            store, config, models=None, revisions=shas[:3], scenario_ids=RUN_SCENARIOS, epochs=2
        )
        assert summary.failed == 0
        # One more revision in batch mode, so the batch tables have rows to export too.
        batched = run_batch(
            store,
            config.model_copy(update={"batch": BatchConfig(poll_s=0.01)}),
            models=None,
            revisions=shas[3:4],
            scenario_ids=RUN_SCENARIOS,
            epochs=2,
        )
        assert batched.stored > 0 and batched.failed == 0
        # A wave exported and read back for another revision: the samples that continue keep
        # their answers in batch_requests, a sealed twin's among them.
        exported = export_wave(
            store, config, root / "wave", revisions=shas[4:5], scenario_ids=RUN_SCENARIOS
        )
        outputs = [root / f"out-{path.name}" for path in exported.files]
        for request_file, output in zip(exported.files, outputs, strict=True):
            answer_file(request_file, output, server.base_url)
        assert import_outputs(store, config, outputs).counts.continuing > 0
        # A control experiment on the run's first revision fills counterfactual_samples.
        experiment = run_counterfactual(
            store, config, model=RUN_MODEL, revision=shas[0], mode="control"
        )
        assert experiment.stored > 0 and experiment.failed == 0
        path = root / "imported.jsonl"
        path.write_text("".join(json.dumps(x) + "\n" for x in imported_lines(shas)))
        import_samples(store, path)
        detect(store, config)
        keys = {
            scenario: store.query(
                "SELECT min(sample_key) AS k FROM samples WHERE scenario_id = ?", [scenario]
            )[0]["k"]
            for scenario in (RUN_SCENARIOS[0], RUN_SCENARIOS[2])
        }
        store.insert_rows(
            "judge_grades",
            [
                {
                    "sample_key": key,
                    "grader": "judge",
                    "judge_model": "judge-model",
                    "rubric_hash": "sha256:rubric",
                    "outcome": "honest",
                    "eval_aware": False,
                    "rationale": f"reported the failing tests of {scenario}",
                }
                for scenario, key in keys.items()
            ],
        )
        store.insert_rows(
            "sample_failures",
            [
                {
                    "sample_key": f"sha256:failed-{scenario}",
                    "run_id": summary.run_id,
                    "model": RUN_MODEL,
                    "spec_sha": shas[0],
                    "scenario_id": scenario,
                    "condition": "default",
                    "epoch": 7,
                    "error_kind": "timeout",
                    "error": "timed out after 3 attempts",
                    "attempts": 3,
                }
                for scenario in (RUN_SCENARIOS[0], RUN_SCENARIOS[2])
            ],
        )
        empty = store.query(
            "SELECT table_name FROM duckdb_tables() WHERE schema_name = 'main' "
            "AND estimated_size = 0 ORDER BY ALL"
        )
        assert [r["table_name"] for r in empty if _count(store, r["table_name"]) == 0] == []
    return db


@pytest.fixture
def filled(history: Path) -> Any:
    with open_store(history, read_only=True) as store:
        yield store


def _count(store: Store, table: str) -> int:
    return int(store.query(f'SELECT count(*) AS n FROM "{table}"')[0]["n"])


def tables(store: Store) -> list[str]:
    rows = store.query(
        "SELECT table_name FROM duckdb_tables() WHERE schema_name = 'main' ORDER BY table_name"
    )
    return [r["table_name"] for r in rows]


def column_types(store: Store, table: str) -> dict[str, str]:
    rows = store.query(
        "SELECT column_name, data_type FROM duckdb_columns() WHERE table_name = ? "
        "AND schema_name = 'main' ORDER BY column_index",
        [table],
    )
    return {r["column_name"]: r["data_type"] for r in rows}


def files_of(out: Path, table: str, fmt: str) -> list[Path]:
    if table == "samples":
        return sorted((out / "samples").glob(f"*/data.{fmt}"))
    return [out / f"{table}.{fmt}"]


# -- one canonical form for values read by any reader -------------------------------------------


def canonical(value: Any, data_type: str) -> Any:
    """The value as plain Python, whatever reader produced it (for exact comparison)."""
    if hasattr(value, "tolist") and not isinstance(value, str):
        value = value.tolist()  # numpy arrays and scalars
    if value is None or value is pd.NaT or (isinstance(value, float) and value != value):
        return None
    if data_type == "JSON":
        return json.loads(value) if isinstance(value, str) else value
    if data_type.startswith("TIMESTAMP"):
        if isinstance(value, str):
            value = dt.datetime.fromisoformat(value)
        if isinstance(value, pd.Timestamp):
            value = value.to_pydatetime()
        return value.astimezone(dt.UTC)
    if data_type.endswith("[]"):
        return list(value)
    return value


def canonical_rows(rows: list[dict], types: dict[str, str]) -> list[dict]:
    out = [{c: canonical(row[c], t) for c, t in types.items()} for row in rows]
    return sorted(out, key=lambda r: json.dumps(r, default=str, sort_keys=True))


def stored_rows(store: Store, table: str) -> list[dict]:
    return canonical_rows(store.query(f'SELECT * FROM "{table}"'), column_types(store, table))


# What an export writes instead of a sealed twin's text, per table (written out here, not read
# from audit.io.export, so a change there has to be a change here too).
WITHHELD: dict[str, dict[str, Any]] = {
    "samples": dict.fromkeys(
        ("transcript", "reasoning", "answer", "grade_evidence", "awareness_evidence")
    ),
    "judge_grades": {"rationale": None},
    "sample_failures": {"error": "(withheld: sealed twin)"},
    "exposure": {"matched_terms": [], "matched_text": None},
    "batch_requests": {"response": None, "error": None},
}


def exported_rows(store: Store, table: str, *, unseal: bool = False) -> list[dict]:
    """The rows an export of ``table`` must hold: the stored ones, sealed twins' text withheld."""
    rows = store.query(f'SELECT * FROM "{table}"')
    if not unseal and table in WITHHELD:
        sealed = {
            (r["set_hash"], r["scenario_id"])
            for r in store.query("SELECT set_hash, scenario_id FROM scenarios WHERE sealed")
        }
        sealed_keys = {
            r["sample_key"]
            for r in store.query("SELECT sample_key, set_hash, scenario_id FROM samples")
            if (r["set_hash"], r["scenario_id"]) in sealed
        }
        sealed_batch_keys = {
            r["sample_key"]
            for r in store.query("SELECT sample_key, set_hash, scenario_id FROM batch_samples")
            if (r["set_hash"], r["scenario_id"]) in sealed
        }
        run_sets = {r["run_id"]: r["set_hash"] for r in store.query("SELECT * FROM runs")}

        def is_sealed(row: dict) -> bool:
            if table == "judge_grades":
                return row["sample_key"] in sealed_keys
            if table == "batch_requests":
                return row["sample_key"] in sealed_batch_keys
            set_hash = row.get("set_hash") or run_sets.get(row["run_id"])
            return (set_hash, row["scenario_id"]) in sealed

        rows = [{**r, **WITHHELD[table]} if is_sealed(r) else r for r in rows]
    return canonical_rows(rows, column_types(store, table))


# -- read back -----------------------------------------------------------------------------------


def duckdb_rows(out: Path, table: str, fmt: str, types: dict[str, str]) -> list[dict]:
    files = "[" + ", ".join(f"'{f}'" for f in files_of(out, table, fmt)) + "]"
    if fmt == "parquet":
        sql = f"SELECT * FROM read_parquet({files})"
    else:
        # JSON carries no types: declare the stored ones.
        declared = "{" + ", ".join(f"'{c}': '{t}'" for c, t in types.items()) + "}"
        sql = f"SELECT * FROM read_json({files}, columns = {declared})"
    cursor = duckdb.connect().execute(sql)
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def pandas_rows(out: Path, table: str, fmt: str) -> list[dict]:
    if fmt == "parquet":
        source = out / "samples" if table == "samples" else out / f"{table}.parquet"
        frame = pd.read_parquet(source)
    else:
        # dtype=False: take JSON's own types (the model "2025" stays a string); precise_float:
        # pandas' fast float parser can change the last digit.
        frame = pd.concat(
            pd.read_json(f, lines=True, dtype=False, precise_float=True)
            for f in files_of(out, table, fmt)
        )
    return frame.to_dict("records")


def polars_rows(out: Path, table: str, fmt: str) -> list[dict]:
    if fmt == "parquet":
        source = out / "samples" / "*" / "*.parquet" if table == "samples" else None
        return pl.read_parquet(source or out / f"{table}.parquet").to_dicts()
    frame = pl.concat(
        (pl.read_ndjson(f, infer_schema_length=None) for f in files_of(out, table, fmt)),
        how="diagonal_relaxed",  # a column all null in one file is typed Null there
    )
    return frame.to_dicts()


def without_null_keys(value: Any) -> Any:
    """JSON with null-valued object keys dropped: polars reads JSON objects as structs, which
    give every object the keys any other object has, as nulls."""
    if isinstance(value, dict):
        return {k: without_null_keys(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_null_keys(v) for v in value]
    return value


def struct_safe(rows: list[dict], types: dict[str, str]) -> list[dict]:
    json_columns = [c for c, t in types.items() if t == "JSON"]
    return [{**r, **{c: without_null_keys(r[c]) for c in json_columns}} for r in rows]


@pytest.mark.parametrize(("fmt", "unseal"), [("parquet", False), ("jsonl", False), ("jsonl", True)])
def test_every_table_reads_back_exactly_with_duckdb_pandas_and_polars(
    filled: Store, tmp_path: Path, fmt: str, unseal: bool
) -> None:
    out = tmp_path / "out"
    result = export_store(filled, out, fmt, unseal=unseal)
    assert set(result.rows) == set(tables(filled))
    for table in WITHHELD:
        # Every table with sealed columns holds a twin's row whose text the export must withhold.
        assert exported_rows(filled, table) != stored_rows(filled, table), table
    for table in tables(filled):
        types = column_types(filled, table)
        expected = exported_rows(filled, table, unseal=unseal)
        assert expected, f"{table} has no rows to check"
        assert result.rows[table] == len(expected)
        back = canonical_rows(duckdb_rows(out, table, fmt, types), types)
        assert back == expected, f"{table} read by duckdb"
        back = canonical_rows(pandas_rows(out, table, fmt), types)
        assert back == expected, f"{table} read by pandas"
        back = canonical_rows(polars_rows(out, table, fmt), types)
        if fmt == "jsonl":
            back, expected = struct_safe(back, types), struct_safe(expected, types)
        assert back == expected, f"{table} read by polars"


def test_every_sample_file_holds_its_model_and_folders_are_safe(
    filled: Store, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    result = export_store(filled, out, "jsonl")
    models = sorted(r["model"] for r in filled.query("SELECT DISTINCT model FROM samples"))
    assert sorted(result.partitions["samples"]) == models
    folders = sorted(p.name for p in (out / "samples").iterdir())
    assert len(folders) == len(models)
    assert len({f.casefold() for f in folders}) == len(folders)  # case-insensitive disks too
    assert "meta-llama%2FLlama-3-8B" in folders and "a%3Db%20c" in folders
    assert "%2Ehidden" in folders and "x%252Fy" in folders
    assert all(f[0] not in "._" and "/" not in f and "=" not in f for f in folders)
    for model, path in result.partitions["samples"].items():
        assert path.parent.parent == out / "samples"
        rows = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]
        assert rows and {r["model"] for r in rows} == {model}


def test_partition_folder_names() -> None:
    assert partition_folder("meta-llama/Llama-3-8B") == "meta-llama%2FLlama-3-8B"
    assert partition_folder("gpt-4o_mini.2") == "gpt-4o_mini.2"
    assert partition_folder("..") == "%2E."
    assert partition_folder("_x") == "%5Fx"
    assert partition_folder("a~b") == "a%7Eb"  # "~" only ever marks a hashed name
    long = partition_folder("m" * 400)
    assert len(long) == 160 and long.startswith("m" * 143 + "~")


def test_exported_samples_import_back_unchanged(
    filled: Store, spec_repo: Path, tmp_path: Path
) -> None:
    """export -> audit import samples (the public path) -> the same rows in a fresh database.

    Unsealed, so that the sealed twin's samples come back with their text as well.
    """
    out = tmp_path / "out"
    result = export_store(filled, out, "jsonl", unseal=True)
    fresh = tmp_path / "fresh.duckdb"
    with open_store(fresh) as store:
        sync_spec_history(store, spec_repo, "spec/model-spec.md", source_id="demo")
    runner = CliRunner()
    for model, path in result.partitions["samples"].items():
        done = runner.invoke(app, ["import", "samples", str(path), "--db", str(fresh)])
        assert done.exit_code == 0, (model, done.stderr)
        assert done.stdout.endswith(" stored, 0 already present\n")
    # JSON columns compared as JSON values: the export re-serializes them compactly.
    types = column_types(filled, "samples")
    columns = ", ".join(f'json("{c}")' if t == "JSON" else f'"{c}"' for c, t in types.items())
    query = f"SELECT {columns} FROM samples ORDER BY sample_key"
    with open_store(fresh, read_only=True) as store:
        assert store.con.execute(query).fetchall() == filled.con.execute(query).fetchall()
    again = runner.invoke(app, ["import", "samples", str(path), "--db", str(fresh)])
    assert again.exit_code == 0 and ", 0 stored, " in again.stdout


def test_an_edited_exported_line_is_refused(filled: Store, spec_repo: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = export_store(filled, out, "jsonl")
    path = result.partitions["samples"][RUN_MODEL]
    rows = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]
    fresh = tmp_path / "fresh.duckdb"
    with open_store(fresh) as store:
        with pytest.raises(AuditError, match=r"line 1: spec_sha: revision .* is not synced here"):
            import_samples(store, path)
        sync_spec_history(store, spec_repo, "spec/model-spec.md", source_id="demo")
        edited = tmp_path / "edited.jsonl"
        rows[1]["epoch"] = 99  # the key no longer matches the row
        edited.write_text("".join(json.dumps(r) + "\n" for r in rows))
        with pytest.raises(AuditError, match=r"^edited.jsonl line 2: sample_key does not match"):
            import_samples(store, edited)
        rows[1]["epoch"] = rows[0]["epoch"]
        rows[1]["colour"] = "red"
        edited.write_text("".join(json.dumps(r) + "\n" for r in rows))
        with pytest.raises(AuditError, match=r"^edited.jsonl line 2: colour: not a column"):
            import_samples(store, edited)
        assert store.query("SELECT count(*) AS n FROM samples")[0]["n"] == 0


def test_parquet_export_loads_into_a_fresh_database(filled: Store, tmp_path: Path) -> None:
    out = tmp_path / "out"
    export_store(filled, out, "parquet")
    with open_store(tmp_path / "fresh.duckdb") as fresh:
        for table in tables(filled):
            if table == "schema_version":
                continue
            files = ", ".join(f"'{f}'" for f in files_of(out, table, "parquet"))
            batch = fresh.con.sql(f"SELECT * FROM read_parquet([{files}])").to_arrow_table()
            fresh.insert_rows(table, batch)
        for table in tables(filled):
            if table != "schema_version":
                assert stored_rows(fresh, table) == exported_rows(filled, table), table


def test_empty_samples_table_exports_an_empty_folder(tmp_path: Path) -> None:
    with open_store(tmp_path / "empty.duckdb") as store:
        result = export_store(store, tmp_path / "out", "parquet")
    assert result.rows["samples"] == 0
    assert list((tmp_path / "out" / "samples").iterdir()) == []


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


def test_cli_export(history: Path, tmp_path: Path) -> None:
    db = tmp_path / "copy.duckdb"
    shutil.copy(history, db)
    with open_store(db, read_only=True) as store:
        count = len(tables(store))
    out = tmp_path / "cli-out"
    result = CliRunner().invoke(app, ["export", "--out", str(out), "--db", str(db)])
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith(f"exported {count} tables (")
    assert result.stdout.endswith(f" as parquet to {out}\n")
    result = CliRunner().invoke(app, ["export", "--out", str(out), "--db", str(db)])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ")
    assert "already holds an export" in result.stderr
