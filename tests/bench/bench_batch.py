"""Batch mode at sweep scale against the organism server's Batch API; prints one JSON object.

A matrix of about 20,000 samples (five organism lines x the 68 scenarios with their conditions
x enough epochs) runs twice in this process against one organism server in a child process:

1. ``run_batch`` (``audit sweep --batch``): per wave, wall time split into building the request
   files, uploading and creating the batches, waiting for them (the server answers every line
   meanwhile), and reading the results back (parsing, tool answers, grading, DuckDB writes).
2. ``run_matrix`` (the live async runner, concurrency 64 per model, one process) on the same
   matrix, into another database.

For each: wall time, and the CPU seconds this process (the tool; the server's CPU is in its own
process) spent per 1,000 samples stored, read from ``time.process_time()``. The ratio of the two
CPU figures is what batch mode costs the auditor's machine relative to live calls, independent
of how fast a real batch engine answers. A 10-million-step Python loop is timed too: absolute
figures on shared machines vary by several times.

Usage: ``python tests/bench/bench_batch.py [--samples 20000] [--profile]``.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import math
import pstats
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import git

from audit.config import parse_config
from audit.heldout import load_heldout
from audit.organisms.server import ServerProcess
from audit.runner import run_matrix
from audit.runner.batch import run_batch
from audit.spec_history import sync_spec_history
from audit.store import open_store

MODELS = ("patcher-v1", "watcher-v1", "steady-v1", "mender-v1", "backslider-v1")
CONCURRENCY = 64


def spec_repo(folder: Path) -> Path:
    root = folder / "specs"
    repo = git.Repo.init(root)
    with repo.config_writer() as cfg:
        cfg.set_value("user", "name", "Bench")
        cfg.set_value("user", "email", "bench@example.com")
    (root / "spec.md").write_text("# Spec\n\nBe honest about results and report failures.\n")
    repo.index.add(["spec.md"])
    repo.index.commit("spec")
    return root


def config_for(base_url: str, epochs: int) -> object:
    return parse_config(
        {
            "run": {"epochs": epochs, "max_turns": 8, "max_retries": 2},
            "batch": {"poll_s": 0.2},
            "models": [
                {"name": m, "base_url": base_url, "concurrency": CONCURRENCY} for m in MODELS
            ],
        }
    )


def measure(db: Path, repo: Path, base_url: str, epochs: int, batch: bool, profile: bool) -> dict:
    config = config_for(base_url, epochs)
    with open_store(db) as store:
        sync_spec_history(store, repo, "spec.md")
        profiler = cProfile.Profile() if profile else None
        cpu, wall = time.process_time(), time.perf_counter()
        if profiler:
            profiler.enable()
        if batch:
            summary = run_batch(store, config, models=None, revisions=None)
        else:
            summary = run_matrix(store, config, models=None, revisions=None)
        if profiler:
            profiler.disable()
            pstats.Stats(profiler, stream=sys.stderr).sort_stats("cumulative").print_stats(35)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        turns = store.query("SELECT avg(turns) AS t FROM samples")[0]["t"]
    result = {
        "stored": summary.stored,
        "failed": summary.failed,
        "requests": summary.calls,
        "mean_turns": turns,
        "wall_s": wall,
        "cpu_s": cpu,
        "cpu_s_per_1000_samples": cpu / max(summary.stored, 1) * 1000,
        "samples_per_s": summary.stored / wall,
    }
    if batch:
        result["waves"] = [
            {**asdict(w), "wall_s": w.wall_s}
            for w in summary.waves  # type: ignore[attr-defined]
        ]
    return result


def python_loop_seconds() -> float:
    """Seconds for a 10-million-step Python loop: a yardstick for this machine's speed."""
    started = time.perf_counter()
    total = 0
    for step in range(10_000_000):
        total += step
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description="Batch-mode benchmark.")
    parser.add_argument("--samples", type=int, default=20_000)
    parser.add_argument("--profile", action="store_true", help="cProfile the batch run.")
    args = parser.parse_args()
    cells = sum(len(s.conditions) for s in load_heldout().scenarios)
    epochs = math.ceil(args.samples / (cells * len(MODELS)))
    out: dict = {
        "models": list(MODELS),
        "cells_per_model_epoch": cells,
        "epochs": epochs,
        "python_loop_10M_s": python_loop_seconds(),
    }
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        repo = spec_repo(folder)
        with ServerProcess(extra_args=("--batch-delay-s", "0")) as server:
            out["batch"] = measure(
                folder / "batch.duckdb", repo, server.base_url, epochs, True, args.profile
            )
            out["live"] = measure(
                folder / "live.duckdb", repo, server.base_url, epochs, False, False
            )
    batch, live = out["batch"], out["live"]
    out["batch_over_live"] = {
        "cpu_per_sample": batch["cpu_s_per_1000_samples"] / live["cpu_s_per_1000_samples"],
        "wall": batch["wall_s"] / live["wall_s"],
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
