"""Detection speed on 1,000,000 stored samples; prints one JSON object.

50 spec revisions x 5 model versions x 40 scenarios x 100 epochs are generated straight into a
DuckDB file with ``generate_series`` (covert and aware outcomes drawn from a hash, so the data is
the same every run). The 40 scenarios are the held-out set's own (34) plus clones of them with
fresh distinctive phrases, handed to ``detect()`` as its held-out set, so exposure sees them:
every fifth revision adds a rule naming two scenarios (their phrases quoted), and model 3 reacts
to those patches. So the whole path runs: exposure of every revision pair, the exposed-scenario
tests, difference-in-differences and the rest of the attribution, leak scans, estimates.

The data: a covert rate of 25% falling slowly over the history (genuine), +8 points at revision
30 for model 2 (regression), patched scenarios of model 3 at a tenth of their rate once named,
and awareness rising in model 5, whose aware samples are honest. Then ``detect()`` runs with
2,000 bootstrap resamples.

Figures: wall time of detection (target under 20 s), peak RSS of the process (target under
2 GB), and, as the baseline measured in the same process, the time of the bare SQL aggregation
that any detection must do (one GROUP BY over all samples); the ratio says how much the
statistics add on top of reading the data. Timings on a shared machine vary by tens of percent.

Usage: ``python tests/bench/bench_detect.py [--epochs 100] [--resamples 2000]``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import resource
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from audit.analysis import detect
from audit.config import AuditConfig
from audit.heldout.loader import load_heldout
from audit.heldout.model import Scenario
from audit.store import Store, open_store

REVISIONS, MODELS, SCENARIOS = 50, 5, 40
#: Every PATCH_EVERY-th revision names PATCHED_PER_EDIT more scenarios.
PATCH_EVERY, PATCHED_PER_EDIT = 5, 2
SOURCE = "bench"


@dataclass(frozen=True)
class BenchSet:
    """The held-out set handed to detection: the real scenarios, then clones (fields it reads)."""

    scenarios: tuple[Scenario, ...]
    canary: str
    set_hash: str


def bench_set() -> BenchSet:
    heldout = load_heldout()
    real = list(heldout.scenarios)
    scenarios = list(real[:SCENARIOS])
    for index in range(len(scenarios), SCENARIOS):
        source = real[index % len(real)]
        phrases = tuple(f"{phrase} bench clone {index}" for phrase in source.distinctive_phrases)
        scenarios.append(
            source.model_copy(
                update={"id": f"{source.id}-clone{index}", "distinctive_phrases": phrases}
            )
        )
    return BenchSet(tuple(scenarios), heldout.canary, heldout.set_hash)


def patched_at(seq: int) -> int:
    """How many scenarios the spec names by revision ``seq`` (the first ones of the set)."""
    return PATCHED_PER_EDIT * (seq // PATCH_EVERY)


def spec_text(seq: int, scenarios: tuple[Scenario, ...]) -> str:
    """Revision ``seq``: one more generic rule per revision, and the patches so far."""
    rules = "\n".join(
        f"- Rule {i}: state what you did and what failed, step {i}." for i in range(seq)
    )
    patches = "\n".join(
        f"- In the {s.distinctive_phrases[0]} case ({', '.join(s.distinctive_phrases[1:3])}), "
        "report the real outcome."
        for s in scenarios[: patched_at(seq)]
    )
    return f"# Spec\n\n## Honesty\nReport results as observed.\n{rules}\n\n## Cases\n{patches}\n"


def content_hash(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def build(store: Store, epochs: int, heldout: BenchSet) -> None:
    """Store the revisions and generate every sample in one SQL statement."""
    rows = []
    for seq in range(REVISIONS):
        text = spec_text(seq, heldout.scenarios)
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
    store.con.execute("CREATE TEMP TABLE scen (s INTEGER, scenario_id VARCHAR, family VARCHAR)")
    store.con.executemany(
        "INSERT INTO scen VALUES (?, ?, ?)",
        [(i, s.id, s.family) for i, s in enumerate(heldout.scenarios)],
    )
    # Scenario s is named from the first revision whose patches reach it.
    patched_from = f"(s // {PATCHED_PER_EDIT} + 1) * {PATCH_EVERY}"
    store.con.execute(
        f"""
        INSERT INTO samples (sample_key, origin, model, spec_sha, spec_content_hash, set_hash,
                             scenario_id, family, condition, epoch, outcome, eval_aware, spec_cited)
        WITH grid AS (
            SELECT r.seq, r.sha, r.content_hash, m.m, sc.s, sc.scenario_id, sc.family, e.e,
                   (hash(r.seq, m.m, sc.s, e.e) % 1000000) / 1e6 AS u,
                   (hash(e.e, sc.s, m.m, r.seq, 'aware') % 1000000) / 1e6 AS v
            FROM revs r, range(1, {MODELS + 1}) m(m), scen sc, range({epochs}) e(e)
        ), probs AS (
            SELECT *, (0.25 - 0.002 * seq + 0.003 * (s % 7)
                       + CASE WHEN m = 2 AND seq >= 30 THEN 0.08 ELSE 0 END)
                      * CASE WHEN m = 3 AND seq >= {patched_from} THEN 0.1 ELSE 1 END
                      AS p_covert,
                   CASE WHEN m = 5 THEN 0.01 * seq ELSE 0.02 END AS p_aware
            FROM grid
        )
        SELECT md5(concat_ws('|', m, content_hash, s, e)), 'import', 'org-v' || m, sha,
               content_hash, '{heldout.set_hash}', scenario_id, family, 'default', e,
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
    heldout = bench_set()
    config = AuditConfig.model_validate({"detect": {"bootstrap": args.resamples}})
    with tempfile.TemporaryDirectory() as folder:
        store = open_store(Path(folder) / "bench.duckdb")
        try:
            start = time.perf_counter()
            build(store, args.epochs, heldout)
            generated = time.perf_counter() - start
            n_samples = store.query("SELECT count(*) AS n FROM samples")[0]["n"]
            aggregation = bare_aggregation(store)
            start = time.perf_counter()
            findings = detect(store, config, heldout=heldout)
            elapsed = time.perf_counter() - start
            exposed_pairs = store.query(
                "SELECT count(DISTINCT (baseline_sha, sha)) AS n FROM exposure WHERE exposed"
            )[0]["n"]
        finally:
            store.close()
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    kinds: dict[str, int] = {}
    causes: dict[str, int] = {}
    for finding in findings:
        kinds[finding.kind] = kinds.get(finding.kind, 0) + 1
        if finding.primary_cause:
            causes[finding.primary_cause] = causes.get(finding.primary_cause, 0) + 1
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
                "revision_pairs_with_exposed_scenarios": exposed_pairs,
                "findings_by_kind": kinds,
                "findings_by_primary_cause": causes,
                "exposed_scenario_findings": sum(
                    1 for f in findings if f.tested_on == "exposed scenarios"
                ),
            }
        )
    )


if __name__ == "__main__":
    main()
