"""``audit sweep``, the progress bar, and calling the runner from inside an event loop."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

from rich.console import Console
from test_runner import run_cli, server, spec_repo, sync, write_config

from audit.cli.progress import BarProgress
from audit.config import load_config
from audit.heldout.loader import load_heldout
from audit.organisms.server import RunningServer
from audit.runner import run_matrix
from audit.runner.matrix import EMPTY_SPEC_HASH
from audit.store import open_store

__all__ = ["server", "spec_repo"]  # fixtures, imported so pytest finds them here


def add_model(config: Path, name: str, base_url: str) -> None:
    with config.open("a") as handle:
        handle.write(f'\n[[models]]\nname = "{name}"\nbase_url = "{base_url}"\nconcurrency = 8\n')


def test_sweep_runs_every_configured_model_on_every_revision(
    tmp_path: Path, spec_repo: Path, server: RunningServer
) -> None:
    config = write_config(tmp_path, spec_repo, server.base_url, epochs=1)
    add_model(config, "watcher-v1", server.base_url)
    db = tmp_path / "audit.duckdb"
    revisions = sync(db, spec_repo)
    scenarios = load_heldout().scenarios[:2]
    args = ["sweep", "--config", str(config)]
    for scenario in scenarios:
        args += ["--scenario", scenario.id]
    cells = sum(len(s.conditions) for s in scenarios)

    code, out, err = run_cli(*args, "--dry-run", "--json")
    assert code == 0, err
    assert json.loads(out) == {
        "models": ["patcher-v1", "watcher-v1"],
        "revisions": [r["sha"][:12] for r in revisions],
        "scenarios": 2,
        "sealed_twins": sum(s.sealed for s in scenarios),
        "epochs": 1,
        "matrix_cells": 3 * 2 * cells,
        "distinct_samples": 2 * 2 * cells,
        "already_stored": 0,
        "to_run": 2 * 2 * cells,
        "max_calls": 2 * 2 * cells * 4,
        "estimate": None,  # nothing stored yet to average tokens over
    }

    code, out, err = run_cli(*args)
    assert code == 0, err
    assert out.startswith(f"stored {4 * cells}, skipped 0, failed 0 in ")
    with open_store(db, read_only=True) as store:
        counts = store.query(
            "SELECT model, spec_sha, count(*) AS n FROM samples GROUP BY ALL ORDER BY ALL"
        )
        command = store.query("SELECT command FROM runs")
    shas = sorted(r["sha"] for r in revisions[:2])
    assert counts == [
        {"model": model, "spec_sha": sha, "n": cells}
        for model in ("patcher-v1", "watcher-v1")
        for sha in shas
    ]
    assert command == [{"command": "sweep"}]


def test_run_matrix_works_from_inside_a_running_event_loop(
    tmp_path: Path, spec_repo: Path, server: RunningServer
) -> None:
    config = load_config(write_config(tmp_path, spec_repo, server.base_url, epochs=1))
    db = tmp_path / "audit.duckdb"
    sync(db, spec_repo)
    scenario = load_heldout().scenarios[0]

    async def notebook_cell() -> int:
        with open_store(db) as store:
            summary = run_matrix(
                store, config, models=["patcher-v1"], revisions=["-1"], scenario_ids=[scenario.id]
            )
        return summary.stored

    assert asyncio.run(notebook_cell()) == len(scenario.conditions)


def test_progress_bar_shows_done_total_and_errors() -> None:
    buffer = io.StringIO()
    bar = BarProgress(Console(file=buffer, force_terminal=True, width=120))
    bar.start(3, "run: 3 samples")
    bar.advance(1)
    bar.advance(1, errors=1)
    bar.advance(1)
    bar.finish()
    rendered = buffer.getvalue()
    assert "run: 3 samples" in rendered
    assert "3/3" in rendered
    assert "errors 1" in rendered


def test_run_refuses_zero_epochs(tmp_path: Path, spec_repo: Path) -> None:
    config = write_config(tmp_path, spec_repo, "http://127.0.0.1:9/v1")
    code, _, err = run_cli("run", "--model", "patcher-v1", "--config", str(config), "--epochs", "0")
    assert code == 2
    assert "--epochs" in err


def test_spec_placement_developer_and_none(
    tmp_path: Path, spec_repo: Path, server: RunningServer
) -> None:
    config = write_config(tmp_path, spec_repo, server.base_url, epochs=1)
    with config.open("a") as handle:
        handle.write('spec_placement = "developer"\n')  # the first model, patcher-v1
    add_model(config, "patcher-v2", server.base_url)
    with config.open("a") as handle:
        handle.write('spec_placement = "none"\n')
    db = tmp_path / "audit.duckdb"
    revisions = sync(db, spec_repo)
    scenario = load_heldout().scenarios[0]
    cells = len(scenario.conditions)
    code, out, err = run_cli("sweep", "--config", str(config), "--scenario", scenario.id)
    assert code == 0, err
    # Two distinct spec texts for the developer placement; one shared empty spec for none.
    assert out.startswith(f"stored {3 * cells}, skipped 0, failed 0 in ")
    with open_store(db, read_only=True) as store:
        rows = store.query("SELECT model, spec_sha, spec_content_hash, transcript FROM samples")
    texts = {r["sha"]: r["content"] for r in revisions}
    for row in rows:
        opening = json.loads(row["transcript"])[:2]
        if row["model"] == "patcher-v1":
            assert opening[0] == {"role": "developer", "content": texts[row["spec_sha"]]}
            assert opening[1]["role"] == "system"
        else:
            assert row["spec_content_hash"] == EMPTY_SPEC_HASH
            assert row["spec_sha"] == revisions[0]["sha"]
            assert opening[0]["role"] == "system"
            assert all(text not in opening[0]["content"] for text in texts.values())
    assert sum(r["model"] == "patcher-v2" for r in rows) == cells
