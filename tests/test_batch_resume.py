"""Crash safety of batch mode: SIGKILL a real ``audit sweep --batch`` process while it polls, or
while its batches.create call is still unanswered, rerun it, and check that no batch and no
request was submitted twice and that the stored rows are those of a live run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_batch import (
    batch_config,
    every_request_once,
    live_rows,
    scenario_args,
    spec_root,
    stored_rows,
)
from test_runner import SECRET, run_cli, sync

from audit.organisms.batches import BatchSettings
from audit.organisms.server import RunningServer, start_server
from audit.store import open_store

__all__ = ["live_rows", "spec_root"]  # fixtures, imported so pytest finds them here


def _wait_for(server: RunningServer, count: int, polled: bool, process: subprocess.Popen) -> None:
    """Until the sweep has made ``count`` batches (and polled the last one, if ``polled``)."""
    deadline = time.monotonic() + 120
    while len(server.batches) < count or (polled and server.batches[count - 1].polls == 0):
        if process.poll() is not None:
            raise AssertionError(f"the sweep ended before it made {count} batches")
        if time.monotonic() > deadline:
            raise AssertionError(f"the sweep never made {count} batches")
        time.sleep(0.005)


@pytest.mark.slow
@pytest.mark.parametrize(
    "moment,settings,batches_before_kill",
    [
        # The second wave is being polled; the first was read back.
        ("polling", BatchSettings(delay_s=1.0), 2),
        # batches.create reached the server, which holds its answer: the batch exists, its id
        # was never recorded, and the rerun must find it rather than make another.
        ("creating", BatchSettings(delay_s=0.2, create_latency_s=30.0), 1),
    ],
)
def test_sigkill_then_rerun_submits_nothing_twice_and_stores_the_live_rows(
    tmp_path: Path,
    spec_root: Path,
    live_rows: list[dict],
    moment: str,
    settings: BatchSettings,
    batches_before_kill: int,
) -> None:
    with start_server(port=0, batch=settings) as server:
        config = batch_config(tmp_path, spec_root, server.base_url)
        db = tmp_path / "audit.duckdb"
        sync(db, spec_root)
        args = ["sweep", "--batch", "--config", str(config), *scenario_args()]
        process = subprocess.Popen(
            [sys.executable, "-m", "audit", *args],
            env={**os.environ, "SPECDRIFT_TEST_KEY": SECRET},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            _wait_for(server, batches_before_kill, moment == "polling", process)
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)
        finally:
            if process.poll() is None:
                process.kill()
        assert process.returncode == -signal.SIGKILL
        _, stderr = process.communicate(timeout=10)
        assert SECRET.encode() not in stderr

        with open_store(db, read_only=True) as store:
            recorded = store.query(
                "SELECT count(*) AS parts, count(batch_id) AS with_id FROM batch_parts"
            )[0]
            interrupted = store.query("SELECT finished_at FROM runs")
        assert interrupted == [{"finished_at": None}]
        assert recorded["parts"] == batches_before_kill
        # Polling: every batch id was recorded. Creating: killed before it learned the id.
        assert recorded["with_id"] == (batches_before_kill if moment == "polling" else 0)

        server.set_batch_settings(BatchSettings(delay_s=0.05))
        os.environ["SPECDRIFT_TEST_KEY"] = SECRET
        try:
            code, out, err = run_cli(*args)
        finally:
            del os.environ["SPECDRIFT_TEST_KEY"]
        assert code == 0, err
        uploaded = every_request_once(server)
        made = server.batches

    assert out.startswith(f"stored {len(live_rows)}, skipped 0, failed 0 in ")
    assert stored_rows(db) == live_rows
    with open_store(db, read_only=True) as store:
        parts = store.query("SELECT batch_id, input_file_id FROM batch_parts ORDER BY wave")
        runs = store.query("SELECT finished_at IS NOT NULL AS done FROM runs ORDER BY 1")
        answered = store.query(
            "SELECT count(*) AS n, count(DISTINCT custom_id) AS ids FROM batch_requests "
            "WHERE state = 'answered'"
        )
    # One batch per part, each made from its own uploaded file: nothing was submitted twice.
    assert sorted(p["batch_id"] for p in parts) == sorted(b.id for b in made)
    assert len({b.input_file_id for b in made}) == len(made)
    assert len(uploaded) == sum(r["turns"] for r in live_rows)
    assert answered == [{"n": len(uploaded), "ids": len(uploaded)}]
    assert runs == [{"done": False}, {"done": True}]


@pytest.mark.slow
def test_batch_status_reads_the_database_while_a_sweep_polls(
    tmp_path: Path, spec_root: Path, live_rows: list[dict]
) -> None:
    with start_server(port=0, batch=BatchSettings(delay_s=4.0)) as server:
        config = batch_config(tmp_path, spec_root, server.base_url)
        config.write_text(config.read_text().replace("poll_s = 0.02", "poll_s = 0.5"))
        db = tmp_path / "audit.duckdb"
        sync(db, spec_root)
        args = ["sweep", "--batch", "--config", str(config), *scenario_args()]
        process = subprocess.Popen(
            [sys.executable, "-m", "audit", *args],
            env={**os.environ, "SPECDRIFT_TEST_KEY": SECRET},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            _wait_for(server, 1, True, process)
            # The sweep holds the file only while it writes; between polls it is free.
            deadline = time.monotonic() + 60
            while True:
                code, out, err = run_cli("batch", "status", "--config", str(config), "--json")
                if code == 0 or time.monotonic() > deadline:
                    break
                assert "is in use by another process" in err
                time.sleep(0.05)
            assert code == 0, err
            [part] = json.loads(out)
            assert part["status"] in ("validating", "in_progress") and part["wave"] == 0
            stdout, stderr = process.communicate(timeout=120)
        finally:
            if process.poll() is None:
                process.kill()
    assert process.returncode == 0, stderr
    assert stdout.startswith(f"stored {len(live_rows)}, skipped 0, failed 0 in ")
    assert stored_rows(db) == live_rows
