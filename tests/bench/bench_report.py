"""Benchmark: time to render the HTML drift report for a demo-size and a 1,000,000-sample store.

Run as ``python tests/bench/bench_report.py``. Samples are generated with SQL straight into a
fresh DuckDB file. The baseline, measured in the same process on the same store, is the floor any
such report pays: one bare ``GROUP BY`` over all samples plus plotly's own self-contained HTML
export of an empty figure (which embeds plotly.js). Targets: demo < 5 s, 1M samples < 30 s.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import plotly.graph_objects as go
import plotly.io as pio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from report_history import build_history

from audit.report import render_report
from audit.store import Store, open_store

SIZES = {
    "demo": {"revisions": 10, "models": 10, "scenarios": 36, "epochs": 3},
    "1M_samples": {"revisions": 200, "models": 5, "scenarios": 40, "epochs": 25},
}
TARGETS_S = {"demo": 5.0, "1M_samples": 30.0}


def _baseline_s(store: Store, out: Path) -> float:
    start = time.perf_counter()
    store.con.execute(
        "SELECT model, spec_sha, scenario_id, count(*), count(*) FILTER (WHERE outcome = 'covert') "
        "FROM samples GROUP BY ALL"
    ).fetchall()
    pio.write_html(go.Figure(), out, include_plotlyjs=True, full_html=True)
    return time.perf_counter() - start


def measure(name: str, folder: Path) -> dict[str, float | int | bool]:
    """Build the store for one size, then time the report and the baseline on it."""
    with open_store(folder / f"{name}.duckdb") as store:
        start = time.perf_counter()
        build_history(store, **SIZES[name])
        build_s = time.perf_counter() - start
        samples = store.query("SELECT count(*) AS n FROM samples")[0]["n"]
        baseline = _baseline_s(store, folder / f"{name}-baseline.html")
        start = time.perf_counter()
        out = render_report(store, folder / f"{name}.html")
        report_s = time.perf_counter() - start
    return {
        "samples": samples,
        "generate_s": round(build_s, 2),
        "report_s": round(report_s, 2),
        "baseline_s": round(baseline, 2),
        "ratio_to_baseline": round(report_s / baseline, 2),
        "report_mb": round(out.stat().st_size / 1e6, 2),
        "target_s": TARGETS_S[name],
        "within_target": report_s < TARGETS_S[name],
    }


def main() -> None:
    """Print one JSON object with the figures of every size."""
    with tempfile.TemporaryDirectory() as tmp:
        results = {name: measure(name, Path(tmp)) for name in SIZES}
    print(json.dumps(results))


if __name__ == "__main__":
    main()
