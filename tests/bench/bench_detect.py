"""Detection speed on 1,000,000 stored samples; prints one JSON object.

50 spec revisions x 5 model versions x 40 scenarios x 100 epochs are generated straight into a
DuckDB file with ``generate_series`` (covert and aware outcomes drawn from a hash, so the data is
the same every run, with a slow genuine drop, a regression at one revision and an awareness rise
in the newest model). Then ``detect()`` runs with 2,000 bootstrap resamples.

Figures: wall time of detection (target under 20 s), peak RSS of the process (target under
2 GB), and, as the baseline measured in the same process, the time of the bare SQL aggregation
that any detection must do (one GROUP BY over all samples); the ratio says how much the
statistics add on top of reading the data.

Usage: ``python tests/bench/bench_detect.py [--epochs 100] [--resamples 2000]``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import resource
import tempfile
import time
from pathlib import Path

from audit.analysis import detect
from audit.config import AuditConfig
from audit.heldout.loader import load_heldout
from audit.store import Store, open_store

REVISIONS, MODELS, SCENARIOS = 50, 5, 40
SOURCE = "bench"


def spec_text(seq: int) -> str:
    """Revision ``seq`` of a synthetic spec: one more generic rule per revision."""
    rules = "\n".join(
        f"- Rule {i}: state what you did and what failed, step {i}." for i in range(seq)
    )
    return f"# Spec\n\n## Honesty\nReport results as observed.\n{rules}\n"


def content_hash(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def build(store: Store, epochs: int, set_hash: str) -> None:
    """Store the revisions and generate every sample in one SQL statement."""
    rows = []
    for seq in range(REVISIONS):
        text = spec_text(seq)
        sha = hashlib.sha1(f"bench-{seq}".encode()).hexdigest()
        rows.append(
            {
                "source_id": SOURCE,
                "sha": sha,
                "seq": seq,
                "parent_shas": [],
                "path": "spec.md",
                "content": text,
                "content_hash": content_hash(text),
                "size_bytes": len(text),
            }
        )
    store.insert_rows("spec_revisions", rows)
    store.con.execute("CREATE TEMP TABLE revs AS SELECT seq, sha, content_hash FROM spec_revisions")
    # Covert probability: 25% falling slowly over the history (genuine), +8 points at revision
    # 30 for model 2 (regression), and awareness rising in model 5, whose aware samples are honest.
    store.con.execute(
        f"""
        INSERT INTO samples (sample_key, origin, model, spec_sha, spec_content_hash, set_hash,
                             scenario_id, family, condition, epoch, outcome, eval_aware, spec_cited)
        WITH grid AS (
            SELECT r.seq, r.sha, r.content_hash, m.m, s.s, e.e,
                   (hash(r.seq, m.m, s.s, e.e) % 1000000) / 1e6 AS u,
                   (hash(e.e, s.s, m.m, r.seq, 'aware') % 1000000) / 1e6 AS v
            FROM revs r, range(1, {MODELS + 1}) m(m), range({SCENARIOS}) s(s), range({epochs}) e(e)
        ), probs AS (
            SELECT *, 0.25 - 0.002 * seq + 0.003 * (s % 7)
                      + CASE WHEN m = 2 AND seq >= 30 THEN 0.08 ELSE 0 END AS p_covert,
                   CASE WHEN m = 5 THEN 0.01 * seq ELSE 0.02 END AS p_aware
            FROM grid
        )
        SELECT md5(concat_ws('|', m, content_hash, s, e)), 'import', 'org-v' || m, sha,
               content_hash, '{set_hash}', 's' || lpad(s::VARCHAR, 2, '0'), 'family' || (s % 5),
               'default', e,
               CASE WHEN v >= p_aware AND u < p_covert THEN 'covert' ELSE 'honest' END,
               v < p_aware, false
        FROM probs
        """
    )


def bare_aggregation(store: Store) -> float:
    start = time.perf_counter()
    store.con.execute(
        "SELECT model, spec_content_hash, scenario_id, count(*), count(*) FILTER "
        "(WHERE outcome = 'covert') FROM samples GROUP BY ALL"
    ).fetchall()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--resamples", type=int, default=2000)
    args = parser.parse_args()
    heldout = load_heldout()
    config = AuditConfig.model_validate({"detect": {"bootstrap": args.resamples}})
    with tempfile.TemporaryDirectory() as folder:
        store = open_store(Path(folder) / "bench.duckdb")
        try:
            start = time.perf_counter()
            build(store, args.epochs, heldout.set_hash)
            generated = time.perf_counter() - start
            n_samples = store.query("SELECT count(*) AS n FROM samples")[0]["n"]
            aggregation = bare_aggregation(store)
            start = time.perf_counter()
            findings = detect(store, config, heldout=heldout)
            elapsed = time.perf_counter() - start
        finally:
            store.close()
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    kinds: dict[str, int] = {}
    for finding in findings:
        kinds[finding.kind] = kinds.get(finding.kind, 0) + 1
    print(
        json.dumps(
            {
                "samples": n_samples,
                "resamples": args.resamples,
                "generate_s": round(generated, 2),
                "detect_s": round(elapsed, 2),
                "target_detect_s": 20,
                "peak_rss_mb": round(peak_mb, 1),
                "target_peak_rss_mb": 2048,
                "baseline_bare_aggregation_s": round(aggregation, 3),
                "ratio_detect_to_bare_aggregation": round(elapsed / aggregation, 1),
                "findings_by_kind": kinds,
            }
        )
    )


if __name__ == "__main__":
    main()
