"""Batch mode end to end: a real git spec history, the organism server's Chat, Files and Batches
endpoints on loopback, the real openai client, the CLI, and the rows it stores, compared row for
row with a live run of the same matrix."""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import git
import pytest
from batch_executor import answer_file
from test_runner import MODEL, SECRET, assert_secret_absent, run_cli, sync, write_config

from audit.config import load_config
from audit.heldout.loader import load_heldout
from audit.organisms.batches import BatchSettings
from audit.organisms.server import RunningServer, start_server
from audit.runner import run_matrix
from audit.runner.batch import run_batch
from audit.store import open_store

EPOCHS = 2
# Timing columns and run ids differ between a batch run and a live run; nothing else may.
COMPARED = (
    "sample_key, origin, model, model_version, source_id, spec_sha, spec_content_hash, "
    "set_hash, scenario_id, scenario_hash, family, condition, epoch, params_hash, outcome, "
    "eval_aware, spec_cited, score, grade_evidence, awareness_evidence, reasoning, answer, "
    "transcript, turns, prompt_tokens, completion_tokens, reasoning_tokens, finish_reason, "
    "system_fingerprint"
)


def scenario_ids() -> list[str]:
    """Six scenarios: a twin pair, a paired-condition (sandbagging) one, several families."""
    heldout = load_heldout()
    public = [s for s in heldout.scenarios if not s.sealed]
    chosen = [public[0], public[5], public[11]]
    chosen += [next(s for s in heldout.scenarios if s.twin_of == public[0].id)]
    chosen += [next(s for s in heldout.scenarios if len(s.conditions) > 1)]
    chosen += [public[20]]
    return list(dict.fromkeys(s.id for s in chosen))


def make_spec_repo(root: Path) -> Path:
    """Two spec texts over three commits (the third restores the first)."""
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


def stored_rows(db: Path) -> list[dict]:
    with open_store(db, read_only=True) as store:
        return store.query(f"SELECT {COMPARED} FROM samples ORDER BY sample_key")


def scenario_args() -> list[str]:
    args: list[str] = []
    for scenario in scenario_ids():
        args += ["--scenario", scenario]
    return args


@pytest.fixture(scope="module")
def spec_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_spec_repo(tmp_path_factory.mktemp("batch-specs"))


@pytest.fixture(scope="module")
def live_rows(spec_root: Path, tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    """The matrix run live, once: what every batch path must store."""
    folder = tmp_path_factory.mktemp("live")
    with start_server(port=0) as server:
        config = load_config(write_config(folder, spec_root, server.base_url, epochs=EPOCHS))
        db = folder / "audit.duckdb"
        sync(db, spec_root)
        with open_store(db) as store:
            summary = run_matrix(
                store, config, models=None, revisions=None, scenario_ids=scenario_ids()
            )
    assert summary.stored > 20 and summary.failed == 0
    return stored_rows(db)


@pytest.fixture
def key(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("SPECDRIFT_TEST_KEY", SECRET)
    return SECRET


def batch_config(folder: Path, spec_root: Path, base_url: str, **run: object) -> Path:
    """The test config with [batch] polling every 20 ms."""
    path = write_config(folder, spec_root, base_url, epochs=EPOCHS, **run)
    path.write_text(path.read_text() + "\n[batch]\npoll_s = 0.02\n")
    return path


@pytest.fixture
def batch_server() -> Iterator[RunningServer]:
    with start_server(port=0, batch=BatchSettings(delay_s=0.2)) as running:
        yield running


def every_request_once(server: RunningServer) -> list[str]:
    """Every request line the server was given, asserting none came twice."""
    lines = [cid for batch in server.batches for cid in batch.custom_ids]
    uploaded = [
        json.loads(line)["custom_id"]
        for data in server.uploaded_files.values()
        for line in data.splitlines()
        if b'"method":"POST"' in line
    ]
    assert len(uploaded) == len(set(uploaded)), "a request was submitted twice"
    assert len(lines) == len(set(lines))
    return uploaded


def test_batch_sweep_stores_the_rows_a_live_sweep_stores(
    tmp_path: Path, spec_root: Path, live_rows: list[dict], batch_server: RunningServer, key: str
) -> None:
    config = batch_config(tmp_path, spec_root, batch_server.base_url)
    db = tmp_path / "audit.duckdb"
    sync(db, spec_root)

    code, out, err = run_cli("sweep", "--batch", "--config", str(config), *scenario_args())
    assert code == 0, err
    assert out.startswith(f"stored {len(live_rows)}, skipped 0, failed 0 in ")
    assert "wave 0:" in err  # not a terminal: a line per wave for the log
    assert stored_rows(db) == live_rows

    with open_store(db, read_only=True) as store:
        runs = store.query(
            "SELECT run_id, mode, command, finished_at IS NOT NULL AS done FROM runs"
        )
        parts = store.query(
            "SELECT wave, status, via, batch_id IS NOT NULL AS has_batch, "
            "ingested_at IS NOT NULL AS read FROM batch_parts ORDER BY wave"
        )
        kept = store.query("SELECT count(*) AS n FROM batch_requests WHERE response IS NOT NULL")
        latency = store.query("SELECT count(*) AS n FROM samples WHERE latency_ms IS NOT NULL")
        states = store.query("SELECT state, count(*) AS n FROM batch_samples GROUP BY ALL")
    assert [(r["mode"], r["command"], r["done"]) for r in runs] == [("batch", "sweep", True)]
    # One batch per wave (one model); the deepest conversation sets the number of waves.
    deepest = max(r["turns"] for r in live_rows)
    assert [p["wave"] for p in parts] == list(range(deepest))
    assert all(
        p == {**p, "status": "completed", "via": "api", "has_batch": True, "read": True}
        for p in parts
    )
    assert kept == [{"n": 0}]  # answers of stored samples are dropped: the transcripts keep them
    assert latency == [{"n": 0}]  # a batch has no per-request latency
    assert states == [{"state": "stored", "n": len(live_rows)}]
    assert len(every_request_once(batch_server)) == sum(r["turns"] for r in live_rows)

    # The key is sent as a bearer token only: not in the files, the database or the output.
    assert all(SECRET.encode() not in data for data in batch_server.uploaded_files.values())
    assert SECRET not in out + err
    assert_secret_absent(db, SECRET)

    code, out, err = run_cli(
        "sweep", "--batch", "--config", str(config), "--json", *scenario_args()
    )
    assert code == 0, err
    summary = json.loads(out)
    assert (summary["stored"], summary["skipped"], summary["calls"], summary["waves"]) == (
        0,
        len(live_rows),
        0,
        [],
    )


def test_run_batch_retries_expired_and_failed_batches_and_error_lines(
    tmp_path: Path, spec_root: Path, live_rows: list[dict], key: str
) -> None:
    # Batch 0 expires with half its requests answered, batch 2 fails validation, and one
    # request in six gets an error line: every request is retried until it is answered.
    settings = BatchSettings(delay_s=0.05, expire=(0,), fail=(2,), request_error=1 / 6, seed=3)
    with start_server(port=0, batch=settings) as server:
        config = batch_config(tmp_path, spec_root, server.base_url, max_retries=6)
        db = tmp_path / "audit.duckdb"
        sync(db, spec_root)
        code, out, err = run_cli(
            "run", "--batch", "--model", MODEL, "--config", str(config), "--json", *scenario_args()
        )
        assert code == 0, err
        every_request_once(server)
    summary = json.loads(out)
    assert (summary["stored"], summary["failed"]) == (len(live_rows), 0)
    assert summary["retries"] > 0
    assert stored_rows(db) == live_rows
    with open_store(db, read_only=True) as store:
        statuses = store.query(
            "SELECT status, count(*) AS n FROM batch_parts GROUP BY ALL ORDER BY 1"
        )
        requests = store.query(
            "SELECT state, error_kind, count(*) AS n FROM batch_requests GROUP BY ALL ORDER BY 1, 2"
        )
        reasons = store.query(
            "SELECT DISTINCT error FROM batch_requests "
            "WHERE state = 'failed' AND error_kind = 'server_error'"
        )
    assert {r["status"] for r in statuses} == {"completed", "expired", "failed"}
    by_state = {(r["state"], r["error_kind"]): r["n"] for r in requests}
    assert by_state[("expired", "expired")] > 0  # unanswered lines of the expired batch
    assert by_state[("failed", "other")] > 0  # the lines of the batch that failed validation
    assert by_state[("failed", "server_error")] > 0  # the error lines
    assert by_state[("answered", None)] == sum(r["turns"] for r in live_rows)
    assert reasons == [{"error": "HTTP 500: Internal error (simulated batch request error)."}]


def test_requests_that_keep_failing_give_up_then_a_rerun_finishes_them(
    tmp_path: Path, spec_root: Path, live_rows: list[dict], key: str
) -> None:
    db = tmp_path / "audit.duckdb"
    sync(db, spec_root)
    with start_server(port=0, batch=BatchSettings(request_error=1.0)) as broken:
        config = batch_config(tmp_path, spec_root, broken.base_url, max_retries=1)
        code, out, err = run_cli("sweep", "--batch", "--config", str(config), *scenario_args())
    # Every sample failed, more than run.max_failed_share (0) allows: exit 1, saying why.
    assert code == 1, err
    assert out.startswith(f"stored 0, skipped 0, failed {len(live_rows)} in ")
    assert f"error: {len(live_rows)} of {len(live_rows)} samples failed after their retries" in err
    assert "server_error" in err
    with open_store(db, read_only=True) as store:
        failures = store.query("SELECT DISTINCT error_kind, error, attempts FROM sample_failures")
    # As in a live run with one retry: two attempts, the server's reason.
    assert failures == [
        {
            "error_kind": "server_error",
            "error": "HTTP 500: Internal error (simulated batch request error).",
            "attempts": 2,
        }
    ]
    with start_server(port=0, batch=BatchSettings()) as healthy:
        config = batch_config(tmp_path, spec_root, healthy.base_url, max_retries=1)
        code, out, err = run_cli("sweep", "--batch", "--config", str(config), *scenario_args())
    assert code == 0, err
    assert out.startswith(f"stored {len(live_rows)}, skipped 0, failed 0 in ")
    assert stored_rows(db) == live_rows


def test_a_model_the_server_refuses_is_given_up_with_one_error_line(
    tmp_path: Path, spec_root: Path, batch_server: RunningServer, key: str
) -> None:
    config = batch_config(tmp_path, spec_root, batch_server.base_url)
    db = tmp_path / "audit.duckdb"
    sync(db, spec_root)
    code, _out, err = run_cli(
        "run",
        "--batch",
        "--model",
        "no-such-organism",
        "--base-url",
        batch_server.base_url,
        "--config",
        str(config),
        *scenario_args(),
    )
    assert code == 2
    assert "error: model 'no-such-organism' refused its first requests (HTTP 404: The model " in err
    with open_store(db, read_only=True) as store:
        failures = store.query(
            "SELECT error_kind, attempts, count(*) AS n FROM sample_failures GROUP BY ALL"
        )
    assert [(f["error_kind"], f["attempts"]) for f in failures] == [("other", 1)]
    assert len(batch_server.batches) == 1  # refusals are not retried


def test_keys_echoed_back_by_a_server_are_scrubbed(
    tmp_path: Path, spec_root: Path, key: str
) -> None:
    hostile = BatchSettings(request_error=0.5, request_error_message=f"bad key {SECRET} given")
    with start_server(port=0, batch=hostile) as server:
        config = batch_config(tmp_path, spec_root, server.base_url, max_retries=8)
        db = tmp_path / "audit.duckdb"
        sync(db, spec_root)
        code, out, err = run_cli("sweep", "--batch", "--config", str(config), *scenario_args())
    assert code == 0, err
    with open_store(db, read_only=True) as store:
        echoed = store.query("SELECT DISTINCT error FROM batch_requests WHERE error IS NOT NULL")
    assert echoed == [{"error": "HTTP 500: bad key *** given"}]
    assert SECRET not in out + err
    assert_secret_absent(db, SECRET)


README = Path(__file__).resolve().parents[1] / "README.md"


def readme_ray_script_answer(requests: Path, outputs: Path, base_url: str) -> int:
    """Answer a request file with the ``Answer`` class of the README's Ray Data script, row by
    row as Ray would call it (Ray itself is not needed for that)."""
    section = README.read_text().split("### vLLM, Ray Data", 1)[1]
    script = re.search(r"```python\n(.*?)```", section, flags=re.DOTALL)
    assert script is not None
    namespace: dict = {"__name__": "readme_ray_script"}
    exec(compile(script.group(1), "README.md", "exec"), namespace)
    answer = namespace["Answer"](base_url)
    rows = [answer({"text": line}) for line in requests.read_text().splitlines() if line]
    outputs.write_text("".join(row["text"] + "\n" for row in rows))
    return len(rows)


@pytest.mark.parametrize(
    "engine", [answer_file, readme_ray_script_answer], ids=["local-executor", "readme-ray-script"]
)
def test_export_engine_import_stores_the_rows_a_live_run_stores(
    tmp_path: Path, spec_root: Path, live_rows: list[dict], key: str, engine: Callable
) -> None:
    db = tmp_path / "audit.duckdb"
    sync(db, spec_root)
    with start_server(port=0) as server:  # the engine's model server; export calls nothing
        config = write_config(tmp_path, spec_root, "https://api.example.invalid/v1", epochs=EPOCHS)
        waves = 0
        while True:
            folder = tmp_path / f"wave{waves}"
            code, out, err = run_cli(
                "batch",
                "export",
                "--out",
                str(folder),
                "--config",
                str(config),
                "--json",
                *scenario_args(),
            )
            assert code == 0, err
            exported = json.loads(out)
            if exported["wave"] is None:
                break
            assert exported["wave"] == waves
            outputs = []
            for request_file in map(Path, exported["files"]):
                assert SECRET not in request_file.read_text()
                outputs.append(tmp_path / f"out-{request_file.name}")
                engine(request_file, outputs[-1], server.base_url)
            code, out, err = run_cli("batch", "import", "--config", str(config), *map(str, outputs))
            assert code == 0, err
            assert f"wave {waves} is answered in full" in out
            waves += 1
    assert exported["stored"] == len(live_rows)
    assert waves == max(r["turns"] for r in live_rows)
    assert stored_rows(db) == live_rows
    with open_store(db, read_only=True) as store:
        runs = store.query("SELECT command, mode, count(*) AS n FROM runs GROUP BY ALL")
        parts = store.query("SELECT DISTINCT via, status FROM batch_parts")
    assert runs == [{"command": "batch import", "mode": "batch", "n": waves}]
    assert parts == [{"via": "export", "status": "imported"}]
    assert_secret_absent(db, SECRET)


def test_import_refuses_lines_it_never_sent_and_changes_nothing(
    tmp_path: Path, spec_root: Path, key: str
) -> None:
    db = tmp_path / "audit.duckdb"
    sync(db, spec_root)
    with start_server(port=0) as server:
        config = write_config(tmp_path, spec_root, server.base_url, epochs=EPOCHS)
        code, out, err = run_cli(
            "batch",
            "export",
            "--out",
            str(tmp_path / "w0"),
            "--config",
            str(config),
            "--json",
            *scenario_args(),
        )
        assert code == 0, err
        request_file = Path(json.loads(out)["files"][0])
        good = tmp_path / "good.jsonl"
        answer_file(request_file, good, server.base_url)
    lines = good.read_text().splitlines()
    stranger = json.loads(lines[1])
    stranger["custom_id"] = "0" * 64 + "-t0-w0"
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join([lines[0], json.dumps(stranger), *lines[2:]]) + "\n")

    def table_counts() -> dict[str, int]:
        with open_store(db, read_only=True) as store:
            tables = ("samples", "runs", "batch_requests", "batch_samples", "sample_failures")
            return {t: store.query(f"SELECT count(*) AS n FROM {t}")[0]["n"] for t in tables} | {
                "answered": store.query(
                    "SELECT count(*) AS n FROM batch_requests WHERE state <> 'pending'"
                )[0]["n"]
            }

    before = table_counts()
    code, out, err = run_cli("batch", "import", "--config", str(config), str(good), str(bad))
    assert code == 2
    assert err == (
        f"error: {bad} line 2: custom_id '{'0' * 64}-t0-w0' is not a request this database "
        "sent: import the outputs of files exported from this database\n"
    )
    assert table_counts() == before  # the good file before it is not imported either

    code, out, err = run_cli("batch", "import", "--config", str(config), str(good))
    assert code == 0, err
    once = table_counts()
    code, out, err = run_cli("batch", "import", "--config", str(config), str(good))
    assert code == 0, err
    assert f"0 answered, 0 errors, {len(lines)} already imported" in out
    assert {k: v for k, v in table_counts().items() if k != "runs"} == {
        k: v for k, v in once.items() if k != "runs"
    }


def test_an_exported_wave_must_be_imported_or_cancelled_before_the_next(
    tmp_path: Path, spec_root: Path, key: str
) -> None:
    db = tmp_path / "audit.duckdb"
    sync(db, spec_root)
    config = write_config(tmp_path, spec_root, "https://api.example.invalid/v1", epochs=EPOCHS)
    export = ("batch", "export", "--config", str(config), "--json", *scenario_args())
    code, out, err = run_cli(*export, "--out", str(tmp_path / "a"))
    assert code == 0, err
    first = json.loads(out)
    code, out, err = run_cli(*export, "--out", str(tmp_path / "b"))
    assert code == 2
    assert "error: wave 0 has requests not imported yet: import the engine's outputs" in err

    # Written again: the same lines, byte for byte.
    code, out, err = run_cli(*export, "--out", str(tmp_path / "c"), "--wave", "0")
    assert code == 0, err
    again = json.loads(out)
    assert again["rewritten"] and again["requests"] == first["requests"]
    assert [Path(p).read_bytes() for p in again["files"]] == [
        Path(p).read_bytes() for p in first["files"]
    ]
    code, out, err = run_cli(*export, "--out", str(tmp_path / "d"), "--wave", "5")
    assert code == 2 and "there is no wave 5: the next wave is 1" in err

    code, out, err = run_cli("batch", "cancel", "--wave", "0", "--config", str(config))
    assert code == 0, err
    assert out.startswith("wave 0 ") and out.rstrip().endswith(": cancelled")
    code, out, err = run_cli(*export, "--out", str(tmp_path / "e"))
    assert code == 0, err
    retry = json.loads(out)
    assert (retry["wave"], retry["requests"]) == (1, first["requests"])
    with open_store(db, read_only=True) as store:
        failures = store.query("SELECT max(failures) AS n FROM batch_samples")
    assert failures == [{"n": 0}]  # a cancellation costs no retry

    code, out, err = run_cli("batch", "status", "--config", str(config))
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == [
        "wave",
        "via",
        "status",
        "requests",
        "done",
        "failed",
        "model",
        "id",
    ]
    assert [line.split()[:3] for line in lines[1:]] == [
        ["0", "export", "cancelled"],
        ["1", "export", "exported"],
    ]


def test_cancel_a_running_batch_then_the_sweep_reads_back_what_it_answered(
    tmp_path: Path, spec_root: Path, live_rows: list[dict], key: str
) -> None:
    with start_server(port=0, batch=BatchSettings(delay_s=600)) as server:
        config = batch_config(tmp_path, spec_root, server.base_url)
        db = tmp_path / "audit.duckdb"
        sync(db, spec_root)

        def interrupt(seconds: float) -> None:
            raise KeyboardInterrupt  # Ctrl-C while the first wave is polled

        with open_store(db) as store, pytest.raises(KeyboardInterrupt):
            run_batch(
                store,
                load_config(config),
                models=None,
                revisions=None,
                scenario_ids=scenario_ids(),
                sleep=interrupt,
            )
        [running] = server.batches
        deadline = time.monotonic() + 60
        while running.completed < running.total or running.status != "in_progress":
            assert time.monotonic() < deadline, "the batch never answered its lines"
            time.sleep(0.02)
        code, out, err = run_cli("batch", "status", "--refresh", "--config", str(config), "--json")
        assert code == 0, err
        [part] = json.loads(out)
        assert (part["status"], part["completed"]) == ("in_progress", part["requests"])

        server.set_batch_settings(BatchSettings())  # later batches answer at once
        code, out, err = run_cli("batch", "cancel", part["batch_id"], "--config", str(config))
        assert code == 0, err
        assert out == f"wave 0 {part['batch_id']}: cancelling\n"
        code, out, err = run_cli("sweep", "--batch", "--config", str(config), *scenario_args())
        assert code == 0, err
        every_request_once(server)
    assert out.startswith(f"stored {len(live_rows)}, skipped 0, failed 0 in ")
    assert stored_rows(db) == live_rows
    with open_store(db, read_only=True) as store:
        first = store.query("SELECT status FROM batch_parts WHERE wave = 0")
    assert first == [{"status": "cancelled"}]


def test_a_server_without_a_batch_api_is_named_with_the_way_out(
    tmp_path: Path, spec_root: Path, key: str
) -> None:
    from served import served_in_thread
    from starlette.applications import Starlette

    with served_in_thread(Starlette()) as (base_url, _):
        config = batch_config(tmp_path, spec_root, base_url)
        sync(tmp_path / "audit.duckdb", spec_root)
        code, _out, err = run_cli("sweep", "--batch", "--config", str(config), *scenario_args())
    assert code == 2
    assert err.startswith(f"error: {base_url} has no Files and Batches API (HTTP 404: ")
    assert "write request files with audit batch export" in err
    assert os.environ["SPECDRIFT_TEST_KEY"] not in err


def test_a_wave_built_but_never_uploaded_is_rebuilt_byte_for_byte(
    tmp_path: Path, spec_root: Path, live_rows: list[dict], batch_server: RunningServer, key: str
) -> None:
    """A crash after a wave's files were recorded and before they were uploaded: the files are
    gone (they lived in a temporary folder); the rerun writes them again, identically."""
    from audit.heldout import register_heldout
    from audit.runner import plan_run
    from audit.runner.batch.waves import WaveEngine
    from audit.runner.client import Scrubber

    config_path = batch_config(tmp_path, spec_root, batch_server.base_url)
    config = load_config(config_path)
    db = tmp_path / "audit.duckdb"
    sync(db, spec_root)
    heldout = load_heldout()
    lost = tmp_path / "lost"
    lost.mkdir()
    with open_store(db) as store:
        plan = plan_run(store, config, models=None, revisions=None, scenario_ids=scenario_ids())
        register_heldout(store, heldout)
        engine = WaveEngine(store, heldout, run=config.run, scrub=Scrubber(set()), run_id=None)
        engine.enroll(plan)
        [built] = engine.build(
            [s.key for s in plan.pending],
            wave=0,
            via="api",
            folder=lost,
            limits=config.batch,
            endpoint=lambda model: batch_server.base_url,
        )
    original = built.path.read_bytes()
    built.path.unlink()

    code, _out, err = run_cli("sweep", "--batch", "--config", str(config_path), *scenario_args())
    assert code == 0, err
    first_upload = next(iter(batch_server.uploaded_files.values()))
    assert first_upload == original
    assert stored_rows(db) == live_rows
