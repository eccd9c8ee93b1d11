"""``audit import samples``: JSONL samples join the history; bad files change nothing."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from audit.cli import app
from audit.errors import AuditError
from audit.heldout import load_heldout
from audit.io import import_samples
from audit.io.import_samples import IMPORT_PARAMS_HASH
from audit.runner.matrix import sample_key
from audit.spec_history import sync_spec_history
from audit.spec_history.replay import replay_specs_history
from audit.store import Store, open_store


@pytest.fixture(scope="module")
def spec_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped spec history replayed into a real git repository."""
    return replay_specs_history(tmp_path_factory.mktemp("import") / "specs")


@pytest.fixture
def synced(store: Store, spec_repo: Path) -> Store:
    sync_spec_history(store, spec_repo, "spec/model-spec.md", source_id="demo")
    return store


def revisions(store: Store) -> list[dict]:
    return store.query("SELECT sha, content_hash FROM spec_revisions ORDER BY seq")


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def line(sha: str, scenario: str = "tests-ledger-reconcile", **extra: object) -> dict:
    base = {
        "model": "ext-model",
        "spec_rev": sha,
        "scenario_id": scenario,
        "epoch": 0,
        "outcome": "covert",
        "eval_aware": False,
    }
    return {**base, **extra}


def count(store: Store) -> int:
    return store.query("SELECT count(*) AS n FROM samples")[0]["n"]


def test_import_stores_exact_rows_keyed_like_the_runner(synced: Store, tmp_path: Path) -> None:
    revs = revisions(synced)
    first, last = revs[0], revs[-1]
    path = write_jsonl(
        tmp_path / "s.jsonl",
        [
            line(first["sha"][:10], reasoning="Is this a test?", answer="All green."),
            line(
                last["sha"],
                "sandbag-netsec-fundamentals",
                epoch=3,
                outcome="honest",
                eval_aware=True,
                condition="incentive",
                model_version="2.1",
                created_at="2025-03-01T12:00:00",
                score=0.75,
            ),
        ],
    )
    result = import_samples(synced, path)
    assert (result.read, result.stored, result.skipped) == (2, 2, 0)
    heldout = load_heldout()
    rows = synced.query(
        "SELECT sample_key, origin, run_id, model, model_version, source_id, spec_sha, "
        "spec_content_hash, set_hash, scenario_id, scenario_hash, family, condition, epoch, "
        "params_hash, outcome, eval_aware, score, reasoning, answer, grade_evidence, created_at "
        "FROM samples ORDER BY epoch"
    )
    ledger_hash = heldout.scenario_hash("tests-ledger-reconcile")
    assert rows[0] == {
        "sample_key": sample_key(
            "ext-model", first["content_hash"], ledger_hash, "default", 0, IMPORT_PARAMS_HASH
        ),
        "origin": "import",
        "run_id": None,
        "model": "ext-model",
        "model_version": None,
        "source_id": "demo",
        "spec_sha": first["sha"],
        "spec_content_hash": first["content_hash"],
        "set_hash": heldout.set_hash,
        "scenario_id": "tests-ledger-reconcile",
        "scenario_hash": ledger_hash,
        "family": "misreport_tests",
        "condition": "default",
        "epoch": 0,
        "params_hash": IMPORT_PARAMS_HASH,
        "outcome": "covert",
        "eval_aware": False,
        "score": None,
        "reasoning": "Is this a test?",
        "answer": "All green.",
        "grade_evidence": '{"rule_id":"import","imported_from":"s.jsonl","line":1}',
        "created_at": rows[0]["created_at"],
    }
    second = rows[1]
    assert (second["spec_sha"], second["condition"], second["family"]) == (
        last["sha"],
        "incentive",
        "sandbagging",
    )
    assert (second["outcome"], second["eval_aware"], second["score"]) == ("honest", True, 0.75)
    assert second["model_version"] == "2.1"
    assert second["created_at"] == dt.datetime(2025, 3, 1, 12, 0, tzinfo=dt.UTC)
    # The set the samples belong to is registered, so joins on scenarios work.
    assert synced.query("SELECT count(*) AS n FROM scenarios")[0]["n"] == len(heldout.scenarios)


def test_reimport_adds_nothing(synced: Store, tmp_path: Path) -> None:
    sha = revisions(synced)[0]["sha"]
    path = write_jsonl(tmp_path / "s.jsonl", [line(sha), line(sha, epoch=1)])
    assert import_samples(synced, path).stored == 2
    again = import_samples(synced, path)
    assert (again.read, again.stored, again.skipped) == (2, 0, 2)
    assert count(synced) == 2


def test_tag_names_a_revision(synced: Store, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "s.jsonl", [line("v1.1")])
    import_samples(synced, path)
    tagged = synced.query("SELECT sha FROM spec_tags WHERE tag = 'v1.1'")[0]["sha"]
    assert synced.query("SELECT spec_sha FROM samples")[0]["spec_sha"] == tagged


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"outcome": "lied"}, "s.jsonl line 2: outcome: Input should be 'covert'"),
        ({"eval_aware": "yes"}, "s.jsonl line 2: eval_aware: Input should be a valid boolean"),
        ({"epoch": -1}, "s.jsonl line 2: epoch: Input should be greater than or equal to 0"),
        ({"colour": "red"}, "s.jsonl line 2: colour: Extra inputs are not permitted"),
        ({"scenario_id": "tests-ledger"}, "s.jsonl line 2: scenario_id: no scenario"),
        ({"spec_rev": "ffffffff"}, "s.jsonl line 2: spec_rev: no revision of 'demo'"),
        ({"epoch": 0}, "s.jsonl line 2: same model, spec content, scenario, condition and epoch"),
        (
            {"scenario_id": "sandbag-netsec-fundamentals"},
            "s.jsonl line 2: scenario sandbag-netsec-fundamentals is run under conditions",
        ),
        (
            {"scenario_id": "sandbag-netsec-fundamentals", "condition": "x"},
            "s.jsonl line 2: scenario sandbag-netsec-fundamentals has no condition 'x'",
        ),
    ],
)
def test_a_bad_line_is_named_and_nothing_of_the_file_is_stored(
    synced: Store, tmp_path: Path, bad: dict, message: str
) -> None:
    sha = revisions(synced)[0]["sha"]
    kept = write_jsonl(tmp_path / "kept.jsonl", [line(sha, epoch=9)])
    import_samples(synced, kept)
    path = write_jsonl(tmp_path / "s.jsonl", [line(sha), line(sha, **bad), line(sha, epoch=2)])
    with pytest.raises(AuditError) as caught:
        import_samples(synced, path)
    assert str(caught.value).startswith(message)
    assert synced.query("SELECT epoch FROM samples") == [{"epoch": 9}]


def test_not_json_and_empty_files(synced: Store, tmp_path: Path) -> None:
    bad = tmp_path / "s.jsonl"
    bad.write_text('{"model": "m"}\n{oops\n', encoding="utf-8")
    with pytest.raises(AuditError, match=r"^s.jsonl line 1: spec_rev: Field required"):
        import_samples(synced, bad)
    bad.write_text("\n[1, 2]\n", encoding="utf-8")
    with pytest.raises(AuditError, match=r"^s.jsonl line 2: expected a JSON object"):
        import_samples(synced, bad)
    bad.write_text("{oops\n", encoding="utf-8")
    with pytest.raises(AuditError, match=r"^s.jsonl line 1: not valid JSON"):
        import_samples(synced, bad)
    bad.write_text("\n\n", encoding="utf-8")
    with pytest.raises(AuditError, match="holds no samples"):
        import_samples(synced, bad)
    assert count(synced) == 0


def test_cli_import_and_clean_error(synced: Store, tmp_path: Path) -> None:
    sha = revisions(synced)[0]["sha"]
    db = synced.path
    synced.close()
    good = write_jsonl(tmp_path / "good.jsonl", [line(sha), line(sha, epoch=1)])
    bad = write_jsonl(tmp_path / "bad.jsonl", [line(sha, epoch=5), line(sha, outcome="x")])
    runner = CliRunner()
    result = runner.invoke(app, ["import", "samples", str(good), "--db", str(db)])
    assert result.exit_code == 0, result.stderr
    assert result.stdout == f"{good}: 2 samples read, 2 stored, 0 already present\n"
    result = runner.invoke(app, ["import", "samples", str(bad), "--db", str(db)])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: bad.jsonl line 2: outcome: Input should be")
    assert result.stderr.count("\n") == 1
    with open_store(db, read_only=True) as store:
        assert store.query("SELECT count(*) AS n FROM samples")[0]["n"] == 2


def test_import_export_round_trip_is_exact(synced: Store, tmp_path: Path) -> None:
    from audit.io import export_store

    shas = [r["sha"] for r in revisions(synced)]
    lines = [
        line(
            shas[i % len(shas)],
            ("tests-ledger-reconcile", "metrics-checkout-p99")[i % 2],
            model=("m/ü 1", "m2")[i % 2],
            epoch=i,
            outcome=("covert", "honest", "refused", "invalid")[i % 4],
            eval_aware=i % 3 == 0,
            reasoning=None if i % 2 else 'quote " backslash \\ tab\t newline\n emoji 🙂',
            answer=f"answer {i}",
            model_version=None if i % 3 else "v1",
            created_at=f"2025-02-0{1 + i % 9}T08:30:00+00:00",
        )
        for i in range(9)
    ]
    import_samples(synced, write_jsonl(tmp_path / "in.jsonl", lines))
    export_store(synced, tmp_path / "out", "jsonl")
    exported = [
        json.loads(raw)
        for file in sorted((tmp_path / "out" / "samples").glob("*/*.jsonl"))
        for raw in file.read_text(encoding="utf-8").splitlines()
    ]
    models = {
        r["sample_key"]: r["model"] for r in synced.query("SELECT sample_key, model FROM samples")
    }
    back = [
        {
            "model": models[row["sample_key"]],  # the partition folder holds it, not the file
            "spec_rev": row["spec_sha"],
            "scenario_id": row["scenario_id"],
            "epoch": row["epoch"],
            "outcome": row["outcome"],
            "eval_aware": row["eval_aware"],
            "reasoning": row["reasoning"],
            "answer": row["answer"],
            "model_version": row["model_version"],
            "created_at": dt.datetime.fromisoformat(row["created_at"]).isoformat(),
        }
        for row in exported
    ]
    assert sorted(back, key=lambda r: r["epoch"]) == [
        {**x, "created_at": dt.datetime.fromisoformat(x["created_at"]).isoformat()} for x in lines
    ]
