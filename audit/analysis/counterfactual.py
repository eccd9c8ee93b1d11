"""Statistics of counterfactual samples: what verbalized awareness causes.

Each counterfactual sample is paired with the stored sample it was made from (same model, spec
text, scenario and condition; only the reasoning was edited), so the effect of the edit is the
paired difference of their covert outcomes. The unit of resampling and testing is the *source*
sample with all of its continuations (``--epochs``): continuations of one source share its
outcome and its edited prefix, so counting them as independent pairs would overstate the
evidence (a simulated model that ignores awareness, given seven sources that happened to be
honest and four continuations each, looked "significant" at p = 0.016 that way).

* **covert rates before and after**, pooled over the valid pairs (both samples graded covert,
  honest or refused; a pair with an invalid side says nothing about covert behaviour). Pooled
  rather than the macro average over scenarios that history rates use: the pairs are the samples
  that were aware (or unaware), which scenarios hold very unevenly, and the question is what the
  edit did to *those* samples. Intervals: the union of the bootstrap below and an exact interval
  on the pooled count (sources for the rate before, continuations for the rate after).
* **the effect** (after minus before): the union of a two-level bootstrap (scenarios resampled,
  then source samples within each drawn scenario, each with its continuations) and Newcombe's
  hybrid score interval built from the two rates' exact intervals. The bootstrap alone cannot
  see the uncertainty of a side that is 0 in every source (all sources honest), which the exact
  interval does; Newcombe's interval treats the two rates as independent and so is
  conservative for pairs, whose outcomes are positively correlated.
* **an exact McNemar p-value**: under "the edit changes nothing" a source and its continuations
  are exchangeable draws, so, given how many of them are covert, each is equally likely to be
  the source. The number of covert sources then has a Poisson-binomial law (one Bernoulli of
  covert / (continuations + 1) per source), and the two-sided p-value doubles its smaller tail.
  With one continuation per source this is exactly McNemar's test on the discordant pairs.
* **the re-verbalized share**: continuations whose own text voices awareness again (for an
  ablation: the model noticed again, as the paper saw), over all pairs, with the union of a
  scenario bootstrap and an exact interval on the pooled count.

Rates and effects go into ``estimates`` as ``counterfactual_<mode>_...`` rows of the revision, and
:func:`load_causal_evidence` reads them back for attribution, where a causal effect takes
precedence over the correlational decomposition.
"""

from __future__ import annotations

import math
from collections import Counter
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
from audit.store.rows import EstimateRow, replace_estimates

METRIC_PREFIX = "counterfactual_"
_METRICS = ("covert_original", "covert", "effect", "p_value", "reverbalized")

# One row per source sample: its outcome and its continuations' counts.
_SOURCES_SQL = """
SELECT c.scenario_id,
       any_value(s.outcome) = 'covert' AS source_covert,
       any_value(s.outcome) = 'invalid' AS source_invalid,
       count(*) AS continuations,
       count(*) FILTER (WHERE c.outcome <> 'invalid') AS valid,
       count(*) FILTER (WHERE c.outcome = 'covert') AS covert,
       count(*) FILTER (WHERE c.reverbalized) AS reverbalized
FROM counterfactual_samples c
JOIN samples s ON s.sample_key = c.source_key
WHERE c.model = ? AND c.spec_content_hash = ? AND c.set_hash = ? AND c.mode = ?
GROUP BY c.scenario_id, c.source_key
ORDER BY c.scenario_id, c.source_key
"""


@dataclass(frozen=True)
class PairCounts:
    """The pairs of one (model, spec text, set, mode), one entry per source sample."""

    scenario_ids: tuple[str, ...]
    """Scenario of each source (sorted, so a scenario's sources are adjacent)."""
    source_covert: np.ndarray
    source_invalid: np.ndarray
    continuations: np.ndarray
    valid: np.ndarray
    """Continuations graded covert, honest or refused."""
    covert: np.ndarray
    """Continuations graded covert."""
    reverbalized: np.ndarray

    @property
    def k(self) -> np.ndarray:
        """Valid pairs per source (0 when the source itself is invalid)."""
        return np.where(self.source_invalid, 0, self.valid)

    @property
    def pair_covert(self) -> np.ndarray:
        """Covert continuations in valid pairs, per source."""
        return np.where(self.source_invalid, 0, self.covert)


def load_pair_counts(
    store: Store, *, model: str, spec_content_hash: str, set_hash: str, mode: str
) -> PairCounts:
    """Read the stored pairs, aggregated per source sample in SQL."""
    rows = store.con.execute(_SOURCES_SQL, [model, spec_content_hash, set_hash, mode]).fetchall()

    def column(i: int) -> np.ndarray:
        return np.array([row[i] for row in rows], dtype=np.int64)

    return PairCounts(
        scenario_ids=tuple(str(row[0]) for row in rows),
        source_covert=column(1),
        source_invalid=column(2).astype(bool),
        continuations=column(3),
        valid=column(4),
        covert=column(5),
        reverbalized=column(6),
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
    """(covert only before the edit, covert only after it), counted over pairs."""
    reverbalized: Interval

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
            "effect_interval": "95%: union of a two-level bootstrap (scenarios, then source "
            "samples) and Newcombe's hybrid score interval",
            "p_value_test": "exact McNemar on discordant pairs (stratified by source sample "
            "when sources have several continuations), two-sided",
        }


def mcnemar_p(before_only: int, after_only: int) -> float:
    """Exact two-sided McNemar p-value: the binomial(b + c, 1/2) tail of the smaller count."""
    total = before_only + after_only
    if total == 0:
        return 1.0
    smaller = min(before_only, after_only)
    tail = sum(math.comb(total, k) for k in range(smaller + 1)) / 2.0**total
    return float(min(1.0, 2.0 * tail))


def exchangeable_p(source_covert: np.ndarray, k: np.ndarray, covert: np.ndarray) -> float:
    """Exact two-sided p-value of "the edit changes nothing", stratified by source.

    Given ``m`` covert outcomes among a source and its ``k`` continuations, the source is covert
    with probability m / (k + 1) under exchangeability; the number of covert sources is a sum of
    such Bernoullis (a Poisson-binomial law, convolved exactly). For k = 1 this is McNemar's exact
    test.
    """
    keep = k > 0
    observed = int(source_covert[keep].sum())
    probabilities = (source_covert[keep] + covert[keep]) / (k[keep] + 1.0)
    law = np.ones(1)
    for p in probabilities:
        law = np.convolve(law, [1.0 - p, p])
    lower, upper = float(law[: observed + 1].sum()), float(law[observed:].sum())
    return float(min(1.0, 2.0 * min(lower, upper)))


def estimate(
    mode: str, counts: PairCounts, *, resamples: int, seed: int
) -> CounterfactualEstimate | None:
    """The paired statistics of ``counts`` (None when no pair is valid)."""
    k, pair_covert = counts.k, counts.pair_covert
    n_pairs = int(k.sum())
    if n_pairs == 0:
        return None
    used = k > 0
    n_sources = int(used.sum())
    before_pairs = int((counts.source_covert * k).sum())
    after_pairs = int(pair_covert.sum())
    before_only = int((counts.source_covert * (k - pair_covert)).sum())
    after_only = int(((1 - counts.source_covert) * pair_covert).sum())
    before = before_pairs / n_pairs
    after = after_pairs / n_pairs
    boot_before, boot_after, boot_effect = _two_level(counts, resamples, seed)
    exact_before = binomial_bounds(int(counts.source_covert[used].sum()), n_sources)
    exact_after = binomial_bounds(after_pairs, n_pairs)
    return CounterfactualEstimate(
        mode=mode,
        n_pairs=n_pairs,
        n_scenarios=len({s for s, u in zip(counts.scenario_ids, used, strict=True) if u}),
        n_sources=n_sources,
        n_invalid_pairs=int((counts.continuations - k).sum()),
        covert_original=_union(before, boot_before, exact_before),
        covert_counterfactual=_union(after, boot_after, exact_after),
        effect=_union(
            after - before, boot_effect, newcombe(before, exact_before, after, exact_after)
        ),
        p_value=exchangeable_p(counts.source_covert, k, pair_covert),
        discordant=(before_only, after_only),
        reverbalized=_share_interval(counts, resamples, seed),
    )


def newcombe(
    before: float,
    before_bounds: tuple[float, float],
    after: float,
    after_bounds: tuple[float, float],
) -> tuple[float, float]:
    """Newcombe's hybrid score interval of after - before from each rate's own interval."""
    low_b, high_b = before_bounds
    low_a, high_a = after_bounds
    difference = after - before
    return (
        difference - math.hypot(after - low_a, high_b - before),
        difference + math.hypot(high_a - after, before - low_b),
    )


def _two_level(counts: PairCounts, resamples: int, seed: int) -> tuple[np.ndarray, ...]:
    """95% percentile bounds of the resampled (rate before, rate after, effect): scenarios
    with replacement, then each drawn scenario's sources from its own mix of source kinds
    (a kind = valid continuations, source covert or not, covert continuations; multinomial)."""
    used = counts.k > 0
    scenarios: dict[str, Counter[tuple[int, int, int]]] = {}
    for sid, k, source, covert, keep in zip(
        counts.scenario_ids, counts.k, counts.source_covert, counts.pair_covert, used, strict=True
    ):
        if keep:
            scenarios.setdefault(sid, Counter())[(int(k), int(source), int(covert))] += 1
    width = max(len(kinds) for kinds in scenarios.values())
    shape = (len(scenarios), width)
    kind_k, kind_source, kind_covert, share = (np.zeros(shape) for _ in range(4))
    sizes = np.zeros(len(scenarios), dtype=np.int64)
    for j, kinds in enumerate(scenarios.values()):
        sizes[j] = sum(kinds.values())
        for t, ((k, source, covert), n) in enumerate(kinds.items()):
            kind_k[j, t], kind_source[j, t], kind_covert[j, t] = k, source, covert
            share[j, t] = n / sizes[j]
    chosen = bootstrap_indices(len(scenarios), resamples, seed)
    rng = np.random.default_rng([seed, len(scenarios), 13])
    drawn = rng.multinomial(sizes[chosen], share[chosen])
    pairs = (drawn * kind_k[chosen]).sum(axis=(1, 2))
    before = (drawn * kind_k[chosen] * kind_source[chosen]).sum(axis=(1, 2)) / pairs
    after = (drawn * kind_covert[chosen]).sum(axis=(1, 2)) / pairs
    bounds = percentile_bounds(np.stack([before, after, after - before]))
    return bounds[0], bounds[1], bounds[2]


def _union(point: float, resampled: np.ndarray, exact: tuple[float, float]) -> Interval:
    return Interval(point, float(min(resampled[0], exact[0])), float(max(resampled[1], exact[1])))


def _share_interval(counts: PairCounts, resamples: int, seed: int) -> Interval:
    """The re-verbalized share of all continuations: the union of a scenario bootstrap and the
    exact interval of the pooled count."""
    total = int(counts.continuations.sum())
    if total == 0:
        return Interval(None, None, None)
    ids = sorted(set(counts.scenario_ids))
    index = np.array([ids.index(s) for s in counts.scenario_ids])
    events = np.bincount(index, weights=counts.reverbalized, minlength=len(ids))
    trials = np.bincount(index, weights=counts.continuations, minlength=len(ids))
    hits = int(counts.reverbalized.sum())
    weights = bootstrap_weights(len(ids), resamples, seed)
    shares = (weights @ events) / (weights @ trials)
    bounds = percentile_bounds(shares[None])[0]
    return _union(hits / total, bounds, binomial_bounds(hits, total))


# -- estimates rows ----------------------------------------------------------------------------


def metric_name(mode: str, metric: str) -> str:
    """``counterfactual_<mode>_<metric>``, as stored in ``estimates.metric``."""
    return f"{METRIC_PREFIX}{mode}_{metric}"


def estimate_rows(
    result: CounterfactualEstimate, *, model: str, source_id: str, shas: Sequence[str]
) -> list[EstimateRow]:
    """``estimates`` rows of one mode's statistics, for every revision in ``shas``."""
    values: dict[str, Interval] = {
        "covert_original": result.covert_original,
        "covert": result.covert_counterfactual,
        "effect": result.effect,
        "p_value": Interval(result.p_value, None, None),
        "reverbalized": result.reverbalized,
    }
    return [
        EstimateRow(
            model=model,
            source_id=source_id,
            sha=sha,
            metric=metric_name(result.mode, name),
            scope="all",
            scope_id="*",
            value=interval.value,
            ci_low=interval.low,
            ci_high=interval.high,
            n_samples=result.n_pairs,
            n_scenarios=result.n_scenarios,
        )
        for sha in shas
        for name, interval in values.items()
    ]


def store_estimates(
    store: Store, rows: list[EstimateRow], *, model: str, source_id: str, mode: str
) -> None:
    """Replace one mode's counterfactual estimates of the revisions in ``rows``."""
    replace_estimates(
        store,
        model=model,
        source_id=source_id,
        shas=sorted({row.sha for row in rows}),
        metric_prefix=metric_name(mode, ""),
        rows=rows,
    )


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
    reverbalized: float = 0.0

    def awareness_effect(self) -> tuple[float, float, float]:
        """The change in one sample's covert probability that verbalized awareness causes
        (point, low, high).

        Injection adds awareness: its effect is that change. Ablation removes it, but a share
        of the continuations voice it again, so the measured effect is that of *trying* to
        remove it; taking the re-verbalized continuations as aware again, the effect of removing
        it is the measured one over the share that stayed unaware (the complier effect of an
        encouragement design, with its interval scaled alike). The sign is flipped: removing
        awareness raises covert actions when awareness lowers them.
        """
        if self.mode != "ablate":
            return self.effect, self.ci_low, self.ci_high
        kept = 1.0 - self.reverbalized if self.reverbalized < 1.0 else 1.0
        return -self.effect / kept, -self.ci_high / kept, -self.ci_low / kept

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
            "reverbalized_share": round(self.reverbalized, 6),
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
                reverbalized=float(values["reverbalized"][0] or 0.0),
            )
        )
    return {
        key: tuple(sorted(items, key=lambda e: CAUSAL_MODES.index(e.mode)))
        for key, items in evidence.items()
    }
