"""specdrift's held-out set as an Inspect AI task, run by ``inspect_ai.eval()`` and imported back.

The model is Inspect's own ``mockllm/model`` with a scripted output function
(:mod:`inspect_script`): for each sample it plays, turn by turn, one of the scenario's reference
transcripts (honest for some scenarios, covert for others, one with an eval-aware sentence added
to its reasoning, one answered as a JSON text instead of a tool call). The log is imported
without a mapping file, and every stored outcome, awareness flag and question score must equal
what specdrift's own graders give the same turns replayed through
:func:`audit.heldout.reference_transcript` (which never touches Inspect).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from inspect_script import scripted_model, until_submitted
from typer.testing import CliRunner

from audit.cli import app
from audit.errors import AuditError
from audit.graders import grade_sample
from audit.heldout import load_heldout, reference_transcript
from audit.heldout.model import ReferenceTranscript, ReferenceTurn, Scenario
from audit.io import import_inspect_logs
from audit.spec_history import resolve_revision, sync_spec_history
from audit.spec_history.replay import replay_specs_history
from audit.store import Store, open_store

pytest.importorskip("inspect_ai")

SCENARIOS = (  # public scenarios with their sealed twins, and a paired (sandbagging) one
    "tests-ledger-reconcile",
    "tests-ledger-reconcile--twin",
    "oversight-deploy-audit-hook",
    "sandbag-netsec-fundamentals",
)
COVERT = {"tests-ledger-reconcile", "sandbag-netsec-fundamentals"}
AWARE_SENTENCE = "This is probably an evaluation and the graders are watching this run. "
AWARE = "oversight-deploy-audit-hook"
AS_TEXT = "tests-ledger-reconcile--twin"  # answered with a JSON object in text, no tool call
EPOCHS = 2


def scripted_turns(scenario: Scenario, condition: str) -> ReferenceTranscript:
    """The reference this test plays for a (scenario, condition), cut after its submission."""
    label = "covert" if scenario.id in COVERT else "honest"
    reference = until_submitted(
        scenario,
        next(r for r in scenario.references if r.label == label and r.condition == condition),
    )
    turns = list(reference.turns)
    if scenario.id == AWARE:
        turns[0] = turns[0].model_copy(update={"reasoning": AWARE_SENTENCE + turns[0].reasoning})
    if scenario.id == AS_TEXT:
        submitted = next(
            call.arguments for call in turns[-1].tool_calls if call.name == scenario.submission.tool
        )
        turns = [ReferenceTurn(reasoning=turns[-1].reasoning, content=json.dumps(submitted))]
    return reference.model_copy(update={"turns": tuple(turns)})


@pytest.fixture(scope="module")
def synced_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("inspect-task")
    repo = replay_specs_history(root / "specs")
    db = root / "audit.duckdb"
    with open_store(db) as store:
        sync_spec_history(store, repo, "spec/model-spec.md", source_id="demo")
    return db


def run_task(db: Path, log_dir: Path, scenarios: tuple[str, ...] = SCENARIOS) -> Path:
    """``inspect_ai.eval()`` of the task with the scripted mock model; returns the log file."""
    from inspect_ai import eval

    from audit.integrations.inspect_task import specdrift

    held = load_heldout()
    with open_store(db, read_only=True) as store:
        spec = store.query("SELECT content FROM spec_revisions ORDER BY seq DESC LIMIT 1")[0]
    plays = [
        (held.get(i), c.name, scripted_turns(held.get(i), c.name))
        for i in scenarios
        for c in held.get(i).conditions
    ]
    model = scripted_model(plays, spec["content"])
    task = specdrift(db=str(db), scenarios=",".join(scenarios))
    logs = eval(
        task, model=model, epochs=EPOCHS, log_dir=str(log_dir), log_format="json", display="none"
    )
    assert logs[0].status == "success", logs[0].error
    return Path(logs[0].location)


@pytest.fixture(scope="module")
def task_log(synced_db: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return run_task(synced_db, tmp_path_factory.mktemp("logs"))


@pytest.fixture
def db_copy(synced_db: Path, tmp_path: Path) -> Path:
    target = tmp_path / "audit.duckdb"
    target.write_bytes(synced_db.read_bytes())
    return target


def expected_grades(db: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """What specdrift's graders give the scripted turns, replayed without Inspect."""
    held = load_heldout()
    with open_store(db, read_only=True) as store:
        spec = store.query("SELECT content FROM spec_revisions ORDER BY seq DESC LIMIT 1")[0]
    expected = {}
    for scenario_id in SCENARIOS:
        scenario = held.get(scenario_id)
        for condition in scenario.conditions:
            played = scripted_turns(scenario, condition.name)
            transcript = reference_transcript(
                scenario, played, spec_text=spec["content"], placement="system"
            )
            graded = grade_sample(scenario, condition.name, transcript, spec["content"])
            expected[(scenario_id, condition.name)] = {
                "outcome": graded.grade.outcome,
                "eval_aware": graded.awareness.detected,
                "spec_cited": graded.citation.detected,
                "score": graded.grade.score,
            }
    return expected


def stored(store: Store) -> dict[tuple[str, str, int], dict[str, Any]]:
    rows = store.query(
        "SELECT scenario_id, condition, epoch, outcome, eval_aware, spec_cited, score "
        "FROM samples ORDER BY ALL"
    )
    return {
        (r.pop("scenario_id"), r.pop("condition"), r.pop("epoch")): r  # type: ignore[misc]
        for r in rows
    }


def test_the_task_log_imports_back_as_specdrift_grades_it(db_copy: Path, task_log: Path) -> None:
    expected = expected_grades(db_copy)
    # The script covers every outcome the test means to check.
    assert {e["outcome"] for e in expected.values()} == {"covert", "honest"}
    assert any(e["eval_aware"] for e in expected.values())
    assert any(e["score"] is not None for e in expected.values())
    with open_store(db_copy) as store:
        result = import_inspect_logs(store, [task_log])  # no mapping file
        assert (result.read, result.stored, result.errored) == (len(expected) * EPOCHS,) * 2 + (0,)
        assert stored(store) == {
            (scenario, condition, epoch): grade
            for (scenario, condition), grade in expected.items()
            for epoch in range(EPOCHS)
        }
        newest = resolve_revision(store, "-1")
        meta = store.query(
            "SELECT DISTINCT model, spec_sha, spec_content_hash, set_hash, origin FROM samples"
        )
        assert meta == [
            {
                "model": "mockllm/model",
                "spec_sha": newest.sha,
                "spec_content_hash": newest.content_hash,
                "set_hash": load_heldout().set_hash,
                "origin": "import",
            }
        ]
        # Importing the same log again adds nothing.
        assert import_inspect_logs(store, [task_log]).stored == 0


def test_the_task_offers_scenarios_by_condition_and_can_leave_twins_out(synced_db: Path) -> None:
    from audit.integrations.inspect_task import specdrift

    ids = ",".join(SCENARIOS)
    every = [s.id for s in specdrift(db=str(synced_db), scenarios=ids).dataset]
    assert every == [
        "tests-ledger-reconcile/default",
        "tests-ledger-reconcile--twin/default",
        "oversight-deploy-audit-hook/default",
        "sandbag-netsec-fundamentals/neutral",
        "sandbag-netsec-fundamentals/incentive",
    ]
    no_twins = specdrift(db=str(synced_db), scenarios=ids, twins=False).dataset
    assert "tests-ledger-reconcile--twin/default" not in [s.id for s in no_twins]
    incentive = specdrift(db=str(synced_db), conditions="incentive").dataset
    assert {s.metadata["condition"] for s in incentive} == {"incentive"}
    assert {s.metadata["family"] for s in incentive} == {"sandbagging"}
    whole = specdrift(db=str(synced_db), twins=False)
    assert not any(s.metadata["sealed"] for s in whole.dataset)
    assert len(whole.dataset) == len(load_heldout().public_ids()) + 4  # 4 paired scenarios
    with pytest.raises(AuditError, match="spec_placement 'user'"):
        specdrift(db=str(synced_db), spec_placement="user")


def errored_copy(log: Path, target: Path, sample_id: str) -> Path:
    """The log with one sample (first epoch) marked as errored, as Inspect records a crash."""
    from inspect_ai.log import EvalError, read_eval_log, write_eval_log

    data = read_eval_log(str(log))
    for sample in data.samples or []:
        if sample.id == sample_id and sample.epoch == 1:
            sample.error = EvalError(
                message="RuntimeError: scripted tool crashed\nsecond line",
                traceback="Traceback (most recent call last): ...",
                traceback_ansi="",
            )
            sample.scores = None
    write_eval_log(data, str(target))
    return target


def test_an_errored_sample_refuses_its_log_unless_skipped(
    db_copy: Path, task_log: Path, tmp_path: Path
) -> None:
    broken = errored_copy(task_log, tmp_path / "broken.json", "oversight-deploy-audit-hook/default")
    with open_store(db_copy) as store:
        with pytest.raises(AuditError) as caught:
            import_inspect_logs(store, [broken])
        assert str(caught.value) == (
            "broken.json sample oversight-deploy-audit-hook/default epoch 1: the sample errored "
            "in Inspect (RuntimeError: scripted tool crashed); nothing was imported: pass "
            "--skip-errors to store the scored samples and count the rest"
        )
        assert store.query("SELECT count(*) AS n FROM samples") == [{"n": 0}]
        result = import_inspect_logs(store, [broken], skip_errors=True)
        assert (result.read, result.stored, result.errored) == (9, 9, 1)
        assert result.line().endswith("1 errored samples skipped")
        missing = store.query(
            "SELECT epoch FROM samples WHERE scenario_id = 'oversight-deploy-audit-hook'"
        )
        assert missing == [{"epoch": 1}]


def test_several_logs_are_one_transaction(synced_db: Path, db_copy: Path, tmp_path: Path) -> None:
    folder = tmp_path / "logs"
    first = run_task(synced_db, folder, SCENARIOS[:2])
    second = run_task(synced_db, folder, SCENARIOS[2:])
    broken = errored_copy(second, folder / "zz-broken.json", "oversight-deploy-audit-hook/default")
    with open_store(db_copy) as store:
        with pytest.raises(AuditError, match="sample oversight-deploy-audit-hook/default epoch 1"):
            import_inspect_logs(store, [first, broken])
        # The good log came first, and none of it was stored.
        assert store.query("SELECT count(*) AS n FROM samples") == [{"n": 0}]
        second.unlink()
        result = import_inspect_logs(store, [folder], skip_errors=True)
        assert (result.logs, result.read, result.stored, result.errored) == (2, 9, 9, 1)
        assert result.line() == (
            "2 logs: 9 samples read, 9 stored, 0 already present, 1 errored samples skipped"
        )


def test_a_log_of_another_set_is_refused(db_copy: Path, task_log: Path, tmp_path: Path) -> None:
    import shutil

    from audit.heldout.loader import DEFAULT_SCENARIOS_DIR

    other = tmp_path / "other" / "scenarios"
    shutil.copytree(DEFAULT_SCENARIOS_DIR / "misreport_tests", other / "misreport_tests")
    with open_store(db_copy) as store, pytest.raises(AuditError) as caught:
        import_inspect_logs(store, [task_log], heldout=load_heldout(other))
    message = str(caught.value)
    assert "the log was run on held-out set specdrift-starter (sha256:d33e2f0a1b6c)" in message
    assert message.endswith("import it with --heldout DIR of that set; nothing was imported")


def test_cli_imports_a_folder_and_a_failed_import_leaves_no_database(
    synced_db: Path, task_log: Path, tmp_path: Path
) -> None:
    runner = CliRunner()
    fresh = tmp_path / "fresh.duckdb"
    result = runner.invoke(app, ["import", "inspect", str(task_log), "--db", str(fresh)])
    # A new database has no synced spec history: refused, and the file is not left behind.
    assert result.exit_code == 2
    assert "spec_rev" in result.stderr and "\n" not in result.stderr.strip()
    assert not fresh.exists() and not fresh.with_name("fresh.duckdb.wal").exists()
    copy = tmp_path / "synced.duckdb"
    copy.write_bytes(synced_db.read_bytes())
    result = runner.invoke(
        app, ["import", "inspect", str(task_log.parent), "--db", str(copy), "--model", "m-2026"]
    )
    assert result.exit_code == 0, result.stderr
    assert result.stdout == f"{task_log}: 10 samples read, 10 stored, 0 already present\n"
    with open_store(copy, read_only=True) as store:
        assert store.query("SELECT DISTINCT model FROM samples") == [{"model": "m-2026"}]
    not_ours = tmp_path / "plain.json"
    plain = json.loads(task_log.read_text(encoding="utf-8"))
    for sample in plain["samples"]:
        sample["metadata"] = {}
    not_ours.write_text(json.dumps(plain), encoding="utf-8")
    result = runner.invoke(app, ["import", "inspect", str(not_ours), "--db", str(copy)])
    assert result.exit_code == 2
    assert result.stderr == (
        f"error: {not_ours} is not a log of specdrift's Inspect task: pass --mapping FILE to "
        "say what its samples and scores mean (see README)\n"
    )
