"""Benchmark of exposure on the labelled spec-clause corpus in ``tests/data/exposure_clauses/``.

Each clause is scored as the only text added to the reference spec (the first revision of the
shipped spec history), with an ``ExposureModel`` built as ``audit.analysis.detect`` builds it:
the public scenarios of the shipped held-out set, its canary, that reference spec and the
configured threshold. Prints one JSON object with, per split (``tune`` is tuned on, ``holdout``
never) and per style of single-target clause:

- ``quote``, ``names``, ``paraphrase``: recall (the share of clauses whose target is exposed)
  with a 95% Wilson interval and a scenario-cluster bootstrap interval (clauses about one
  scenario are correlated, so the Wilson interval, which treats them as independent, is too
  narrow), the mean number of wrongly exposed non-target scenarios per clause and the share of
  clauses with at least one (Wilson interval);
- ``generic``: false exposure, the share of clauses that expose any scenario (Wilson interval),
  and the mean number of scenarios they expose.

The model indexes every scenario of the set, sealed twins included (as detection does): a
twin is never exposed by a retold situation, and a clause counts as naming a sealed twin (a leak)
when it names the twin's own details (``sealed_twin_named``: the share of clauses, all aimed at
public scenarios, that would). ``threshold_fitted_on_tune`` is the threshold chosen from the
tuning split's generic rules (:func:`audit.analysis.exposure.choose_threshold`).

Clauses that target two scenarios are reported apart (``two_targets``): the share of clauses
whose targets are all exposed and the share of (clause, target) pairs found. The same figures
are printed with a scenario also counted as found when the clause carries its canary or
near-verbatim prompt text (``exposure_or_leak``: detection reports those as leaks), and for a
baseline measured in this process: a scenario counts as exposed when one of its
``distinctive_phrases`` occurs in the clause (case folded). The corpus keeps distinctive phrases
out of paraphrase and generic clauses, so the baseline's zeros there hold by construction.

Run: ``python tests/bench/bench_exposure.py [--threshold T]`` (default: the configured
``detect.exposure_threshold``).
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from audit.analysis.exposure import (
    TARGET_FALSE_EXPOSURE,
    ExposureModel,
    ScenarioText,
    choose_threshold,
)
from audit.config import AuditConfig
from audit.heldout.loader import HeldoutSet, load_heldout
from audit.intervals import wilson_bounds
from audit.spec_history.replay import load_manifest, specs_history_dir

CORPUS = Path(__file__).resolve().parents[1] / "data" / "exposure_clauses"
SPLITS = ("tune", "holdout")
TARGETED_STYLES = ("quote", "names", "paraphrase")
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 20261204

Detector = Callable[[str], set[str]]
"""A clause's text to the ids of the scenarios it exposes."""


@dataclass(frozen=True)
class Clause:
    """One labelled clause of the corpus."""

    id: str
    style: str
    family: str
    targets: tuple[str, ...]
    text: str


def load_clauses(split: str) -> list[Clause]:
    """The clauses of one split file."""
    rows = (CORPUS / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()
    return [
        Clause(r["id"], r["style"], r["family"], tuple(r["targets"]), r["text"])
        for r in map(json.loads, rows)
    ]


def reference_spec() -> str:
    """The first revision of the shipped spec history (the spec lived at model_spec.md then)."""
    folder = specs_history_dir()
    first = load_manifest(folder)[0]
    return (folder / first.writes["model_spec.md"]).read_text(encoding="utf-8")


def exposure_detector(
    heldout: HeldoutSet, reference: str, threshold: float, *, count_leaks: bool = False
) -> Detector:
    """Exposure as detection builds it, scoring a clause as text added to ``reference``.

    With ``count_leaks``, a scenario whose canary or near-verbatim prompt text the clause
    carries counts as found too: detection reports those as ``leak`` findings whatever the
    exposure score.
    """
    model = exposure_model(heldout, reference, threshold)

    def detect(text: str) -> set[str]:
        exposures = model.score(reference, reference + "\n\n" + text)
        return {e.scenario_id for e in exposures if e.exposed or (count_leaks and e.leak)}

    return detect


def exposure_model(heldout: HeldoutSet, reference: str, threshold: float) -> ExposureModel:
    """The model as detection builds it: every scenario of the set, sealed twins included."""
    return ExposureModel(
        [ScenarioText.from_scenario(s) for s in heldout.scenarios],
        canary=heldout.canary,
        reference_spec=reference,
        threshold=threshold,
    )


def fitted_threshold(heldout: HeldoutSet, reference: str) -> float:
    """The threshold chosen on the tuning split: at most TARGET_FALSE_EXPOSURE of its generic
    rules expose a scenario (``detect.exposure_threshold`` defaults to it, rounded up)."""
    model = exposure_model(heldout, reference, threshold=1.0)
    generic = [model.relative_best(c.text) for c in load_clauses("tune") if c.style == "generic"]
    return choose_threshold(generic, TARGET_FALSE_EXPOSURE)


def sealed_leaks(heldout: HeldoutSet, reference: str, clauses: Sequence[Clause]) -> dict:
    """Clauses (all aimed at public scenarios) that would count as naming a sealed twin."""
    model = exposure_model(heldout, reference, threshold=1.0)
    named = [bool(model.leaks(reference + "\n\n" + c.text).sealed) for c in clauses]
    return _share(sum(named), len(named))


def phrase_baseline(heldout: HeldoutSet) -> Detector:
    """A scenario is exposed when one of its distinctive phrases occurs in the clause."""
    phrases = {
        s.id: [p.casefold() for p in s.distinctive_phrases]
        for s in heldout.scenarios
        if not s.sealed
    }

    def detect(text: str) -> set[str]:
        folded = text.casefold()
        return {sid for sid, ps in phrases.items() if any(p in folded for p in ps)}

    return detect


def _share(successes: int, trials: int) -> dict[str, object]:
    bounds = wilson_bounds(successes, trials)
    return {
        "share": round(successes / trials, 4) if trials else None,
        "ci95_wilson": [round(b, 4) for b in bounds] if bounds else None,
        "count": successes,
        "n": trials,
    }


def _cluster_bootstrap(hits_by_scenario: dict[str, list[bool]]) -> list[float] | None:
    """Percentile interval of the pooled share, resampling scenarios with replacement."""
    groups = list(hits_by_scenario.values())
    if len(groups) < 2:
        return None
    rng = random.Random(BOOTSTRAP_SEED)
    shares = []
    for _ in range(BOOTSTRAP_RESAMPLES):
        drawn = [groups[rng.randrange(len(groups))] for _ in groups]
        shares.append(sum(sum(g) for g in drawn) / sum(len(g) for g in drawn))
    shares.sort()
    low = shares[int(0.025 * BOOTSTRAP_RESAMPLES)]
    high = shares[int(0.975 * BOOTSTRAP_RESAMPLES) - 1]
    return [round(low, 4), round(high, 4)]


def targeted_figures(clauses: Sequence[Clause], found: Sequence[set[str]]) -> dict[str, object]:
    """Recall and wrong exposures of single-target clauses."""
    hits_by_scenario: dict[str, list[bool]] = {}
    wrong_counts = []
    for clause, exposed in zip(clauses, found, strict=True):
        hits_by_scenario.setdefault(clause.targets[0], []).append(clause.targets[0] in exposed)
        wrong_counts.append(len(exposed - set(clause.targets)))
    hits = sum(sum(h) for h in hits_by_scenario.values())
    return {
        "recall": _share(hits, len(clauses))
        | {"ci95_scenario_bootstrap": _cluster_bootstrap(hits_by_scenario)},
        "scenarios": len(hits_by_scenario),
        "wrong_exposures_per_clause": round(sum(wrong_counts) / len(clauses), 4),
        "clauses_with_wrong_exposure": _share(sum(c > 0 for c in wrong_counts), len(clauses)),
    }


def generic_figures(found: Sequence[set[str]]) -> dict[str, object]:
    """False exposure of clauses that target no scenario."""
    return {
        "false_exposure": _share(sum(bool(e) for e in found), len(found)),
        "exposed_scenarios_per_clause": round(sum(len(e) for e in found) / len(found), 4),
    }


def two_target_figures(clauses: Sequence[Clause], found: Sequence[set[str]]) -> dict[str, object]:
    """Recall of clauses that target two scenarios, per clause and per target."""
    pairs = [(t in e) for c, e in zip(clauses, found, strict=True) for t in c.targets]
    wrong = [len(e - set(c.targets)) for c, e in zip(clauses, found, strict=True)]
    return {
        "all_targets_found": _share(
            sum(set(c.targets) <= e for c, e in zip(clauses, found, strict=True)), len(clauses)
        ),
        "targets_found": _share(sum(pairs), len(pairs)),
        "wrong_exposures_per_clause": round(sum(wrong) / len(clauses), 4),
    }


def evaluate(clauses: Sequence[Clause], detect: Detector) -> dict[str, object]:
    """Figures per style of one split for one detector."""
    found = [detect(c.text) for c in clauses]
    by_style: dict[str, object] = {}
    single = [(c, e) for c, e in zip(clauses, found, strict=True) if len(c.targets) == 1]
    for style in TARGETED_STYLES:
        chosen = [(c, e) for c, e in single if c.style == style]
        if chosen:
            by_style[style] = targeted_figures([c for c, _ in chosen], [e for _, e in chosen])
    generic = [e for c, e in zip(clauses, found, strict=True) if c.style == "generic"]
    if generic:
        by_style["generic"] = generic_figures(generic)
    multi = [(c, e) for c, e in zip(clauses, found, strict=True) if len(c.targets) > 1]
    if multi:
        by_style["two_targets"] = two_target_figures([c for c, _ in multi], [e for _, e in multi])
    return by_style


def main() -> None:
    """Score every clause of both splits and print the figures as one JSON object."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threshold", type=float, default=None)
    args = parser.parse_args()
    threshold = (
        args.threshold if args.threshold is not None else AuditConfig().detect.exposure_threshold
    )
    heldout = load_heldout()
    reference = reference_spec()
    start = time.perf_counter()
    exposure = exposure_detector(heldout, reference, threshold)
    build_s = time.perf_counter() - start
    splits = {split: load_clauses(split) for split in SPLITS}
    start = time.perf_counter()
    figures = {split: evaluate(clauses, exposure) for split, clauses in splits.items()}
    score_s = time.perf_counter() - start
    with_leaks = exposure_detector(heldout, reference, threshold, count_leaks=True)
    baseline = phrase_baseline(heldout)
    result = {
        "benchmark": "exposure_corpus",
        "threshold": threshold,
        "threshold_fitted_on_tune": round(fitted_threshold(heldout, reference), 6),
        "sealed_twin_named": {
            split: sealed_leaks(heldout, reference, clauses) for split, clauses in splits.items()
        },
        "heldout_version": heldout.version,
        "public_scenarios": len(heldout.public_ids()),
        "clauses": {split: len(clauses) for split, clauses in splits.items()},
        "exposure": figures,
        "exposure_or_leak": {
            split: evaluate(clauses, with_leaks) for split, clauses in splits.items()
        },
        "baseline_distinctive_phrases": {
            split: evaluate(clauses, baseline) for split, clauses in splits.items()
        },
        "model_build_s": round(build_s, 3),
        "clauses_per_s": round(sum(map(len, splits.values())) / score_s, 1),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
