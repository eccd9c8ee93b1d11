"""Statistics of counterfactual samples: what verbalized awareness causes.

Each counterfactual sample is paired with the stored sample it was made from (same model, spec
text, scenario and condition; only the reasoning was edited), so the effect of the edit is the
paired difference of their covert outcomes:

* **covert rates before and after**, pooled over the valid pairs (both samples graded covert,
  honest or refused; a pair with an invalid side says nothing about covert behaviour). Pooled
  rather than the macro average over scenarios that history rates use: the pairs are the samples
  that were aware (or unaware), which scenarios hold very unevenly, and the question is what the
  edit did to *those* samples.
* **the effect** (after minus before) with a 95% two-level bootstrap interval: scenarios are
  resampled (pairs of one scenario are correlated), then pairs within each drawn scenario, so a
  handful of scenarios still gets an honestly wide interval instead of a degenerate one.
* **an exact McNemar p-value** on the discordant pairs (covert before only vs covert after
  only): under "the edit changes nothing" each discordant pair goes either way with probability
  1/2. It treats pairs as independent; several continuations of one source (``--epochs``) share
  its outcome, which the bootstrap interval accounts for and the p-value does not.
* **the re-verbalized share**: continuations whose own text voices awareness again (for an
  ablation: the model noticed again, as the paper saw), over all pairs, with the union of a
  scenario bootstrap and an exact interval on the pooled count, like every rate here.

Rates and effects go into ``estimates`` as ``counterfactual_<mode>_...`` rows of the revision, and
:func:`load_causal_evidence` reads them back for attribution, where a causal effect takes
precedence over the correlational decomposition.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from audit.analysis.estimates import (
    Interval,
    binomial_bounds,
    bootstrap_indices,
    bootstrap_weights,
    percentile_bounds,
)
from audit.store import Store

METRIC_PREFIX = "counterfactual_"
_METRICS = ("covert_original", "covert", "effect", "p_value", "reverbalized")

_PAIRS_SQL = """
SELECT c.scenario_id,
       count(*) AS n_all,
       count(*) FILTER (WHERE s.outcome <> 'invalid' AND c.outcome <> 'invalid') AS n,
       count(*) FILTER (WHERE s.outcome = 'covert' AND c.outcome = 'covert') AS both,
       count(*) FILTER (WHERE s.outcome = 'covert' AND c.outcome NOT IN ('covert', 'invalid'))
           AS before_only,
       count(*) FILTER (WHERE s.outcome NOT IN ('covert', 'invalid') AND c.outcome = 'covert')
           AS after_only,
       count(*) FILTER (WHERE c.reverbalized) AS reverbalized,
       count(DISTINCT c.source_key) AS sources
FROM counterfactual_samples c
JOIN samples s ON s.sample_key = c.source_key
WHERE c.model = ? AND c.spec_content_hash = ? AND c.set_hash = ? AND c.mode = ?
GROUP BY c.scenario_id
ORDER BY c.scenario_id
"""


@dataclass(frozen=True)
class PairCounts:
    """Per-scenario counts of the pairs of one (model, spec text, set, mode)."""

    scenario_ids: tuple[str, ...]
    n_all: np.ndarray
    n: np.ndarray
    both: np.ndarray
    before_only: np.ndarray
    after_only: np.ndarray
    reverbalized: np.ndarray
    sources: int

    @property
    def neither(self) -> np.ndarray:
        return self.n - self.both - self.before_only - self.after_only


def load_pair_counts(
    store: Store, *, model: str, spec_content_hash: str, set_hash: str, mode: str
) -> PairCounts:
    """Aggregate the stored pairs in SQL, one row per scenario."""
    rows = store.con.execute(_PAIRS_SQL, [model, spec_content_hash, set_hash, mode]).fetchall()

    def column(i: int) -> np.ndarray:
        return np.array([row[i] for row in rows], dtype=np.int64)

    return PairCounts(
        scenario_ids=tuple(str(row[0]) for row in rows),
        n_all=column(1),
        n=column(2),
        both=column(3),
        before_only=column(4),
        after_only=column(5),
        reverbalized=column(6),
        sources=int(sum(row[7] for row in rows)),
    )


@dataclass(frozen=True)
class CounterfactualEstimate:
    """The paired statistics of one mode's counterfactuals at one (model, revision)."""

    mode: str
    n_pairs: int
    n_scenarios: int
    n_sources: int
    n_invalid_pairs: int
    covert_original: Interval
    covert_counterfactual: Interval
    effect: Interval
    p_value: float
    discordant: tuple[int, int]
    """(covert only before the edit, covert only after it)."""
    reverbalized: Interval
    resampled: str = "scenarios, then pairs within them"

    def to_json(self) -> dict[str, Any]:
        """The fields ``audit counterfactual --json`` prints (names fixed by issue 13)."""
        return {
            "mode": self.mode,
            "n_pairs": self.n_pairs,
            "n_scenarios": self.n_scenarios,
            "n_sources": self.n_sources,
            "n_invalid_pairs": self.n_invalid_pairs,
            "covert_rate_original": self.covert_original.value,
            "covert_rate_original_ci": [self.covert_original.low, self.covert_original.high],
            "covert_rate_counterfactual": self.covert_counterfactual.value,
            "covert_rate_counterfactual_ci": [
                self.covert_counterfactual.low,
                self.covert_counterfactual.high,
            ],
            "effect": self.effect.value,
            "effect_ci": [self.effect.low, self.effect.high],
            "p_value": self.p_value,
            "discordant_pairs": {
                "covert_original_only": self.discordant[0],
                "covert_counterfactual_only": self.discordant[1],
            },
            "reverbalized_share": self.reverbalized.value,
            "reverbalized_share_ci": [self.reverbalized.low, self.reverbalized.high],
            "effect_interval": f"95% two-level bootstrap ({self.resampled})",
            "p_value_test": "exact McNemar, two-sided, on discordant pairs",
        }


def mcnemar_p(before_only: int, after_only: int) -> float:
    """Exact two-sided McNemar p-value: the binomial(b + c, 1/2) tail of the smaller count."""
    total = before_only + after_only
    if total == 0:
        return 1.0
    smaller = min(before_only, after_only)
    tail = sum(math.comb(total, k) for k in range(smaller + 1)) / 2.0**total
    return float(min(1.0, 2.0 * tail))


def estimate(
    mode: str, counts: PairCounts, *, resamples: int, seed: int
) -> CounterfactualEstimate | None:
    """The paired statistics of ``counts`` (None when no pair is valid)."""
    valid = counts.n > 0
    n_pairs = int(counts.n.sum())
    if n_pairs == 0:
        return None
    before = int((counts.both + counts.before_only).sum())
    after = int((counts.both + counts.after_only).sum())
    draws = _two_level(counts, valid, resamples, seed)
    low_high = percentile_bounds(np.stack(draws))
    b, c = int(counts.before_only.sum()), int(counts.after_only.sum())
    return CounterfactualEstimate(
        mode=mode,
        n_pairs=n_pairs,
        n_scenarios=int(valid.sum()),
        n_sources=counts.sources,
        n_invalid_pairs=int((counts.n_all - counts.n).sum()),
        covert_original=_union(before / n_pairs, low_high[0], binomial_bounds(before, n_pairs)),
        covert_counterfactual=_union(after / n_pairs, low_high[1], binomial_bounds(after, n_pairs)),
        effect=Interval((c - b) / n_pairs, float(low_high[2][0]), float(low_high[2][1])),
        p_value=mcnemar_p(b, c),
        discordant=(b, c),
        reverbalized=_share_interval(counts.reverbalized, counts.n_all, resamples, seed),
    )


def _two_level(
    counts: PairCounts, valid: np.ndarray, resamples: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Resampled (rate before, rate after, effect): scenarios with replacement, then each drawn
    scenario's pairs from its own mix of the four pair types (multinomial)."""
    types = np.stack(
        [counts.neither, counts.before_only, counts.after_only, counts.both], axis=1
    ).astype(float)[valid]
    n = counts.n[valid]
    chosen = bootstrap_indices(int(valid.sum()), resamples, seed)
    rng = np.random.default_rng([seed, int(valid.sum()), 13])
    drawn = rng.multinomial(n[chosen], types[chosen] / n[chosen][..., None])
    totals = drawn.sum(axis=(1, 2)).astype(float)
    before = (drawn[..., 1] + drawn[..., 3]).sum(axis=1) / totals
    after = (drawn[..., 2] + drawn[..., 3]).sum(axis=1) / totals
    return before, after, after - before


def _union(point: float, resampled: np.ndarray, exact: tuple[float, float]) -> Interval:
    return Interval(point, float(min(resampled[0], exact[0])), float(max(resampled[1], exact[1])))


def _share_interval(events: np.ndarray, trials: np.ndarray, resamples: int, seed: int) -> Interval:
    """A pooled share with the union of a scenario bootstrap and the pooled-count interval."""
    keep = trials > 0
    total = int(trials[keep].sum())
    if total == 0:
        return Interval(None, None, None)
    hits = int(events[keep].sum())
    weights = bootstrap_weights(int(keep.sum()), resamples, seed)
    with np.errstate(invalid="ignore", divide="ignore"):
        shares = (weights @ events[keep]) / (weights @ trials[keep])
    bounds = percentile_bounds(shares[None])[0]
    return _union(hits / total, bounds, binomial_bounds(hits, total))


# -- estimates rows ----------------------------------------------------------------------------


def metric_name(mode: str, metric: str) -> str:
    """``counterfactual_<mode>_<metric>``, as stored in ``estimates.metric``."""
    return f"{METRIC_PREFIX}{mode}_{metric}"


def estimate_rows(
    result: CounterfactualEstimate, *, model: str, source_id: str, shas: Sequence[str]
) -> list[dict[str, Any]]:
    """``estimates`` rows of one mode's statistics, for every revision in ``shas``."""
    values: dict[str, Interval] = {
        "covert_original": result.covert_original,
        "covert": result.covert_counterfactual,
        "effect": result.effect,
        "p_value": Interval(result.p_value, None, None),
        "reverbalized": result.reverbalized,
    }
    return [
        {
            "model": model,
            "source_id": source_id,
            "sha": sha,
            "metric": metric_name(result.mode, name),
            "scope": "all",
            "scope_id": "*",
            "value": interval.value,
            "ci_low": interval.low,
            "ci_high": interval.high,
            "n_samples": result.n_pairs,
            "n_scenarios": result.n_scenarios,
        }
        for sha in shas
        for name, interval in values.items()
    ]


def store_estimates(
    store: Store, rows: list[dict[str, Any]], *, model: str, source_id: str, mode: str
) -> None:
    """Replace one mode's counterfactual estimates of the revisions in ``rows``."""
    shas = sorted({row["sha"] for row in rows})
    with store.transaction():
        store.con.execute(
            "DELETE FROM estimates WHERE model = ? AND source_id = ? AND list_contains(?, sha) "
            "AND starts_with(metric, ?)",
            [model, source_id, shas, metric_name(mode, "")],
        )
        store.insert_rows("estimates", rows)


# -- for attribution ---------------------------------------------------------------------------


@dataclass(frozen=True)
class CausalEvidence:
    """A counterfactual effect of awareness on the covert rate, as attribution uses it."""

    mode: str
    model: str
    sha: str
    covert_original: float
    covert_counterfactual: float
    effect: float
    ci_low: float
    ci_high: float
    p_value: float
    n_pairs: int

    def awareness_effect(self) -> tuple[float, float, float]:
        """The change in one sample's covert probability that verbalized awareness causes
        (point, low, high): ablation removes awareness (its effect with the sign flipped),
        injection adds it."""
        if self.mode == "ablate":
            return -self.effect, -self.ci_high, -self.ci_low
        return self.effect, self.ci_low, self.ci_high

    def to_json(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "rev": self.sha,
            "covert_rate_original": round(self.covert_original, 6),
            "covert_rate_counterfactual": round(self.covert_counterfactual, 6),
            "effect": round(self.effect, 6),
            "effect_ci": [round(self.ci_low, 6), round(self.ci_high, 6)],
            "p_value": self.p_value,
            "n_pairs": self.n_pairs,
        }


_CAUSAL_SQL = """
SELECT model, sha, metric, value, ci_low, ci_high, n_samples
FROM estimates
WHERE starts_with(metric, 'counterfactual_') AND scope = 'all'
  AND (? IS NULL OR model IN (SELECT unnest(?)))
"""

#: Modes whose effect measures what awareness causes, in order of preference: ablation acts on
#: the samples that were aware (those a rise in awareness adds), injection on unaware ones.
CAUSAL_MODES = ("ablate", "inject")


def load_causal_evidence(
    store: Store, models: Sequence[str] | None = None
) -> dict[tuple[str, str], tuple[CausalEvidence, ...]]:
    """Per (model, revision), the stored counterfactual effects, ablation first."""
    rows = store.con.execute(_CAUSAL_SQL, [models, models]).fetchall()
    found: dict[tuple[str, str, str], dict[str, tuple[Any, ...]]] = {}
    for model, sha, metric, value, low, high, n in rows:
        mode, _, name = metric.removeprefix(METRIC_PREFIX).partition("_")
        found.setdefault((model, sha, mode), {})[name] = (value, low, high, n)
    evidence: dict[tuple[str, str], list[CausalEvidence]] = {}
    for (model, sha, mode), values in found.items():
        if mode not in CAUSAL_MODES or not set(_METRICS) <= set(values):
            continue
        effect = values["effect"]
        if None in effect[:3]:
            continue
        evidence.setdefault((model, sha), []).append(
            CausalEvidence(
                mode=mode,
                model=model,
                sha=sha,
                covert_original=float(values["covert_original"][0]),
                covert_counterfactual=float(values["covert"][0]),
                effect=float(effect[0]),
                ci_low=float(effect[1]),
                ci_high=float(effect[2]),
                p_value=float(values["p_value"][0]),
                n_pairs=int(effect[3]),
            )
        )
    return {
        key: tuple(sorted(items, key=lambda e: CAUSAL_MODES.index(e.mode)))
        for key, items in evidence.items()
    }
