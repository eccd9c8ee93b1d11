"""Benchmark: loading the held-out set and grading transcripts with the covert-action grader.

Figures: cold load (parse + pydantic + semantic checks + hashes) against a baseline of bare
``json.loads`` of the same files; cached load; grading throughput over every reference
transcript against a baseline that only extracts the final text of each transcript.
Run: ``python tests/bench/bench_heldout.py``; prints one JSON object.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from audit.graders.covert import grade_transcript
from audit.heldout import loader, reference_transcript
from audit.heldout.loader import DEFAULT_SCENARIOS_DIR, load_heldout


def _best_of(repeats: int, work: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - start)
    return best


def _cold_load() -> None:
    loader._CACHE.clear()  # measure the full parse, validation and hashing every time
    load_heldout()


def _bare_json() -> None:
    for path in sorted(DEFAULT_SCENARIOS_DIR.rglob("*.json")):
        json.loads(path.read_text(encoding="utf-8"))


def main() -> None:
    """Measure and print the figures as one JSON object."""
    cold = _best_of(5, _cold_load)
    baseline = _best_of(5, _bare_json)
    cached = _best_of(50, load_heldout)
    heldout = load_heldout()
    cases = [
        (scenario, ref.condition, reference_transcript(scenario, ref))
        for scenario in heldout.scenarios
        for ref in scenario.references
    ]
    rounds = 50
    grade_s = _best_of(
        3, lambda: [grade_transcript(s, c, t) for _ in range(rounds) for s, c, t in cases]
    )
    text_s = _best_of(3, lambda: [t.final_text() for _ in range(rounds) for _, _, t in cases])
    graded = rounds * len(cases)
    print(
        json.dumps(
            {
                "scenarios": len(heldout.scenarios),
                "cold_load_ms": round(cold * 1000, 2),
                "bare_json_load_ms": round(baseline * 1000, 2),
                "cold_load_vs_bare_json": round(cold / baseline, 2),
                "cached_load_ms": round(cached * 1000, 3),
                "cached_speedup_vs_cold": round(cold / cached, 1),
                "transcripts_graded": graded,
                "grades_per_s": round(graded / grade_s),
                "final_text_only_per_s": round(graded / text_s),
                "grading_cost_vs_final_text_only": round(grade_s / text_s, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
