"""Crash safety: SIGKILL ``audit run`` mid-run in a real subprocess, rerun, count the rows."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import uvicorn
from served import served_in_thread
from test_runner import MODEL, SECRET, run_cli, spec_repo, sync, write_config

from audit.heldout.loader import load_heldout
from audit.organisms.server import create_app, make_uvicorn_server
from audit.store import open_store

__all__ = ["spec_repo"]  # the fixture, imported so pytest finds it here

EPOCHS = 8


@contextmanager
def counting_organism_server(latency_s: float) -> Iterator[tuple[str, uvicorn.Server]]:
    """The organism app served from a thread; uvicorn's own state counts the requests."""
    server = make_uvicorn_server(create_app(None, None, latency_s=latency_s))
    with served_in_thread(None, server) as (base_url, running):
        yield base_url, running


def _wait_until_running(process: subprocess.Popen[bytes], server: uvicorn.Server) -> None:
    """Block until the run has been sending requests for over two flush intervals."""
    deadline = time.monotonic() + 60
    while server.server_state.total_requests == 0:
        if process.poll() is not None or time.monotonic() > deadline:
            raise AssertionError("the run never reached the server")
        time.sleep(0.02)
    time.sleep(1.5)  # batches are flushed every 0.5 s: some are committed, some are not
    assert process.poll() is None, "the run finished before it could be killed"


def _wait_for_orphaned_workers_to_exit(server: uvicorn.Server) -> None:
    """Worker processes of a killed run notice their parent is gone and stop sending."""
    deadline = time.monotonic() + 10
    while True:
        before = server.server_state.total_requests
        time.sleep(1.0)
        if server.server_state.total_requests == before:
            return
        if time.monotonic() > deadline:
            raise AssertionError("worker processes kept running after their parent was killed")


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_sigkill_mid_run_then_rerun_stores_each_planned_sample_once(
    tmp_path: Path, spec_repo: Path, workers: int
) -> None:
    scenarios = load_heldout().scenarios[:4]
    with counting_organism_server(latency_s=0.05) as (base_url, server):
        config = write_config(tmp_path, spec_repo, base_url, epochs=EPOCHS)
        db = tmp_path / "audit.duckdb"
        sync(db, spec_repo)
        args = ["run", "--model", MODEL, "--config", str(config), "--workers", str(workers)]
        for scenario in scenarios:
            args += ["--scenario", scenario.id]
        env = {**os.environ, "SPECDRIFT_TEST_KEY": SECRET}
        process = subprocess.Popen(
            [sys.executable, "-m", "audit", *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            _wait_until_running(process, server)
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)
        finally:
            if process.poll() is None:
                process.kill()
        assert process.returncode == -signal.SIGKILL
        _, stderr = process.communicate(timeout=10)
        assert SECRET.encode() not in stderr
        if workers > 1:
            _wait_for_orphaned_workers_to_exit(server)

        planned = sum(len(s.conditions) for s in scenarios) * EPOCHS * 2  # two texts
        with open_store(db) as store:
            survived = store.query("SELECT count(*) AS n FROM samples")[0]["n"]
            interrupted = store.query("SELECT finished_at, stored FROM runs")
        assert 0 < survived < planned
        assert interrupted == [{"finished_at": None, "stored": None}]

        os.environ["SPECDRIFT_TEST_KEY"] = SECRET
        try:
            code, out, err = run_cli(*args)
        finally:
            del os.environ["SPECDRIFT_TEST_KEY"]
    assert code == 0, err
    assert out.startswith(f"stored {planned - survived}, skipped {survived}, failed 0 in ")
    with open_store(db, read_only=True) as store:
        counts = store.query(
            "SELECT count(*) AS n, count(DISTINCT sample_key) AS keys FROM samples"
        )
        runs = store.query("SELECT stored, finished_at IS NOT NULL AS done FROM runs ORDER BY 2")
    assert counts == [{"n": planned, "keys": planned}]
    assert runs == [{"stored": None, "done": False}, {"stored": planned - survived, "done": True}]
