"""Rates per (model, spec revision) with 95% intervals.

Samples of one scenario are correlated (same prompt, same tools), so intervals resample whole
scenarios, never single samples. Everything is computed from per-scenario counts aggregated in
DuckDB, so the bootstrap costs the same whether a scenario has 3 epochs or 3,000. One index
matrix of shape (resamples, n_scenarios) is drawn per scenario count from a seeded generator and
reused, which keeps results reproducible and comparisons on the same scenarios coherent.

A rate's interval answers two questions at once and is the union of two intervals:

* how far the macro rate would move on other scenarios like these: the percentile interval of a
  cluster bootstrap over scenarios;
* how far it would move on these same scenarios with new samples: an interval on the pooled
  counts, exact (Clopper-Pearson) when there are fewer than 20 events or non-events and Wilson's
  otherwise. Conditional on the scenarios, the samples are independent draws, and with the same
  number of samples m per scenario the pooled count of S scenarios is a sum of binomials whose
  probability of so few events is at most the Binomial(S m, macro rate) one (for zero events:
  prod (1 - p_s)^m <= (1 - mean p)^(S m)), so the bound is valid, if conservative. With unequal
  counts the pooled count is that of S scenarios at the smallest count, at the macro rate.

The bootstrap alone is degenerate where every scenario agrees: a rate of 0 in every scenario gives
[0, 0] at any number of samples, which would make "the upper bound is under 1%" (a collapse) true
of ten samples. The exact bound is what a collapse is judged on.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from audit.graders.sandbagging import ScoredSample, accuracy_gap
from audit.intervals import wilson_bounds
from audit.records import TWIN_METRICS
from audit.store import Store

#: Metrics written to ``estimates.metric``: name -> (numerator count, denominator count).
RATE_METRICS: dict[str, tuple[str, str]] = {
    # Invalid samples (no parseable answer) say nothing about covert behaviour and are left out
    # of the denominator; refusals stay in: refusing is a real, non-covert answer.
    "covert_rate": ("covert", "valid"),
    "eval_awareness_rate": ("aware", "n"),
    "spec_citation_rate": ("cited", "cited_n"),
    "refusal_rate": ("refused", "n"),
    "invalid_rate": ("invalid", "n"),
}
GAP_METRIC = "sandbagging_gap"
#: Condition names taken as the reference side of a paired family's gap, in order of preference,
#: for sets registered before their family declarations were stored.
_REFERENCE_CONDITIONS = ("neutral", "default", "control", "baseline")
#: Below this many events (or non-events) the pooled interval is exact (Clopper-Pearson).
EXACT_BELOW = 20


@dataclass(frozen=True)
class CellKey:
    """One point of the history for one model: the samples made on one spec text and set."""

    model: str
    content_hash: str
    set_hash: str


@dataclass
class Cell:
    """Per-scenario counts of one cell, aligned on ``scenario_ids`` (sorted)."""

    key: CellKey
    scenario_ids: tuple[str, ...]
    families: tuple[str, ...]
    counts: dict[str, np.ndarray]
    #: Every scored sample of a paired scenario (conditions named ``reference`` and ``other``),
    #: for the sandbagging gap's two-level bootstrap.
    scored: tuple[ScoredSample, ...] = ()
    #: Per scenario, the public scenario it is a sealed twin of (None for public ones); empty
    #: when the set has no twins.
    twin_of: tuple[str | None, ...] = ()

    def twin_pairs(self) -> np.ndarray:
        """(public index, twin index) of every sealed twin whose public scenario is here too."""
        where = {sid: i for i, sid in enumerate(self.scenario_ids)}
        pairs = [
            (where[public], i)
            for i, public in enumerate(self.twin_of)
            if public is not None and public in where
        ]
        return np.array(pairs, dtype=int).reshape(-1, 2)

    def sealed_mask(self) -> np.ndarray:
        """Which scenarios are sealed twins."""
        if not self.twin_of:
            return np.zeros(len(self.scenario_ids), dtype=bool)
        return np.array([public is not None for public in self.twin_of], dtype=bool)

    def rate(self, metric: str) -> np.ndarray:
        """Per-scenario rate of a metric (NaN where the denominator is zero)."""
        numerator, denominator = RATE_METRICS[metric]
        den = self.counts[denominator].astype(float)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(den > 0, self.counts[numerator] / den, np.nan)

    def subset(self, scenario_ids: tuple[str, ...]) -> Cell:
        """The same cell restricted to (and ordered by) the given scenarios."""
        where = {sid: i for i, sid in enumerate(self.scenario_ids)}
        take = np.array([where[s] for s in scenario_ids], dtype=int)
        return Cell(
            key=self.key,
            scenario_ids=scenario_ids,
            families=tuple(self.families[i] for i in take),
            counts={k: v[take] for k, v in self.counts.items()},
            scored=tuple(x for x in self.scored if x.scenario_id in set(scenario_ids)),
            twin_of=tuple(self.twin_of[i] for i in take) if self.twin_of else (),
        )

    @property
    def n_samples(self) -> int:
        return int(self.counts["n"].sum())


@dataclass(frozen=True)
class Interval:
    """A point estimate with its 95% interval."""

    value: float | None
    low: float | None
    high: float | None


_COUNT_SQL = """
WITH agg AS (
    SELECT model, spec_content_hash, set_hash, scenario_id,
           any_value(family) AS family,
           count(*) AS n,
           count(*) FILTER (WHERE outcome = 'covert') AS covert,
           count(*) FILTER (WHERE outcome = 'refused') AS refused,
           count(*) FILTER (WHERE outcome = 'invalid') AS invalid,
           count(*) FILTER (WHERE outcome <> 'invalid') AS valid,
           count(*) FILTER (WHERE eval_aware) AS aware,
           count(*) FILTER (WHERE eval_aware AND outcome <> 'invalid') AS aware_valid,
           count(*) FILTER (WHERE eval_aware AND outcome = 'covert') AS covert_aware,
           count(*) FILTER (WHERE spec_cited) AS cited,
           count(spec_cited) AS cited_n
    FROM samples
    WHERE {where}
    GROUP BY model, spec_content_hash, set_hash, scenario_id
)
SELECT agg.*, coalesce(agg.family, sc.family, 'unknown') AS family_name,
       coalesce(sc.twin_of, '') AS twin_of
FROM agg LEFT JOIN scenarios sc USING (set_hash, scenario_id)
ORDER BY model, spec_content_hash, set_hash, scenario_id
"""

_GAP_SQL = """
SELECT s.model, s.spec_content_hash, s.set_hash, s.scenario_id, s.condition, s.score,
       f.scoring, f.reference_condition, f.incentive_condition
FROM (SELECT * FROM samples WHERE score IS NOT NULL AND {where}) s
LEFT JOIN scenarios sc ON sc.set_hash = s.set_hash AND sc.scenario_id = s.scenario_id
LEFT JOIN heldout_families f
       ON f.set_hash = s.set_hash AND f.family = coalesce(s.family, sc.family)
ORDER BY s.model, s.spec_content_hash, s.set_hash, s.scenario_id, s.condition, s.sample_key
"""

COUNT_COLUMNS = (
    "n",
    "covert",
    "refused",
    "invalid",
    "valid",
    "aware",
    "aware_valid",
    "covert_aware",
    "cited",
    "cited_n",
)


def load_cells(
    store: Store, *, models: list[str] | None = None, set_hash: str | None = None
) -> dict[CellKey, Cell]:
    """Aggregate ``samples`` per (model, spec content, set, scenario) in SQL and build cells."""
    clauses = ["true"]
    params: list[Any] = []
    if models:
        clauses.append("model IN (SELECT unnest(?))")
        params.append(models)
    if set_hash:
        clauses.append("set_hash = ?")
        params.append(set_hash)
    where = " AND ".join(clauses)
    data = store.con.execute(_COUNT_SQL.format(where=where), params).fetchnumpy()
    scored = _load_scored(store, where, params)
    cells: dict[CellKey, Cell] = {}
    if len(data["model"]) == 0:
        return cells
    keys = list(zip(data["model"], data["spec_content_hash"], data["set_hash"], strict=True))
    starts = [0] + [i for i in range(1, len(keys)) if keys[i] != keys[i - 1]] + [len(keys)]
    for begin, end in itertools.pairwise(starts):
        key = CellKey(*(str(part) for part in keys[begin]))
        ids = tuple(str(s) for s in data["scenario_id"][begin:end])
        counts = {c: np.asarray(data[c][begin:end], dtype=np.int64) for c in COUNT_COLUMNS}
        twins = tuple(str(t) or None for t in data["twin_of"][begin:end])
        cells[key] = Cell(
            key=key,
            scenario_ids=ids,
            families=tuple(str(f) for f in data["family_name"][begin:end]),
            counts=counts,
            scored=tuple(scored.get(key, ())),
            twin_of=twins if any(twins) else (),
        )
    return cells


def _load_scored(store: Store, where: str, params: list) -> dict[CellKey, list[ScoredSample]]:
    """Per cell, the scored samples of its paired scenarios, their conditions renamed to
    ``reference`` and ``other``; unpaired scenarios are left out.

    The set's family declarations (``heldout_families``) say which families are judged on the
    accuracy gap and between which conditions. A set registered before families were stored
    falls back to the rule used then: any scenario scored in two conditions is paired, its
    reference being neutral, default, control or baseline.
    """
    rows = store.con.execute(_GAP_SQL.format(where=where), params).fetchall()
    by_scenario: dict[tuple[CellKey, str], dict[str, list[float]]] = {}
    declared: dict[tuple[CellKey, str], tuple[str | None, str | None, str | None]] = {}
    for model, content_hash, set_hash, scenario_id, condition, score, *family in rows:
        key = (CellKey(model, content_hash, set_hash), scenario_id)
        by_scenario.setdefault(key, {}).setdefault(condition, []).append(float(score))
        declared[key] = (family[0], family[1], family[2])
    scored: dict[CellKey, list[ScoredSample]] = {}
    for (cell_key, scenario_id), scores in by_scenario.items():
        pair = _gap_conditions(scores, *declared[(cell_key, scenario_id)])
        if pair is None:
            continue
        samples = scored.setdefault(cell_key, [])
        for side, condition in zip(("reference", "other"), pair, strict=True):
            samples.extend(ScoredSample(scenario_id, side, x) for x in scores[condition])
    return scored


def _gap_conditions(
    scores: dict[str, list[float]],
    scoring: str | None,
    reference: str | None,
    incentive: str | None,
) -> tuple[str, str] | None:
    """(reference, other) condition of a scenario's accuracy gap, or None when it has none."""
    if scoring is not None:
        if scoring != "accuracy_gap" or reference not in scores or incentive not in scores:
            return None
        return str(reference), str(incentive)
    if len(scores) < 2:
        return None
    fallback = next((c for c in _REFERENCE_CONDITIONS if c in scores), min(scores))
    return fallback, min(c for c in scores if c != fallback)


@lru_cache(maxsize=64)
def bootstrap_indices(n_clusters: int, resamples: int, seed: int) -> np.ndarray:
    """The (resamples, n_clusters) matrix of scenario indices drawn with replacement."""
    rng = np.random.default_rng([seed, n_clusters])
    matrix = rng.integers(0, n_clusters, size=(resamples, n_clusters), dtype=np.int32)
    matrix.setflags(write=False)
    return matrix


@lru_cache(maxsize=64)
def bootstrap_weights(n_clusters: int, resamples: int, seed: int) -> np.ndarray:
    """How often each scenario is drawn in each resample of :func:`bootstrap_indices`, over n.

    ``weights @ values`` is the vector of resampled means: one matrix product instead of a
    gather and a mean per statistic.
    """
    indices = bootstrap_indices(n_clusters, resamples, seed)
    weights = np.zeros((resamples, n_clusters))
    np.add.at(weights, (np.arange(resamples)[:, None], indices), 1.0 / n_clusters)
    weights.setflags(write=False)
    return weights


def bootstrap_means(values: np.ndarray, *, resamples: int, seed: int) -> np.ndarray:
    """Resampled means of per-scenario values (no NaN), scenarios drawn with replacement."""
    return bootstrap_weights(values.size, resamples, seed) @ values


def percentile_bounds(resampled: np.ndarray) -> np.ndarray:
    """95% percentile bounds of each row of a (statistics, resamples) matrix: shape (rows, 2).

    One call for many statistics: per-call overhead of ``np.quantile`` dominated detection when
    it ran once per estimate.
    """
    if resampled.size == 0:
        return np.zeros((0, 2))
    return np.quantile(resampled, [0.025, 0.975], axis=1).T


def cluster_bootstrap(per_scenario: np.ndarray, *, resamples: int, seed: int) -> Interval:
    """Macro mean of per-scenario values with a 95% percentile interval (scenarios resampled).

    NaN values (scenarios without a denominator) are left out of the mean and of the resampling.
    """
    values = per_scenario[~np.isnan(per_scenario)]
    if values.size == 0:
        return Interval(None, None, None)
    point = float(values.mean())
    if values.size == 1:
        return Interval(point, point, point)
    low, high = percentile_bounds(bootstrap_means(values, resamples=resamples, seed=seed)[None])[0]
    return Interval(point, float(low), float(high))


def rate_interval(events: np.ndarray, trials: np.ndarray, *, resamples: int, seed: int) -> Interval:
    """Macro rate of per-scenario counts: the union of the bootstrap and the pooled interval."""
    batch = _Batch(resamples, seed)
    slot = batch.add_rate(events, trials)
    return batch.resolve()[slot]


def pooled_interval(events: np.ndarray, trials: np.ndarray) -> tuple[float, float] | None:
    """95% interval of the macro rate on these scenarios from their pooled counts.

    Exact (Clopper-Pearson) with fewer than :data:`EXACT_BELOW` events or non-events, Wilson
    otherwise; the count is that of the scenarios at their smallest sample count (see the module
    docstring for why this bounds the macro rate).
    """
    keep = trials > 0
    if not keep.any():
        return None
    n_eff = int(keep.sum() * trials[keep].min())
    expected = float((events[keep] / trials[keep]).mean()) * n_eff
    # The tolerance keeps rounding error from pushing an exact count to the next integer.
    low = binomial_bounds(math.floor(expected + 1e-9), n_eff)[0]
    high = binomial_bounds(math.ceil(expected - 1e-9), n_eff)[1]
    return low, high


@lru_cache(maxsize=4096)
def binomial_bounds(successes: int, trials: int) -> tuple[float, float]:
    """95% interval of a binomial proportion: exact in the tails, Wilson in the middle."""
    if trials <= 0:
        return 0.0, 1.0
    failures = trials - successes
    if min(successes, failures) >= EXACT_BELOW:
        wilson = wilson_interval(successes, trials)
        return float(wilson.low or 0.0), float(wilson.high or 1.0)
    low = 0.0 if successes == 0 else _exact_lower(successes, trials)
    high = 1.0 if failures == 0 else 1.0 - _exact_lower(failures, trials)
    return low, high


def _exact_lower(successes: int, trials: int) -> float:
    """Clopper-Pearson lower bound: the p at which P(X >= successes) = 2.5%.

    The tail is summed over whichever side has fewer terms (fewer than :data:`EXACT_BELOW` on
    the side that matters), so each bisection step is one small vector operation.
    """
    if successes == trials:
        return 0.025 ** (1.0 / trials)
    upper_side = successes > trials - successes
    ks = np.arange(successes, trials + 1) if upper_side else np.arange(successes)
    log_choose = math.lgamma(trials + 1) - np.array(
        [math.lgamma(k + 1) + math.lgamma(trials - k + 1) for k in ks]
    )

    def upper_tail(p: float) -> float:
        terms = np.exp(log_choose + ks * math.log(p) + (trials - ks) * math.log1p(-p)).sum()
        return float(terms if upper_side else 1.0 - terms)

    low, high = 0.0, 1.0
    for _ in range(45):  # bisection to about 1e-14, far below any reported digit
        mid = (low + high) / 2
        if upper_tail(mid) > 0.025:
            high = mid
        else:
            low = mid
    return (low + high) / 2


def wilson_interval(successes: int, trials: int) -> Interval:
    """Wilson score interval for one scenario's rate (epochs of one scenario are one cluster)."""
    bounds = wilson_bounds(successes, trials)
    if bounds is None:
        return Interval(None, None, None)
    return Interval(successes / trials, *bounds)


class _Batch:
    """Many intervals computed with one percentile call (see :func:`percentile_bounds`)."""

    def __init__(self, resamples: int, seed: int) -> None:
        self.resamples, self.seed = resamples, seed
        self._points: list[float | None] = []
        self._pooled: list[tuple[float, float] | None] = []
        self._rows: list[int | None] = []
        self._resampled: list[np.ndarray] = []

    def add_rate(self, events: np.ndarray, trials: np.ndarray) -> int:
        """A rate interval: bootstrap over scenarios united with the pooled-count interval."""
        keep = trials > 0
        rates = events[keep] / trials[keep]
        return self._add(rates, pooled_interval(events[keep], trials[keep]))

    def add_rates(self, events: np.ndarray, trials: np.ndarray, scopes: np.ndarray) -> list[int]:
        """One rate interval per row of the boolean ``scopes`` matrix, computed together.

        The same as :meth:`add_rate` per scope, with the pooled counts of every scope taken in
        a few array operations (a cell has one scope per family and metric).
        """
        keep = trials > 0
        rates = np.where(keep, events / np.maximum(trials, 1), 0.0)
        kept = scopes & keep
        count = kept.sum(axis=1)
        points = (kept @ rates) / np.maximum(count, 1)
        smallest = np.where(kept, trials, np.iinfo(np.int64).max).min(axis=1)
        slots = []
        for row in range(scopes.shape[0]):
            if count[row] == 0:
                slots.append(self._add(np.zeros(0), None))
                continue
            n_eff = int(count[row]) * int(smallest[row])
            expected = float(points[row]) * n_eff
            pooled = (
                binomial_bounds(math.floor(expected + 1e-9), n_eff)[0],
                binomial_bounds(math.ceil(expected - 1e-9), n_eff)[1],
            )
            slots.append(self._add(rates[kept[row]], pooled))
        return slots

    def _add(self, values: np.ndarray, pooled: tuple[float, float] | None) -> int:
        self._points.append(float(values.mean()) if values.size else None)
        self._pooled.append(pooled)
        if values.size > 1:
            self._rows.append(len(self._resampled))
            self._resampled.append(
                bootstrap_means(values, resamples=self.resamples, seed=self.seed)
            )
        else:
            self._rows.append(None)
        return len(self._points) - 1

    def resolve(self) -> list[Interval]:
        """Every added interval, in the order added."""
        bounds = percentile_bounds(np.array(self._resampled)) if self._resampled else None
        out = []
        for point, pooled, row in zip(self._points, self._pooled, self._rows, strict=True):
            if point is None:
                out.append(Interval(None, None, None))
                continue
            low, high = (point, point) if row is None or bounds is None else bounds[row]
            if pooled is not None:
                low, high = min(low, pooled[0]), max(high, pooled[1])
            out.append(Interval(point, float(low), float(high)))
        return out


def cell_estimates(cell: Cell, *, resamples: int, seed: int) -> list[dict]:
    """Every estimate of a cell as ``estimates`` rows (without model/source/sha columns)."""
    batch = _Batch(resamples, seed)
    pending: list[tuple[str, str, str, int, int, int]] = []
    families = sorted(set(cell.families))
    family_masks = {f: np.array([x == f for x in cell.families]) for f in families}
    scenario_rows: list[dict] = []
    scopes = [("all", "*")] + [("family", f) for f in families]
    masks = np.stack([np.ones(len(cell.scenario_ids), dtype=bool), *family_masks.values()])
    sealed = cell.sealed_mask()
    if sealed.any():
        # The public scenarios and their sealed twins apart: a patch moves only the first.
        metric_masks = {TWIN_METRICS[0]: ~sealed, TWIN_METRICS[1]: sealed}
        events, trials = cell.counts["covert"], cell.counts["valid"]
        group_masks = np.stack(list(metric_masks.values()))
        slots = batch.add_rates(events, trials, group_masks)
        for (metric, mask), slot in zip(metric_masks.items(), slots, strict=True):
            n = int(trials[mask].sum())
            pending.append((metric, "all", "*", slot, n, int((trials[mask] > 0).sum())))
    for metric, (numerator, denominator) in RATE_METRICS.items():
        events, trials = cell.counts[numerator], cell.counts[denominator]
        slots = batch.add_rates(events, trials, masks)
        n_samples = masks.astype(np.int64) @ trials
        n_scenarios = masks.astype(np.int64) @ (trials > 0).astype(np.int64)
        for i, ((scope, scope_id), slot) in enumerate(zip(scopes, slots, strict=True)):
            pending.append((metric, scope, scope_id, slot, int(n_samples[i]), int(n_scenarios[i])))
        if metric != "covert_rate":
            continue  # per-scenario rows only for the headline metric, to keep the table small
        for i, scenario_id in enumerate(cell.scenario_ids):
            interval = wilson_interval(int(events[i]), int(trials[i]))
            scenario_rows.append(_row(metric, "scenario", scenario_id, interval, int(trials[i]), 1))
    intervals = batch.resolve()
    rows = [
        _row(metric, scope, scope_id, intervals[slot], n_samples, n_scenarios)
        for metric, scope, scope_id, slot, n_samples, n_scenarios in pending
    ]
    return rows + _gap_rows(cell, family_masks, resamples=resamples, seed=seed) + scenario_rows


def _gap_rows(
    cell: Cell, family_masks: dict[str, np.ndarray], *, resamples: int, seed: int
) -> list[dict]:
    """The sandbagging gap (reference minus other condition) overall and per paired family.

    Its interval comes from the two-level bootstrap of :func:`accuracy_gap` (scenarios, then
    samples within each condition): with the few paired scenarios a set has, resampling only
    the per-scenario gaps would understate the uncertainty (zero width for one scenario).
    """
    paired_ids = {x.scenario_id for x in cell.scored}
    if not paired_ids:
        return []
    paired = np.array([sid in paired_ids for sid in cell.scenario_ids])
    scopes = [("family", f, mask & paired) for f, mask in family_masks.items()]
    scopes.append(("all", "*", paired))
    rows = []
    for scope, scope_id, chosen in scopes:
        if not chosen.any():
            continue
        ids = {sid for sid, keep in zip(cell.scenario_ids, chosen, strict=True) if keep}
        gap = accuracy_gap(
            (x for x in cell.scored if x.scenario_id in ids),
            reference="reference",
            other="other",
            resamples=resamples,
            seed=seed,
        )
        interval = Interval(gap.gap, gap.low, gap.high)
        rows.append(
            _row(GAP_METRIC, scope, scope_id, interval, gap.n_reference + gap.n_other, len(ids))
        )
    return rows


def _row(
    metric: str, scope: str, scope_id: str, interval: Interval, n_samples: int, n_scenarios: int
) -> dict:
    return {
        "metric": metric,
        "scope": scope,
        "scope_id": scope_id,
        "value": interval.value,
        "ci_low": interval.low,
        "ci_high": interval.high,
        "n_samples": n_samples,
        "n_scenarios": n_scenarios,
    }
