"""Benchmark: peak memory and speed of ``audit import samples`` on 100k, 1M and 2M lines.

Run with ``python tests/bench/bench_import.py [--sizes 100000,1000000,2000000]``. Prints one JSON
object. The shipped spec history is replayed into a git repository and synced into a DuckDB file
once; each size then gets a JSONL file of graded-sample lines (about 135 bytes each: model,
revision prefix, scenario, epoch, outcome, awareness, a short answer), and a fresh copy of the
synced database is imported into by a fresh ``python`` process, whose peak resident memory
(``VmHWM``), wall time and CPU time (all threads; less disturbed than wall time by other work on
a shared machine) are printed. A bare baseline process reads and ``json.loads`` every
line of the same file, so the import's speed can be read against the floor of parsing it.

Checks (the benchmark exits non-zero if one fails): every line is stored, and a second import of
the same file stores nothing. The issue's target: under 1 GB peak at 2M lines.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TARGET_PEAK_MB_AT_2M = 1024
_SPEC_PATH = "spec/model-spec.md"

# ru_maxrss survives exec on Linux (a child forked from this process would inherit its peak);
# VmHWM belongs to the child's own address space.
_PEAK = """
def peak_rss_mb():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")
"""

_CHILD_IMPORT = (
    _PEAK
    + """
import json, sys, time
from audit.io import import_samples
from audit.store import open_store
started, cpu = time.perf_counter(), time.process_time()
with open_store(sys.argv[1]) as store:
    result = import_samples(store, sys.argv[2])
elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
print(json.dumps({"read": result.read, "stored": result.stored, "seconds": elapsed,
                  "cpu_seconds": cpu, "peak_rss_mb": peak_rss_mb()}))
"""
)

_CHILD_BASELINE = (
    _PEAK
    + """
import json, sys, time
started = time.perf_counter()
lines = 0
with open(sys.argv[1], "rb") as handle:
    for data in handle:
        json.loads(data)
        lines += 1
elapsed = time.perf_counter() - started
print(json.dumps({"read": lines, "seconds": elapsed, "peak_rss_mb": peak_rss_mb()}))
"""
)


def _synced_database(folder: Path) -> tuple[Path, list[str]]:
    """A DuckDB file holding the shipped spec history; returns it and the revision shas."""
    from audit.spec_history import sync_spec_history
    from audit.spec_history.replay import replay_specs_history
    from audit.store import open_store

    repo = replay_specs_history(folder / "specs")
    db = folder / "synced.duckdb"
    with open_store(db) as store:
        sync_spec_history(store, repo, _SPEC_PATH, source_id="bench")
        shas = [r["sha"] for r in store.query("SELECT sha FROM spec_revisions ORDER BY seq")]
    return db, shas


def _write_lines(path: Path, count: int, shas: list[str]) -> int:
    """``count`` distinct graded-sample lines; returns the file's size in bytes."""
    from audit.heldout import load_heldout

    scenarios = [s.id for s in load_heldout().scenarios if len(s.conditions) == 1]
    cells = [(sha[:10], scenario) for sha in shas for scenario in scenarios]
    with path.open("w", encoding="utf-8") as handle:
        for index in range(count):
            rev, scenario = cells[index % len(cells)]
            record = {
                "model": "bench-model",
                "spec_rev": rev,
                "scenario_id": scenario,
                "epoch": index // len(cells),
                "outcome": "covert" if index % 7 == 0 else "honest",
                "eval_aware": index % 11 == 0,
                "answer": f"done {index}",
            }
            handle.write(json.dumps(record, separators=(",", ":")) + "\n")
    return path.stat().st_size


def _child(script: str, *args: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"child failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _measure(folder: Path, synced: Path, shas: list[str], count: int) -> dict:
    jsonl = folder / f"samples-{count}.jsonl"
    size = _write_lines(jsonl, count, shas)
    db = folder / f"import-{count}.duckdb"
    shutil.copy(synced, db)
    baseline = _child(_CHILD_BASELINE, str(jsonl))
    first = _child(_CHILD_IMPORT, str(db), str(jsonl))
    again = _child(_CHILD_IMPORT, str(db), str(jsonl))
    if (first["read"], first["stored"], again["stored"]) != (count, count, 0):
        raise SystemExit(f"wrong counts at {count} lines: {first}, re-import {again}")
    jsonl.unlink()
    db.unlink()
    return {
        "lines": count,
        "file_mb": round(size / 1e6, 1),
        "import_s": round(first["seconds"], 2),
        "import_cpu_s": round(first["cpu_seconds"], 2),
        "lines_per_s": round(count / first["seconds"]),
        "peak_rss_mb": round(first["peak_rss_mb"], 1),
        "reimport_s": round(again["seconds"], 2),
        "reimport_cpu_s": round(again["cpu_seconds"], 2),
        "reimport_peak_rss_mb": round(again["peak_rss_mb"], 1),
        "baseline_json_s": round(baseline["seconds"], 2),
        "baseline_peak_rss_mb": round(baseline["peak_rss_mb"], 1),
    }


def main() -> None:
    """Measure every size and print one JSON object."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000,2000000")
    sizes = [int(s) for s in parser.parse_args().sizes.split(",")]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-import-") as tmp:
        folder = Path(tmp)
        synced, shas = _synced_database(folder)
        rows = [_measure(folder, synced, shas, count) for count in sizes]
    at_2m = [r["peak_rss_mb"] for r in rows if r["lines"] == 2_000_000]
    print(
        json.dumps(
            {
                "benchmark": "import_samples",
                "sizes": rows,
                "target_peak_rss_mb_at_2m": TARGET_PEAK_MB_AT_2M,
                "meets_target": bool(at_2m) and at_2m[0] < TARGET_PEAK_MB_AT_2M,
                "wall_s": round(time.perf_counter() - started, 1),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
