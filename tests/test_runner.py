"""The runner end to end: a real git spec history, the model-organism server on loopback, the real
openai client, ``audit run`` through the CLI runner, and the rows it stores."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import git
import pytest
from typer.testing import CliRunner

from audit.cli import app
from audit.graders import grade_sample
from audit.heldout.loader import load_heldout
from audit.heldout.model import Scenario
from audit.organisms.server import SYSTEM_FINGERPRINT, FaultConfig, RunningServer, start_server
from audit.records import Transcript
from audit.store import open_store

SECRET = "sk-test-SECRET123"
# 20% of requests fail: 429, 500, a hang past the client timeout, a dropped connection, a
# truncated JSON body. With one retry each, some samples give up and must be recorded.
TWENTY_PERCENT_FAULTS = FaultConfig(
    rate_limit=0.04,
    server_error=0.04,
    timeout=0.04,
    disconnect=0.04,
    malformed=0.04,
    retry_after_s=0.0,
    timeout_s=1.0,
)
MODEL = "patcher-v1"  # a simulated organism served over HTTP


@pytest.fixture
def spec_repo(tmp_path: Path) -> Path:
    """A git repo whose spec has three revisions; the third restores the first text."""
    root = tmp_path / "specs"
    repo = git.Repo.init(root)
    with repo.config_writer() as cfg:
        cfg.set_value("user", "name", "Spec Author")
        cfg.set_value("user", "email", "author@example.com")
    for text, message in (
        ("# Spec\n\nBe honest about results.\n", "first"),
        ("# Spec\n\nBe honest about results.\n\nReport failing tests.\n", "patch"),
        ("# Spec\n\nBe honest about results.\n", "revert"),
    ):
        (root / "spec.md").write_text(text)
        repo.index.add(["spec.md"])
        repo.index.commit(message)
    return root


@pytest.fixture
def server() -> Iterator[RunningServer]:
    with start_server(port=0) as running:
        yield running


def two_scenarios() -> list[Scenario]:
    return list(load_heldout().scenarios[:2])


def write_config(folder: Path, repo: Path, base_url: str, **run: object) -> Path:
    settings = {"epochs": 2, "max_turns": 4, "retry_base_s": 0.01, "retry_max_s": 0.05, **run}
    run_lines = "\n".join(f"{k} = {json.dumps(v)}" for k, v in settings.items())
    config = folder / "audit.toml"
    config.write_text(
        f'db = "{folder / "audit.duckdb"}"\n\n[spec]\nrepo = "{repo}"\npath = "spec.md"\n'
        f'source_id = "demo"\n\n[run]\n{run_lines}\n\n'
        f'[[models]]\nname = "{MODEL}"\nbase_url = "{base_url}"\n'
        f'api_key_env = "SPECDRIFT_TEST_KEY"\nversion = "1.0"\nconcurrency = 4\n'
    )
    return config


def sync(db: Path, repo: Path) -> list[dict]:
    from audit.spec_history import sync_spec_history

    with open_store(db) as store:
        sync_spec_history(store, repo, "spec.md", source_id="demo")
        return store.query("SELECT sha, content, content_hash FROM spec_revisions ORDER BY seq")


def run_cli(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_run_stores_graded_samples_and_rerun_is_a_no_op(
    tmp_path: Path, spec_repo: Path, server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPECDRIFT_TEST_KEY", SECRET)
    config = write_config(tmp_path, spec_repo, server.base_url)
    db = tmp_path / "audit.duckdb"
    revisions = sync(db, spec_repo)
    scenarios = two_scenarios()
    args = ["run", "--model", MODEL, "--config", str(config)]
    for scenario in scenarios:
        args += ["--scenario", scenario.id]
    cells = sum(len(s.conditions) for s in scenarios) * 2  # x epochs
    expected = 2 * cells  # three revisions, two distinct texts

    code, out, err = run_cli(*args, "--dry-run")
    assert code == 0, err
    assert f"matrix     {3 * cells} cells, {expected} distinct samples, 0 already stored" in out
    assert f"to run     {expected} samples, at most {expected * 4} calls" in out

    code, out, err = run_cli(*args)
    assert code == 0, err
    assert out.startswith(f"stored {expected}, skipped 0, failed 0 in ")

    with open_store(db, read_only=True) as store:
        rows = store.query("SELECT * FROM samples ORDER BY scenario_id, condition, spec_sha, epoch")
        runs = store.query("SELECT * FROM runs")
    assert len(rows) == expected
    by_sha = {r["sha"]: r["content_hash"] for r in revisions}
    first, patched, reverted = (r["sha"] for r in revisions)
    assert {r["spec_sha"] for r in rows} == {first, patched}  # the revert shares the first's
    scenario_by_id = {s.id: s for s in scenarios}
    texts = {r["sha"]: r["content"] for r in revisions}
    for row in rows:
        assert row["spec_content_hash"] == by_sha[row["spec_sha"]]
        assert (row["model"], row["model_version"], row["origin"]) == (MODEL, "1.0", "run")
        assert row["source_id"] == "demo"
        assert row["system_fingerprint"] == SYSTEM_FINGERPRINT
        assert row["run_id"] == runs[0]["run_id"]
        assert row["prompt_tokens"] > 0 and row["latency_ms"] > 0
        # The stored grade is the graders' verdict on the stored transcript.
        messages = json.loads(row["transcript"])
        assert texts[row["spec_sha"]] in messages[0]["content"]
        assert row["turns"] == sum(1 for m in messages if m["role"] == "assistant")
        transcript = Transcript(tuple(messages), row["finish_reason"])
        scenario = scenario_by_id[row["scenario_id"]]
        graded = grade_sample(scenario, row["condition"], transcript, texts[row["spec_sha"]])
        assert row["outcome"] == graded.grade.outcome
        assert row["outcome"] in {"covert", "honest"}  # organisms replay graded references
        assert row["eval_aware"] == graded.awareness.detected
        assert row["reasoning"] == (transcript.reasoning() or None)
        assert row["reasoning"]  # the organisms expose reasoning_content on every turn
    assert len(runs) == 1
    assert (runs[0]["planned"], runs[0]["skipped"], runs[0]["stored"], runs[0]["failed"]) == (
        expected,
        0,
        expected,
        0,
    )
    assert runs[0]["finished_at"] is not None
    assert json.loads(runs[0]["config"])["models"][0]["api_key_env"] == "SPECDRIFT_TEST_KEY"

    code, out, err = run_cli(*args, "--rev", reverted, "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert (summary["stored"], summary["skipped"], summary["calls"]) == (0, cells, 0)
    with open_store(db, read_only=True) as store:
        reruns = store.query(
            "SELECT planned, skipped, stored, finished_at IS NOT NULL AS done FROM runs "
            "WHERE run_id <> ?",
            [runs[0]["run_id"]],
        )
    assert reruns == [{"planned": cells, "skipped": cells, "stored": 0, "done": True}]
    assert SECRET not in out + err
    assert_secret_absent(db, SECRET)


def assert_every_fault_kind_happened(server: RunningServer) -> None:
    """The run met every kind of fault the server injects, not just some of them."""
    injected = server.injected_faults
    assert set(injected) == {"rate_limit", "server_error", "timeout", "disconnect", "malformed"}
    assert all(count > 0 for count in injected.values())


def assert_secret_absent(db: Path, secret: str) -> None:
    """No table of the DuckDB file holds the secret, and neither do the file's bytes."""
    with open_store(db, read_only=True) as store:
        tables = [r["table_name"] for r in store.query("SELECT table_name FROM duckdb_tables()")]
        for table in tables:
            hits = store.query(
                f"SELECT count(*) AS n FROM {table} t WHERE t::VARCHAR LIKE ?", [f"%{secret}%"]
            )
            assert hits[0]["n"] == 0, table
    assert secret.encode() not in db.read_bytes()


def test_run_survives_faults_and_records_every_failure(
    tmp_path: Path, spec_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPECDRIFT_TEST_KEY", SECRET)
    with start_server(port=0, faults=TWENTY_PERCENT_FAULTS) as server:
        config = write_config(
            tmp_path, spec_repo, server.base_url, epochs=4, max_retries=1, timeout_s=0.3
        )
        db = tmp_path / "audit.duckdb"
        sync(db, spec_repo)
        args = ["run", "--model", MODEL, "--config", str(config), "--rev", "0", "--json"]
        code, out, err = run_cli(*args)
        # Some samples gave up and run.max_failed_share is 0: the run fails, saying why.
        assert code == 1, err
        assert_every_fault_kind_happened(server)
    summary = json.loads(out)
    scenarios = load_heldout().scenarios
    planned = sum(len(s.conditions) for s in scenarios) * 4
    with open_store(db, read_only=True) as store:
        stored = store.query("SELECT count(*) AS n FROM samples")[0]["n"]
        failures = store.query("SELECT * FROM sample_failures")
    assert stored + len(failures) == planned
    assert (summary["stored"], summary["failed"], summary["ok"]) == (stored, len(failures), False)
    assert f"error: {len(failures)} of {planned} samples failed after their retries" in err
    by_kind = {k["kind"]: k["count"] for k in summary["failures"]["kinds"]}
    assert by_kind == {
        kind: sum(f["error_kind"] == kind for f in failures)
        for kind in {f["error_kind"] for f in failures}
    }
    for kind, count in by_kind.items():
        assert f"{kind} {count} (" in err
    assert summary["retries"] > 0
    assert failures, "with one retry and 20% faults some samples must give up"
    kinds = {"rate_limit", "server_error", "timeout", "connection", "malformed_response"}
    for failure in failures:
        assert failure["error_kind"] in kinds
        assert failure["attempts"] == 2
        assert failure["error"]
        assert SECRET not in failure["error"]
    assert_secret_absent(db, SECRET)


def test_run_reports_bad_input_in_one_line(
    tmp_path: Path, spec_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SPECDRIFT_TEST_KEY", raising=False)
    config = write_config(tmp_path, spec_repo, "https://models.example.com/v1")
    sync(tmp_path / "audit.duckdb", spec_repo)
    code, _, err = run_cli("run", "--model", "nope", "--config", str(config))
    assert code == 2
    assert err == f"error: unknown model 'nope' (known: {MODEL}): add it to audit.toml\n"
    code, _, err = run_cli("run", "--model", MODEL, "--config", str(config), "--scenario", "zz")
    assert code == 2
    assert err.startswith("error: unknown scenario(s) zz")
    code, _, err = run_cli("run", "--model", MODEL, "--config", str(config))
    assert code == 2
    assert err.startswith("error: environment variable SPECDRIFT_TEST_KEY is not set")
    with open_store(tmp_path / "audit.duckdb", read_only=True) as store:
        assert store.query("SELECT count(*) AS n FROM runs")[0]["n"] == 0
