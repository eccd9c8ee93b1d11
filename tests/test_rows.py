"""The typed rows of audit.store.rows: one record per written table, matching its columns."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import get_args

import duckdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audit.records import ComparisonKind, Finding, FindingKind, TestedOn
from audit.store import Store, open_store, rows
from audit.store import batches as batch_rows
from audit.store.schema import MIGRATIONS

RECORDS: list[type] = [
    rows.SpecSourceRow,
    rows.SpecRevisionRow,
    rows.SpecChangeRow,
    rows.SpecClauseChangeRow,
    rows.SpecTagRow,
    rows.HeldoutSetRow,
    rows.ScenarioRow,
    rows.HeldoutFamilyRow,
    rows.RunRow,
    rows.SampleRow,
    rows.SampleFailureRow,
    rows.CounterfactualSampleRow,
    rows.JudgeGradeRow,
    rows.EstimateRow,
    rows.ExposureRow,
    rows.FindingRow,
]
BATCH_RECORDS = {
    "batch_samples": batch_rows.BatchSample,
    "batch_parts": batch_rows.BatchPart,
    "batch_requests": batch_rows.BatchRequest,
}


@pytest.fixture
def store() -> Iterator[Store]:
    with open_store(":memory:") as opened:
        yield opened


def _columns(store: Store) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for row in store.query(
        "SELECT c.table_name, c.column_name FROM information_schema.columns c "
        "JOIN information_schema.tables t USING (table_schema, table_name) "
        "WHERE t.table_type = 'BASE TABLE' AND c.table_schema = 'main'"
    ):
        found.setdefault(row["table_name"], set()).add(row["column_name"])
    return found


def test_every_record_has_exactly_its_tables_columns(store: Store) -> None:
    columns = _columns(store)
    for record in RECORDS:
        assert set(rows.column_names(record)) == columns[record.TABLE], record.__name__
    for table, record in BATCH_RECORDS.items():
        assert {f for f in record.__dataclass_fields__} == columns[table], record.__name__


def test_every_written_table_has_a_record(store: Store) -> None:
    recorded = {r.TABLE for r in RECORDS} | set(BATCH_RECORDS)
    assert set(_columns(store)) - {"schema_version"} == recorded


def test_defaulted_columns_are_filled_by_the_database(store: Store) -> None:
    run = rows.RunRow(
        run_id="r1",
        command="run",
        started_at=datetime(2026, 1, 1, tzinfo=UTC),
        set_hash="sha256:x",
        tool_version="test",
        config="{}",
    )
    assert rows.insert(store, [run]) == 1
    failure = rows.SampleFailureRow("k", "r1", "m", "a" * 40, "s", "default", 0, "timeout", "t", 3)
    rows.insert(store, [failure])
    (stored,) = store.query("SELECT failed_at, error_kind FROM sample_failures")
    assert stored["error_kind"] == "timeout" and stored["failed_at"] is not None
    rows.finish_run(store, "r1", completed=True, stored=5, failed=1)
    (finished,) = store.query("SELECT finished_at, stored, failed, mode FROM runs")
    assert (finished["stored"], finished["failed"], finished["mode"]) == (5, 1, "live")
    assert finished["finished_at"] is not None


def test_rows_of_two_tables_are_refused_in_one_insert(store: Store) -> None:
    estimate = rows.EstimateRow("m", "s", "a", "covert_rate", "all", "*", 0.5, 0.4, 0.6, 10, 2)
    tag = rows.SpecTagRow("s", "v1", "a", "a")
    with pytest.raises(ValueError, match="several tables"):
        rows.insert(store, [estimate, tag])


_RATES = st.one_of(st.none(), st.floats(min_value=0, max_value=1))
_FINDINGS = st.builds(
    Finding,
    model=st.sampled_from(["m-v1", "m-v2", "*"]),
    baseline_model=st.sampled_from(["m-v1", "m-v2", "*"]),
    source_id=st.just("spec"),
    baseline_rev=st.sampled_from(["", "a" * 40]),
    rev=st.just("b" * 40),
    comparison=st.sampled_from(get_args(ComparisonKind)),
    kind=st.sampled_from(get_args(FindingKind)),
    baseline_rate=_RATES,
    rate=_RATES,
    ci_low=_RATES,
    ci_high=_RATES,
    delta=_RATES,
    delta_ci_low=_RATES,
    delta_ci_high=_RATES,
    p_value=_RATES,
    q_value=_RATES,
    primary_cause=st.sampled_from([None, "spec_patching", "eval_awareness", "genuine"]),
    causes=st.lists(
        st.fixed_dictionaries(
            {"cause": st.sampled_from(["spec_patching", "genuine"]), "share": _RATES}
        ),
        max_size=2,
    ).map(tuple),
    exposed_scenarios=st.lists(st.sampled_from(["s1", "s2", "s3"]), unique=True).map(tuple),
    evidence=st.fixed_dictionaries({"n_scenarios": st.integers(0, 40)}),
    summary=st.text(max_size=40),
    tested_on=st.sampled_from(get_args(TestedOn)),
    twin_gap=st.one_of(
        st.none(),
        st.fixed_dictionaries(
            {
                "gap": st.floats(-1, 1),
                "ci": st.tuples(st.floats(-1, 0), st.floats(0, 1)).map(list),
                "n_pairs": st.integers(2, 40),
            }
        ),
    ),
)


@settings(max_examples=60, deadline=None)
@given(finding=_FINDINGS)
def test_a_finding_reads_back_as_it_was_stored(finding: Finding) -> None:
    with open_store(":memory:") as store:
        rows.insert(store, [rows.FindingRow.of(finding)])
        (row,) = store.query("SELECT * FROM findings")
        back = rows.stored_finding(row)
    expected = finding.evidence | ({"twin_gap": finding.twin_gap} if finding.twin_gap else {})
    assert back == replace(finding, evidence=expected)
    assert back.finding_id == finding.finding_id


def test_schema_12_fills_tested_on_of_stored_findings_from_their_evidence(tmp_path: Path) -> None:
    db = tmp_path / "v11.duckdb"
    con = duckdb.connect(str(db))
    con.execute(
        "CREATE TABLE schema_version (version INTEGER PRIMARY KEY, description VARCHAR NOT NULL,"
        " applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
    )
    for migration in MIGRATIONS[:11]:
        con.execute(migration.sql)
        con.execute("INSERT INTO schema_version VALUES (?, ?, now())", [migration.version, "x"])
    for finding_id, evidence in (
        ("exposed", {"tested_on": "exposed scenarios", "n_scenarios": 2}),
        ("twin", {"tested_on": "public scenarios against their sealed twins"}),
        ("old", {}),
        ("leak", None),
    ):
        con.execute(
            "INSERT INTO findings (finding_id, model, baseline_model, source_id, baseline_rev, "
            "rev, comparison, kind, causes, exposed_scenarios, evidence, summary) "
            "VALUES (?, 'm', 'm', 's', 'a', 'b', 'consecutive', 'drop', '[]', [], ?, '')",
            [finding_id, None if evidence is None else json.dumps(evidence)],
        )
    con.close()
    with open_store(db) as store:
        assert store.schema_version() == 12
        stored = {
            r["finding_id"]: r["tested_on"]
            for r in store.query("SELECT finding_id, tested_on FROM findings")
        }
        viewed = {
            r["finding_id"]: r["tested_on"]
            for r in store.query("SELECT finding_id, tested_on FROM v_findings")
        }
    assert viewed == stored
    assert stored == {
        "exposed": "exposed scenarios",
        "twin": "public scenarios against their sealed twins",
        "old": "all scenarios",
        "leak": "all scenarios",
    }
