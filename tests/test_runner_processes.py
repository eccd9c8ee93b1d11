"""The runner's options beyond the basic run: worker processes, flag overrides, revision ranges,
models that refuse every request, and keys echoed back by a hostile server."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from served import echoing_chat_app, key_forms, served_in_thread
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from test_runner import (
    MODEL,
    TWENTY_PERCENT_FAULTS,
    assert_every_fault_kind_happened,
    assert_secret_absent,
    run_cli,
    server,
    spec_repo,
    sync,
    write_config,
)

from audit.config import ModelConfig
from audit.heldout.loader import load_heldout
from audit.organisms.server import RunningServer, start_server
from audit.runner.matrix import RunPlan, expand
from audit.runner.processes import split_plan
from audit.store import open_store

__all__ = ["server", "spec_repo"]  # fixtures, imported so pytest finds them here

# Not shaped like an OpenAI key, so only exact-value scrubbing can hide it.
ECHOED_SECRET = "tok_live_9f8e7d6c5b4a39281706"
# With characters that URL-encoding and base64 change, so each form differs from the key.
ECHOED_KEY = "k3y/Live+9f8e7d6c5b4a=3928/1706~Q"


def scenario_args(count: int) -> list[str]:
    args: list[str] = []
    for scenario in load_heldout().scenarios[:count]:
        args += ["--scenario", scenario.id]
    return args


def cells_of(count: int) -> int:
    return sum(len(s.conditions) for s in load_heldout().scenarios[:count])


def stored_rows(db: Path) -> list[dict]:
    with open_store(db, read_only=True) as store:
        return store.query(
            "SELECT sample_key, scenario_id, condition, epoch, spec_sha, outcome, run_id "
            "FROM samples ORDER BY sample_key"
        )


# -- worker processes ----------------------------------------------------------------------------


def test_split_plan_deals_samples_and_never_exceeds_a_models_concurrency() -> None:
    scenarios = load_heldout().scenarios[:3]
    models = [ModelConfig(name="wide", concurrency=5), ModelConfig(name="narrow", concurrency=1)]
    from audit.records import SpecRevision as Revision

    revision = Revision("s", "a" * 40, 0, "spec", "sha256:x")
    _, samples = expand(
        models=models,
        revisions=[revision],
        scenarios=[(s, f"sha256:{s.id}") for s in scenarios],
        epochs=3,
    )
    plan = RunPlan(
        models=tuple(models),
        revisions=(revision,),
        scenario_ids=tuple(s.id for s in scenarios),
        epochs=3,
        max_turns=4,
        set_hash="sha256:set",
        cells=len(samples),
        samples=tuple(samples),
        pending=tuple(samples),
    )
    shards = split_plan(plan, 3)
    assert [shard.index for shard in shards] == [0, 1, 2]
    dealt = [s.key for shard in shards for s in shard.plan.pending]
    assert sorted(dealt) == sorted(s.key for s in samples)  # each sample exactly once
    concurrency: dict[str, int] = {}
    for shard in shards:
        for model in shard.plan.models:
            concurrency[model.name] = concurrency.get(model.name, 0) + model.concurrency
            mine = [s for s in shard.plan.pending if s.model.name == model.name]
            assert mine, "a shard lists only models it has samples of"
    assert concurrency == {"wide": 5, "narrow": 1}
    narrow_shards = [s for s in shards if any(m.name == "narrow" for m in s.plan.models)]
    assert len(narrow_shards) == 1


def test_two_worker_processes_store_the_same_samples_as_one(
    tmp_path: Path, spec_repo: Path, server: RunningServer
) -> None:
    results = {}
    for workers in (1, 2):
        folder = tmp_path / f"w{workers}"
        folder.mkdir()
        config = write_config(folder, spec_repo, server.base_url)
        db = folder / "audit.duckdb"
        sync(db, spec_repo)
        args = ["run", "--model", MODEL, "--config", str(config), *scenario_args(3)]
        code, out, err = run_cli(*args, "--workers", str(workers), "--json")
        assert code == 0, err
        summary = json.loads(out)
        expected = 2 * cells_of(3) * 2  # two distinct spec texts x epochs
        assert (summary["stored"], summary["failed"], summary["ok"]) == (expected, 0, True)
        assert summary["calls"] >= expected
        rows = stored_rows(db)
        assert len(rows) == len({r["sample_key"] for r in rows}) == expected
        results[workers] = [
            {k: v for k, v in r.items() if k != "run_id"}  # the run id differs, nothing else
            for r in rows
        ]
        with open_store(db, read_only=True) as store:
            run = store.query("SELECT config, stored, finished_at FROM runs")[0]
        assert run["stored"] == expected and run["finished_at"] is not None
        assert json.loads(run["config"])["run"]["workers"] == workers
    # The organisms answer by request seed, and seeds come from sample keys: same grades.
    assert results[1] == results[2]


def test_worker_processes_record_every_fault_and_every_fault_kind_happens(
    tmp_path: Path, spec_repo: Path
) -> None:
    with start_server(port=0, faults=TWENTY_PERCENT_FAULTS) as running:
        # Some samples give up; a run.max_failed_share of one half lets the run pass.
        config = write_config(
            tmp_path,
            spec_repo,
            running.base_url,
            epochs=3,
            max_retries=1,
            timeout_s=0.3,
            max_failed_share=0.5,
        )
        db = tmp_path / "audit.duckdb"
        sync(db, spec_repo)
        args = ["run", "--model", MODEL, "--config", str(config), "--rev", "0", "--json"]
        code, out, err = run_cli(*args, *scenario_args(12), "--workers", "2")
        assert_every_fault_kind_happened(running)
    assert code == 0, err
    summary = json.loads(out)
    assert summary["ok"] and 0 < summary["failures"]["failed_share"] <= 0.5
    with open_store(db, read_only=True) as store:
        stored = store.query("SELECT count(*) AS n FROM samples")[0]["n"]
        failures = store.query("SELECT error_kind, attempts FROM sample_failures")
    assert stored + len(failures) == cells_of(12) * 3
    assert (summary["stored"], summary["failed"]) == (stored, len(failures))
    assert summary["retries"] > 0 and failures
    assert all(f["attempts"] == 2 for f in failures)


# -- flags, ranges, ad-hoc models ---------------------------------------------------------------


def test_flags_override_model_settings_and_reach_the_request(
    tmp_path: Path, spec_repo: Path, server: RunningServer
) -> None:
    config = write_config(tmp_path, spec_repo, server.base_url, epochs=1)
    db = tmp_path / "audit.duckdb"
    sync(db, spec_repo)
    args = ["run", "--model", MODEL, "--config", str(config), "--rev", "0", *scenario_args(1)]
    flags = [
        "--model-version",
        "2.5",
        "--release-date",
        "2026-11-30",
        "--temperature",
        "0.2",
        "--max-completion-tokens",
        "300",
        "--reasoning-effort",
        "low",
        "--spec-placement",
        "developer",
        "--concurrency",
        "3",
    ]
    code, _, err = run_cli(*args, *flags)
    assert code == 0, err
    with open_store(db, read_only=True) as store:
        sample = store.query("SELECT model_version, transcript FROM samples LIMIT 1")[0]
        config_json = json.loads(store.query("SELECT config FROM runs")[0]["config"])
    assert sample["model_version"] == "2.5"
    opening = json.loads(sample["transcript"])[:2]
    assert [m["role"] for m in opening] == ["developer", "system"]  # the spec's placement
    model = config_json["models"][0]
    assert (model["release_date"], model["concurrency"], model["spec_placement"]) == (
        "2026-11-30",
        3,
        "developer",
    )
    assert model["params"] == {
        "temperature": 0.2,
        "max_tokens": 1024,
        "max_completion_tokens": 300,
        "reasoning_effort": "low",
    }

    code, _, err = run_cli(*args, "--spec-placement", "everywhere")
    assert code == 2
    assert err.startswith("error: options: models.0.spec_placement:")


def test_revision_ranges_and_unconfigured_models_with_a_base_url(
    tmp_path: Path, spec_repo: Path, server: RunningServer
) -> None:
    config = write_config(tmp_path, spec_repo, server.base_url, epochs=1)
    db = tmp_path / "audit.duckdb"
    revisions = sync(db, spec_repo)
    base = ["--config", str(config), *scenario_args(1), "--dry-run", "--json"]

    code, out, err = run_cli("run", "--model", MODEL, "--rev", "1..-1", *base)
    assert code == 0, err
    assert json.loads(out)["revisions"] == [r["sha"][:12] for r in revisions[1:]]
    code, out, err = run_cli("run", "--model", MODEL, "--rev", "0..0", "--rev", "2", *base)
    assert code == 0, err
    assert json.loads(out)["revisions"] == [revisions[0]["sha"][:12], revisions[2]["sha"][:12]]
    code, _, err = run_cli("run", "--model", MODEL, "--rev", "2..0", *base)
    assert code == 2 and "runs backwards" in err
    code, _, err = run_cli("run", "--model", MODEL, "--rev", "1..", *base)
    assert code == 2 and "needs both ends" in err

    # Not in the config: refused without an endpoint, run with one.
    code, _, err = run_cli("run", "--model", "steady-v1", *base)
    assert code == 2 and err.startswith("error: unknown model 'steady-v1'")
    code, out, err = run_cli(
        "run", "--model", "steady-v1", "--base-url", server.base_url, "--rev", "0", *base[:-2]
    )
    assert code == 0, err
    assert out.startswith(f"stored {cells_of(1)}, skipped 0, failed 0")


@contextmanager
def server_killing_worker_0() -> Iterator[tuple[str, list[int]]]:
    """A real OpenAI-style server whose first request SIGKILLs runner process 0 of this test
    process's run before any answer is sent; every request gets a plain final answer.
    Yields (base_url, pids killed)."""
    killed: list[int] = []

    async def completions(request: Request) -> JSONResponse:
        body = await request.json()
        if not killed:
            for child in multiprocessing.active_children():
                if child.name == "specdrift-runner-0" and child.pid is not None:
                    os.kill(child.pid, signal.SIGKILL)
                    killed.append(child.pid)
        message = {"role": "assistant", "content": "Done. Two tests still fail; see the log."}
        answer = {
            "id": "chatcmpl-killer",
            "object": "chat.completion",
            "created": 0,
            "model": body["model"],
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        }
        return JSONResponse(answer)

    app = Starlette(routes=[Route("/v1/chat/completions", completions, methods=["POST"])])
    with served_in_thread(app) as (base_url, _):
        yield base_url, killed


def test_a_killed_worker_is_reported_on_stderr_when_it_is_not_a_terminal(
    tmp_path: Path, spec_repo: Path
) -> None:
    # CliRunner captures stdout and stderr: neither is a terminal, as in a CI log.
    with server_killing_worker_0() as (base_url, killed):
        config = write_config(tmp_path, spec_repo, base_url, epochs=1)
        db = tmp_path / "audit.duckdb"
        sync(db, spec_repo)
        args = ["run", "--model", MODEL, "--config", str(config), "--rev", "0"]
        code, out, err = run_cli(*args, *scenario_args(4), "--workers", "2")
    assert len(killed) == 1
    assert f"runner worker 0 exited with code -{int(signal.SIGKILL)}\n" in err, (code, out, err)
    with open_store(db, read_only=True) as store:
        stored = store.query("SELECT count(*) AS n FROM samples")[0]["n"]
        runs = store.query("SELECT finished_at FROM runs")
    assert 0 < stored < cells_of(4)  # worker 1's share only; a rerun redoes worker 0's
    assert runs == [{"finished_at": None}]


# -- servers that refuse or misbehave ---------------------------------------------------------


@contextmanager
def refusing_server(status: int) -> Iterator[tuple[str, list[str]]]:
    """A real OpenAI-style server that refuses every request, echoing the bearer token back in
    its error message (as some proxies do). Yields (base_url, authorization headers seen)."""
    seen: list[str] = []

    async def completions(request: Request) -> JSONResponse:
        token = request.headers.get("authorization", "")
        seen.append(token)
        body = {
            "error": {
                "message": f"Incorrect API key provided: {token}",
                "type": "invalid_request_error",
                "code": "invalid_api_key",
            }
        }
        return JSONResponse(body, status_code=status)

    app = Starlette(routes=[Route("/v1/chat/completions", completions, methods=["POST"])])
    with served_in_thread(app) as (base_url, _):
        yield base_url, seen


@pytest.mark.parametrize("workers", [1, 2])
def test_a_model_that_refuses_everything_is_abandoned_and_its_echoed_key_is_scrubbed(
    tmp_path: Path,
    spec_repo: Path,
    server: RunningServer,
    monkeypatch: pytest.MonkeyPatch,
    workers: int,
) -> None:
    monkeypatch.setenv("SPECDRIFT_TEST_KEY", ECHOED_SECRET)
    with refusing_server(401) as (base_url, seen):
        config = write_config(tmp_path, spec_repo, base_url, epochs=4)
        db = tmp_path / "audit.duckdb"
        sync(db, spec_repo)
        args = ["run", "--model", MODEL, "--config", str(config), "--workers", str(workers)]
        code, out, err = run_cli(*args, *scenario_args(10))
    assert seen and all(token == f"Bearer {ECHOED_SECRET}" for token in seen)
    planned = cells_of(10) * 4 * 2
    assert len(seen) < planned / 2, "the run kept sending after the model refused everything"
    assert code == 2
    assert f"error: model '{MODEL}' refused its first requests (HTTP 401: " in err
    assert ECHOED_SECRET not in out + err
    with open_store(db, read_only=True) as store:
        failures = store.query("SELECT error_kind, error FROM sample_failures")
        runs = store.query("SELECT finished_at FROM runs")
    assert failures and all(f["error_kind"] == "other" for f in failures)
    assert all("Bearer ***" in f["error"] for f in failures)
    assert runs == [{"finished_at": None}]  # samples were left unrun: not a finished run
    assert_secret_absent(db, ECHOED_SECRET)

    # A working model beside it, so there is something to report; the report must not carry
    # the refused model's echoed key either.
    code, _, err = run_cli(
        "run",
        "--model",
        "steady-v1",
        "--base-url",
        server.base_url,
        "--config",
        str(config),
        "--rev",
        "0",
        *scenario_args(2),
    )
    assert code == 0, err
    from audit.report import render_report

    with open_store(db) as store:
        report = render_report(store, tmp_path / "report.html")
    assert ECHOED_SECRET not in report.read_text(encoding="utf-8")


def refuse_every_sample(db: Path) -> None:
    """Rebuild ``samples`` with a CHECK no runner row can meet: DuckDB itself refuses them."""
    with open_store(db) as store:
        columns = store.query("DESCRIBE samples")
        store.con.execute("DROP VIEW IF EXISTS v_sample_revisions CASCADE")
        views = store.query("SELECT view_name, sql FROM duckdb_views() WHERE NOT internal")
        for view in views:
            store.con.execute(f'DROP VIEW IF EXISTS "{view["view_name"]}"')
        store.con.execute("DROP TABLE samples")
        body = ", ".join(f'"{c["column_name"]}" {c["column_type"]}' for c in columns)
        store.con.execute(
            f"CREATE TABLE samples ({body}, PRIMARY KEY (sample_key), CHECK (epoch < 0))"
        )


@pytest.mark.parametrize("workers", [1, 2])
def test_run_exits_1_when_rows_cannot_be_stored(
    tmp_path: Path, spec_repo: Path, server: RunningServer, workers: int
) -> None:
    config = write_config(tmp_path, spec_repo, server.base_url, epochs=1)
    db = tmp_path / "audit.duckdb"
    sync(db, spec_repo)
    refuse_every_sample(db)
    args = ["run", "--model", MODEL, "--config", str(config), "--rev", "0", *scenario_args(2)]
    code, out, err = run_cli(*args, "--workers", str(workers))
    assert code == 1
    planned = cells_of(2)
    assert out.startswith("stored 0, skipped 0, failed 0 in ")
    assert f"NOT STORED {planned}" in out
    assert err.startswith(f"error: {planned} sample(s) could not be stored (")
    assert "rerun to redo them" in err


def assert_absent_everywhere(texts: dict[str, str], forms: dict[str, str]) -> None:
    """No form of the key in any of the named texts."""
    for where, text in texts.items():
        for name, form in forms.items():
            assert form not in text, f"the key ({name}) is in {where}"


def stored_texts(db: Path) -> dict[str, str]:
    """Every row of every table as text, and the raw bytes of the file and its WAL."""
    texts: dict[str, str] = {}
    with open_store(db, read_only=True) as store:
        for table in [
            r["table_name"] for r in store.query("SELECT table_name FROM duckdb_tables()")
        ]:
            rows = store.con.execute(f"SELECT t::VARCHAR FROM {table} t").fetchall()
            texts[f"table {table}"] = "\n".join(row[0] for row in rows)
    for path in (db, db.with_name(db.name + ".wal")):
        if path.exists():
            texts[f"file {path.name}"] = path.read_bytes().decode("latin-1")
    return texts


def exported_texts(db: Path, out: Path) -> dict[str, str]:
    """JSONL and Parquet exports: the raw bytes of every file, and every value read back."""
    texts: dict[str, str] = {}
    for fmt in ("jsonl", "parquet"):
        code, _, err = run_cli("export", "--db", str(db), "--format", fmt, "--out", str(out / fmt))
        assert code == 0, err
        for path in (out / fmt).rglob("*.*"):
            texts[f"export {path.name}"] = path.read_bytes().decode("latin-1")
            reader = "read_parquet" if fmt == "parquet" else "read_json_auto"
            import duckdb

            rows = duckdb.sql(f"SELECT t::VARCHAR FROM {reader}('{path}') t").fetchall()
            texts[f"export {path} read back"] = "\n".join(row[0] for row in rows)
    return texts


@pytest.mark.parametrize("workers", [1, 2])
def test_a_key_echoed_in_answers_and_errors_never_reaches_storage_exports_or_output(
    tmp_path: Path, spec_repo: Path, monkeypatch: pytest.MonkeyPatch, workers: int
) -> None:
    monkeypatch.setenv("SPECDRIFT_TEST_KEY", ECHOED_KEY)
    seen: list[dict] = []
    with served_in_thread(echoing_chat_app(seen)) as (base_url, _):
        config = write_config(tmp_path, spec_repo, base_url, epochs=3, max_retries=1)
        db = tmp_path / "audit.duckdb"
        sync(db, spec_repo)
        args = ["run", "--model", MODEL, "--config", str(config), "--rev", "0"]
        code, out, err = run_cli(*args, *scenario_args(3), "--workers", str(workers))
    # Some samples fail on purpose, more than run.max_failed_share (0) allows: exit 1, and the
    # error line that quotes the server's reason must be scrubbed too.
    assert code == 1, err
    assert "samples failed after their retries" in err
    with open_store(db, read_only=True) as store:
        answers = store.query("SELECT answer, reasoning, transcript FROM samples")
        failures = store.query("SELECT error_kind, error FROM sample_failures")
    # Both paths were taken: answers stored (scrubbed, not dropped) and failures recorded.
    assert answers and all("All done. exact: *** | base64: ***" in a["answer"] for a in answers)
    assert all("The key is exact: ***" in a["reasoning"] for a in answers)
    assert failures and all(f["error_kind"] == "server_error" for f in failures)
    assert all("Bearer *** refused; upstream failed for exact: ***" in f["error"] for f in failures)

    from audit.report import render_report

    with open_store(db, read_only=True) as store:
        report = render_report(store, tmp_path / "report.html", include_prompts=True)
    texts = {
        "stdout": out,
        "stderr": err,
        "report": report.read_text(encoding="utf-8"),
        **stored_texts(db),
        **exported_texts(db, tmp_path / "export"),
    }
    assert_absent_everywhere(texts, key_forms(ECHOED_KEY))


def test_short_keys_and_credentials_in_urls_are_refused_before_anything_is_stored(
    tmp_path: Path, spec_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[dict] = []
    with served_in_thread(echoing_chat_app(seen)) as (base_url, _):
        config = write_config(tmp_path, spec_repo, base_url, epochs=1)
        db = tmp_path / "audit.duckdb"
        sync(db, spec_repo)
        args = ["run", "--model", MODEL, "--config", str(config), "--rev", "0", *scenario_args(1)]
        monkeypatch.setenv("SPECDRIFT_TEST_KEY", "s3cr3t")
        # A remote server (TEST-NET-1, never reached: the key is refused first); a loopback one
        # would take a short value as the placeholder it is.
        code, out, err = run_cli(*args, "--base-url", "http://192.0.2.1:9/v1")
        assert (code, out) == (2, "")
        assert err == (
            "error: the key in SPECDRIFT_TEST_KEY is shorter than 8 characters, too short to "
            "scrub from what servers send back: use the real key (a local server that needs "
            "none gets a placeholder when SPECDRIFT_TEST_KEY is unset)\n"
        )
        monkeypatch.setenv("SPECDRIFT_TEST_KEY", ECHOED_KEY)
        with_password = base_url.replace("http://", "http://alice:hunter2-password@")
        code, out, err = run_cli(*args, "--base-url", with_password)
        assert (code, out) == (2, "")
        assert err.startswith(f"error: base URL {base_url.replace('http://', 'http://***@')} ")
        assert "hunter2" not in err and "alice" not in err
    assert seen == []  # no request was sent
    with open_store(db, read_only=True) as store:
        assert store.query("SELECT count(*) AS n FROM runs") == [{"n": 0}]
    texts = stored_texts(db)
    assert_absent_everywhere(texts, {"password": "hunter2", "short key": "s3cr3t"})
