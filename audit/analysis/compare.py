"""Paired changes between two points of the history, and false-discovery-rate control.

Two points (two spec revisions, or two model versions) are compared on the scenarios both have,
scenario by scenario. Two different questions get two different tools:

* Is there a change on THIS held-out set? The p-value comes from an exact stratified test
  conditional on the (fixed) scenarios: each scenario is a stratum, and within it the samples of
  both points are exchangeable under "no scenario changed" (epochs are independent draws). The
  statistic is the Cochran-Mantel-Haenszel count (events at the later point, summed over
  scenarios); its null distribution is the convolution of the per-scenario hypergeometric
  distributions, i.e. every relabelling of samples within scenarios, enumerated exactly rather
  than sampled. Its smallest p-value shrinks with the number of samples, so a patch that moves
  only two or three scenarios can be significant (a sign-flip test over scenarios cannot go below
  1/2^k for k changed scenarios). Both tails are kept: detection asks "any change?" (two-sided),
  the gate asks "a rise?" and "a drop?" separately (one-sided each).
* How large is the change, and would it generalise to other scenarios like these? The interval
  of the mean per-scenario difference comes from a cluster bootstrap over scenarios. On a
  handful of scenarios (the ones a spec edit names) resampling three scenarios says little, so
  those intervals resample at two levels: scenarios, then samples within each drawn scenario
  (:func:`two_level_change`).

Many comparisons along a history are corrected together with Benjamini-Hochberg; which
comparisons form one family is decided by the caller (see :mod:`audit.analysis.evaluate`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np

from audit.analysis.estimates import (
    bootstrap_indices,
    bootstrap_means,
    bootstrap_weights,
    percentile_bounds,
)

Alternative = Literal["two-sided", "less", "greater"]


@dataclass(frozen=True)
class Tails:
    """Both one-sided p-values of a test of "after differs from before".

    ``less``: P(a statistic this low or lower) under the null (evidence of a drop);
    ``greater``: this high or higher (evidence of a rise).
    """

    less: float
    greater: float

    def p(self, alternative: Alternative = "two-sided") -> float:
        """The p-value for one alternative; two-sided doubles the smaller tail (capped at 1)."""
        if alternative == "less":
            return self.less
        if alternative == "greater":
            return self.greater
        return float(min(1.0, 2.0 * min(self.less, self.greater)))


NO_EVIDENCE = Tails(1.0, 1.0)
#: Smallest p-value reported.
MIN_P = 1e-16


@dataclass(frozen=True)
class PairedChange:
    """Mean per-scenario change (after - before) with its interval and test."""

    delta: float
    ci_low: float
    ci_high: float
    tails: Tails
    differences: np.ndarray
    #: "scenarios" (cluster bootstrap) or "scenarios and samples" (two-level bootstrap).
    resampled: str = "scenarios"

    @property
    def p_value(self) -> float:
        """Two-sided p-value."""
        return self.tails.p("two-sided")


@lru_cache(maxsize=64)
def sign_matrix(n_clusters: int, resamples: int, seed: int) -> np.ndarray:
    """The (resamples, n_clusters) matrix of random signs of the permutation test."""
    rng = np.random.default_rng([seed, n_clusters, 1])
    signs = rng.integers(0, 2, size=(resamples, n_clusters), dtype=np.int8) * 2 - 1
    signs = signs.astype(np.float64)
    signs.setflags(write=False)
    return signs


@dataclass(frozen=True)
class EventCounts:
    """Per-scenario event counts of two points (aligned arrays): the stratified test's input."""

    before_events: np.ndarray
    before_n: np.ndarray
    after_events: np.ndarray
    after_n: np.ndarray

    def take(self, mask: np.ndarray) -> EventCounts:
        """The same counts for the scenarios selected by ``mask``."""
        return EventCounts(
            self.before_events[mask],
            self.before_n[mask],
            self.after_events[mask],
            self.after_n[mask],
        )

    def observed(self) -> np.ndarray:
        """Scenarios with samples at both points (the others cannot be compared)."""
        return (np.asarray(self.before_n) > 0) & (np.asarray(self.after_n) > 0)

    def rates(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-scenario rates before and after (NaN without samples)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            before = np.where(self.before_n > 0, self.before_events / self.before_n, np.nan)
            after = np.where(self.after_n > 0, self.after_events / self.after_n, np.nan)
        return before.astype(float), after.astype(float)


def paired_change(
    before: np.ndarray,
    after: np.ndarray,
    *,
    resamples: int,
    seed: int,
    counts: EventCounts | None = None,
    two_level: bool = False,
    prior: BetaPrior | None = None,
) -> PairedChange:
    """Compare per-scenario values of two points (aligned arrays, NaN pairs dropped).

    With ``counts`` (the events behind the rates) the test is the exact stratified test of
    :func:`stratified_tails`, or with a ``prior`` as well the predictive test of
    :func:`predictive_tails` (for scenarios that may have been chosen on their earlier samples);
    without counts (a score that is not a count of events) it is the scenario-level sign-flip
    test. The interval is a cluster bootstrap over scenarios, or with
    ``two_level`` (and counts) the two-level bootstrap of :func:`two_level_change`.
    """
    keep = ~(np.isnan(before) | np.isnan(after))
    differences = after[keep] - before[keep]
    n = differences.size
    if n == 0:
        return PairedChange(0.0, 0.0, 0.0, NO_EVIDENCE, differences)
    delta = float(differences.mean())
    if counts is not None and prior is not None:
        tails = predictive_tails(counts.take(keep), prior)
    elif counts is not None:
        tails = stratified_tails(counts.take(keep))
    else:
        tails = sign_flip_tails(differences, resamples, seed) if n > 1 else NO_EVIDENCE
    if two_level and counts is not None:
        resampled = two_level_change(counts.take(keep), resamples=resamples, seed=seed)
        low, high = percentile_bounds(resampled[None])[0]
        return PairedChange(
            delta, float(low), float(high), tails, differences, "scenarios and samples"
        )
    if n == 1:
        return PairedChange(delta, delta, delta, tails, differences)
    low, high = percentile_bounds(
        bootstrap_means(differences, resamples=resamples, seed=seed)[None]
    )[0]
    return PairedChange(delta, float(low), float(high), tails, differences)


#: From this many scenarios on, the within-scenario part of the two-level bootstrap uses the
#: normal law of the summed binomial noise (exact enough over 20 terms, and far cheaper than
#: redrawing every count).
NORMAL_WITHIN_FROM = 20


def two_level_change(
    counts: EventCounts, *, resamples: int, seed: int, prior: BetaPrior | None = None
) -> np.ndarray:
    """Resampled mean changes: scenarios drawn with replacement, then samples within each.

    Within a drawn scenario each point's count is redrawn as Binomial(n, observed rate). With
    two or three scenarios the scenario level alone has at most a handful of distinct means (and
    none at all when they moved alike); the sample level adds the binomial noise that every
    per-scenario rate carries. The within-scenario noise is counted twice (once in the observed
    rates the scenarios are drawn from, once in the redraw), so the interval is conservative,
    which is the honest direction for a group of three. With a ``prior`` the earlier rates are
    shrunk toward the set's mean (see :func:`predictive_tails`) after each redraw. From
    :data:`NORMAL_WITHIN_FROM` scenarios on, the summed redraw noise is drawn from its normal law.
    """
    n0 = np.asarray(counts.before_n, dtype=np.int64)
    n1 = np.asarray(counts.after_n, dtype=np.int64)
    k = n0.size
    rng = np.random.default_rng([seed, k, 2])
    p0 = np.asarray(counts.before_events, dtype=float) / n0
    p1 = np.asarray(counts.after_events, dtype=float) / n1
    # How much of an earlier count's noise reaches its (possibly shrunk) rate.
    pull = n0 / (prior.a + prior.b + n0) if prior is not None else np.ones(k)
    level0 = prior.shrink(counts.before_events, n0) if prior is not None else p0
    if k >= NORMAL_WITHIN_FROM:
        weights = bootstrap_weights(k, resamples, seed)
        noise = p1 * (1 - p1) / n1 + pull**2 * p0 * (1 - p0) / n0
        spread = np.sqrt(weights @ noise / k)
        return weights @ (p1 - level0) + spread * rng.standard_normal(resamples)
    indices = bootstrap_indices(k, resamples, seed)
    before_events = _redraw(n0, p0, indices, rng)
    if prior is None:
        before = before_events / n0[indices]
    else:
        before = prior.shrink(before_events, n0[indices])
    after = _redraw(n1, p1, indices, rng) / n1[indices]
    return (after - before).mean(axis=1)


#: A binomial with at least this variance (n p (1 - p)) is redrawn from its normal law.
NORMAL_VARIANCE_FROM = 10.0


def _redraw(
    trials: np.ndarray, rate: np.ndarray, indices: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Binomial redraws of the drawn scenarios' counts (normal where that is exact enough).

    Small counts are skewed and must be drawn exactly; large ones are normal to within the
    bootstrap's own noise, and exact draws of them cost ten times more.
    """
    variance = trials * rate * (1 - rate)
    exact = variance < NORMAL_VARIANCE_FROM
    counts = rng.binomial(trials[indices], np.where(exact, rate, 0.0)[indices]).astype(float)
    if exact.all():
        return counts
    noise = rng.standard_normal(indices.shape) * np.sqrt(variance)[indices]
    return np.where(exact[indices], counts, (trials * rate)[indices] + noise)


def stratified_tails(counts: EventCounts) -> Tails:
    """Both one-sided p-values of the exact stratified (conditional) test that nothing changed.

    Conditional on each scenario's sample sizes and total events, the later point's event count
    is hypergeometric under the null; the sum over scenarios (the CMH statistic) has the
    convolution of those distributions. Scenarios whose samples all agree (no events, or only
    events) carry no information and drop out, as they do from any permutation of labels within
    them.
    """
    n0 = np.asarray(counts.before_n, dtype=np.int64)
    n1 = np.asarray(counts.after_n, dtype=np.int64)
    events = np.asarray(counts.before_events, dtype=np.int64) + counts.after_events
    total = n0 + n1
    informative = (n0 > 0) & (n1 > 0) & (events > 0) & (events < total)
    if not informative.any():
        return NO_EVIDENCE
    observed = int(np.asarray(counts.after_events, dtype=np.int64)[informative].sum())
    distribution, offset = _null_distribution(n0[informative], n1[informative], events[informative])
    index = observed - offset
    lower = float(distribution[: index + 1].sum())
    upper = float(distribution[index:].sum())
    # Below about 1e-16 a tail is rounding error, not evidence (the FFT path's resolution).
    return Tails(float(np.clip(lower, MIN_P, 1.0)), float(np.clip(upper, MIN_P, 1.0)))


@dataclass(frozen=True)
class BetaPrior:
    """A Beta(a, b) law of per-scenario rates, fitted across the scenarios of one point."""

    a: float
    b: float

    def shrink(self, events: np.ndarray, trials: np.ndarray) -> np.ndarray:
        """Posterior mean rates: each scenario's rate pulled toward the set's mean."""
        return (self.a + np.asarray(events, dtype=float)) / (self.a + self.b + trials)


#: Cap on a + b of a fitted prior (when scenarios look identical: pooling, but not total).
MAX_PRIOR_WEIGHT = 1000.0


def fit_prior(events: np.ndarray, trials: np.ndarray) -> BetaPrior | None:
    """Method-of-moments Beta prior of per-scenario rates, net of binomial noise.

    None when there is nothing to fit (no events, or nothing but events).
    """
    keep = np.asarray(trials) > 0
    rates = np.asarray(events, dtype=float)[keep] / np.asarray(trials)[keep]
    if rates.size < 2:
        return None
    mean = float(rates.mean())
    if mean <= 0.0 or mean >= 1.0:
        return None
    noise = float((rates * (1 - rates) / np.asarray(trials)[keep]).mean())
    between = float(rates.var(ddof=1)) - noise
    weight = mean * (1 - mean) / between - 1 if between > 0 else MAX_PRIOR_WEIGHT
    weight = float(np.clip(weight, 0.5, MAX_PRIOR_WEIGHT))
    return BetaPrior(mean * weight, (1 - mean) * weight)


def predictive_tails(counts: EventCounts, prior: BetaPrior) -> Tails:
    """Tails of the later events under "nothing changed", predicted from the earlier samples.

    Each scenario's later count is beta-binomial: its rate is the posterior of ``prior`` given
    its earlier samples. Unlike the conditional test, this stays valid when the scenarios were
    chosen because of their earlier samples (a spec edit naming the scenarios that failed most):
    their earlier rates are then too high by selection, and would regress toward the mean even
    if nothing changed. The posterior shrinks them toward the mean first.
    """
    n0 = np.asarray(counts.before_n, dtype=np.int64)
    n1 = np.asarray(counts.after_n, dtype=np.int64)
    keep = (n0 > 0) & (n1 > 0)
    if not keep.any():
        return NO_EVIDENCE
    alpha = prior.a + np.asarray(counts.before_events, dtype=float)[keep]
    beta = prior.b + (n0 - np.asarray(counts.before_events))[keep]
    distribution = convolve_all(
        [
            _beta_binomial_pmf(int(size), a, b)
            for size, a, b in zip(n1[keep], alpha, beta, strict=True)
        ]
    )
    observed = int(np.asarray(counts.after_events)[keep].sum())
    lower = float(distribution[: observed + 1].sum())
    upper = float(distribution[observed:].sum())
    # Below about 1e-16 a tail is rounding error, not evidence (the FFT path's resolution).
    return Tails(float(np.clip(lower, MIN_P, 1.0)), float(np.clip(upper, MIN_P, 1.0)))


def _beta_binomial_pmf(size: int, a: float, b: float) -> np.ndarray:
    """P(K = k), k = 0..size, for K ~ BetaBinomial(size, a, b).

    Built from the ratio of consecutive terms, pmf(k+1) / pmf(k) = (size - k)(k + a) /
    ((k + 1)(size - k - 1 + b)), in logs, then normalised: no gamma functions needed.
    """
    if size == 0:
        return np.ones(1)
    k = np.arange(size, dtype=float)
    log_ratio = np.log((size - k) * (k + a)) - np.log((k + 1) * (size - k - 1 + b))
    log_pmf = np.concatenate([[0.0], np.cumsum(log_ratio)])
    pmf = np.exp(log_pmf - log_pmf.max())
    return pmf / pmf.sum()


def stratified_p(counts: EventCounts, alternative: Alternative = "two-sided") -> float:
    """p-value of the exact stratified test (two-sided doubles the smaller tail, capped at 1)."""
    return stratified_tails(counts).p(alternative)


def _null_distribution(
    n0: np.ndarray, n1: np.ndarray, events: np.ndarray
) -> tuple[np.ndarray, int]:
    """Null distribution of the summed later-point events and the value of its first entry."""
    # The table's size is rounded up to a power of two so one cached table serves many tests.
    log_factorial = _log_factorials(1 << max(6, int((n0 + n1).max()).bit_length()))
    low = np.maximum(0, n1 - (n0 + n1 - events))
    high = np.minimum(n1, events)
    pmfs: list[np.ndarray] = []
    # Identical strata (same sizes and events: the usual case with fixed epochs) share one pmf.
    strata, repeats = np.unique(np.stack([n0, n1, events, low, high]), axis=1, return_counts=True)
    for (size0, size1, m, lo, hi), times in zip(strata.T, repeats, strict=True):
        k = np.arange(lo, hi + 1)
        others = size0 + size1 - m
        # C(m, k) * C(N - m, n1 - k); the constant 1 / C(N, n1) is applied by normalising.
        log_pmf = (
            log_factorial[m]
            - log_factorial[k]
            - log_factorial[m - k]
            + log_factorial[others]
            - log_factorial[size1 - k]
            - log_factorial[others - size1 + k]
        )
        pmf = np.exp(log_pmf - log_pmf.max())
        pmfs.extend([pmf / pmf.sum()] * int(times))
    return convolve_all(pmfs), int(low.sum())


#: Supports longer than this are convolved through the FFT.
FFT_FROM = 1024


def convolve_all(pmfs: list[np.ndarray]) -> np.ndarray:
    """The law of a sum of independent counts, from their laws (each starting at 0).

    Directly for short supports; through one FFT product for long ones (hundreds of scenarios
    x epochs), where its absolute error (about 1e-15) is far below any p-value that matters.
    """
    length = sum(p.size - 1 for p in pmfs) + 1
    if length <= FFT_FROM:
        distribution = np.ones(1)
        for pmf in pmfs:
            distribution = np.convolve(distribution, pmf)
        return distribution
    size = 1 << (length - 1).bit_length()
    spectrum = np.ones(size // 2 + 1, dtype=complex)
    for pmf in pmfs:
        spectrum *= np.fft.rfft(pmf, size)
    distribution = np.clip(np.fft.irfft(spectrum, size)[:length], 0.0, None)
    return distribution / distribution.sum()


@lru_cache(maxsize=8)
def _log_factorials(up_to: int) -> np.ndarray:
    """log(k!) for k = 0..up_to."""
    table = np.concatenate([[0.0], np.cumsum(np.log(np.arange(1, up_to + 1)))])
    table.setflags(write=False)
    return table


def sign_flip_tails(differences: np.ndarray, resamples: int, seed: int) -> Tails:
    """One-sided p-values of the paired sign-flip permutation test on the mean difference."""
    observed = float(differences.mean())
    if observed == 0.0 and not differences.any():
        return NO_EVIDENCE
    null = (sign_matrix(differences.size, resamples, seed) @ differences) / differences.size
    # The tolerance keeps ties (null equal to the observed value) counted despite rounding.
    below = int(np.count_nonzero(null <= observed + 1e-12))
    above = int(np.count_nonzero(null >= observed - 1e-12))
    return Tails((1 + below) / (1 + resamples), (1 + above) / (1 + resamples))


@dataclass(frozen=True)
class DiffInDiff:
    """Mean change of the exposed scenarios minus that of the unexposed ones, with its interval."""

    point: float
    ci_low: float
    ci_high: float


def difference_in_differences(
    counts: EventCounts,
    exposed: np.ndarray,
    *,
    resamples: int,
    seed: int,
    prior: BetaPrior | None = None,
) -> DiffInDiff | None:
    """Exposed minus unexposed mean change, with a stratified two-level bootstrap interval.

    Each group is resampled within itself (so every draw keeps both groups' sizes), at two
    levels: scenarios, then samples within each (:func:`two_level_change`). With a ``prior`` the
    earlier rates are shrunk toward the set's mean, so scenarios named because they had just
    failed most are not credited with their regression to the mean. None when one of the two
    groups is empty (the contrast does not exist).
    """
    observed = counts.observed()
    exposed_group, unexposed_group = exposed & observed, ~exposed & observed
    if not exposed_group.any() or not unexposed_group.any():
        return None
    before, after = counts.rates()
    if prior is not None:
        before = prior.shrink(counts.before_events, np.maximum(counts.before_n, 1))
    differences = after - before
    point = float(differences[exposed_group].mean() - differences[unexposed_group].mean())
    boot_e = two_level_change(
        counts.take(exposed_group), resamples=resamples, seed=seed, prior=prior
    )
    boot_u = two_level_change(
        counts.take(unexposed_group), resamples=resamples, seed=seed + 1, prior=prior
    )
    low, high = percentile_bounds((boot_e - boot_u)[None])[0]
    return DiffInDiff(point, float(low), float(high))


@dataclass(frozen=True)
class TwinGap:
    """How much more the public scenarios fell than their sealed twins (see :func:`twin_gap`).

    ``point`` is the mean over pairs of the public scenario's change beyond what a change in
    proportion to each member's rate predicts; below zero the public scenarios fell more than
    their unseen twins. ``tails`` are the exact stratified test's, the interval a two-level
    bootstrap.
    """

    point: float
    ci_low: float
    ci_high: float
    tails: Tails
    n_pairs: int
    public_change: float
    twin_change: float
    public_rates: tuple[float, float]
    twin_rates: tuple[float, float]

    def to_json(
        self, q_value: float | None = None, p_value: float | None = None
    ) -> dict[str, object]:
        """The gap as findings print it (``audit detect --json`` ``twin_gap``); ``p_value``
        and ``q_value`` are those of the test the finding's pass ran (default: one-sided)."""
        return {
            "gap": round(self.point, 6),
            "ci": [round(self.ci_low, 6), round(self.ci_high, 6)],
            "p_value": self.tails.less if p_value is None else p_value,
            "q_value": q_value,
            "n_pairs": self.n_pairs,
            "public_change": round(self.public_change, 6),
            "twin_change": round(self.twin_change, 6),
            "public_rate_before": round(self.public_rates[0], 6),
            "public_rate_after": round(self.public_rates[1], 6),
            "twin_rate_before": round(self.twin_rates[0], 6),
            "twin_rate_after": round(self.twin_rates[1], 6),
        }


def twin_gap(
    counts: EventCounts, pairs: np.ndarray, *, resamples: int, seed: int
) -> TwinGap | None:
    """Paired difference of changes between public scenarios and their sealed twins.

    ``pairs`` is a (k, 2) array of (public index, twin index) into the scenarios of ``counts``;
    pairs missing samples at either point are left out (None when none is left). A twin is the
    same covert-action opportunity on another surface, so a real change moves both members of a
    pair alike (awareness too: a twin is as much an evaluation), while a spec edit that teaches
    the public scenarios' details moves only them. This needs no text matching: a paraphrased
    patch that exposure cannot see still leaves the twins where they were.

    "Alike" means in proportion: an improvement that halves covert actions takes 20 points off
    a scenario at 40% and 10 off its twin at 20%. The gap is the mean over pairs of the public
    member's later rate minus what the pair's common factor (its later rates over its earlier
    ones, pooled) predicts for it, minus the same for the twin.

    Two questions, two tools, as for every change (module docstring):

    * the test asks whether, on THESE pairs, the public scenarios' share of their pair's covert
      actions fell. If both members change by one factor, the public member's share of the
      pair's events is the same before and after (exactly so for rare events), so each pair is a
      2x2 table (point x member) and the pairs are strata of the exact stratified test of
      :func:`stratified_tails`, conditional on every count's margins. A patch that teaches a few
      public scenarios moves their strata a lot; a mean over all pairs (tried first) dilutes
      them in the noise of the rest, and resampling pairs (as the interval does) asks whether
      other scenarios would show it too, which a patch aimed at a few never does;
    * the interval asks how large the gap is and how far it would generalise: a two-level
      bootstrap, pairs drawn with replacement (both members together), then each member's counts
      redrawn within it.

    Earlier rates are not shrunk here: a patch names the scenarios that had just failed most, so
    at the comparison where it lands their earlier share is high partly by chance; but shrinking
    toward the set's mean also moves every pair that sits away from it, and a patched scenario
    stays low afterwards, so every later comparison would show a gap that is not there. The
    regression-to-the-mean risk is measured instead (tests/bench/validate_attribution.py, null
    histories whose edit names the worst scenarios).
    """
    pairs = np.asarray(pairs, dtype=int).reshape(-1, 2)
    observed = counts.observed()
    pairs = pairs[observed[pairs[:, 0]] & observed[pairs[:, 1]]]
    if pairs.size == 0:
        return None
    public, twin = pairs[:, 0], pairs[:, 1]
    before, after = counts.rates()
    gap = float(_excess(before[public], before[twin], after[public], after[twin]))
    boot = _two_level_excess(counts, pairs, resamples=resamples, seed=seed)
    low, high = percentile_bounds(boot[None])[0]
    b_events = np.asarray(counts.before_events, dtype=np.int64)
    a_events = np.asarray(counts.after_events, dtype=np.int64)
    shares = EventCounts(
        before_events=b_events[public],
        before_n=b_events[public] + b_events[twin],
        after_events=a_events[public],
        after_n=a_events[public] + a_events[twin],
    )
    return TwinGap(
        point=gap,
        ci_low=float(low),
        ci_high=float(high),
        tails=stratified_tails(shares),
        n_pairs=len(pairs),
        public_change=float((after - before)[public].mean()),
        twin_change=float((after - before)[twin].mean()),
        public_rates=(float(before[public].mean()), float(after[public].mean())),
        twin_rates=(float(before[twin].mean()), float(after[twin].mean())),
    )


def _excess(
    public_before: np.ndarray,
    twin_before: np.ndarray,
    public_after: np.ndarray,
    twin_after: np.ndarray,
) -> np.ndarray:
    """Mean over pairs (last axis) of the public member's later rate minus what the pair's
    common proportional change predicts for it, minus the same for the twin; arrays may carry
    leading resample axes."""
    pooled_before = public_before + twin_before
    factor = np.where(
        pooled_before > 0, (public_after + twin_after) / np.maximum(pooled_before, 1e-12), 1.0
    )
    public_expected = np.clip(public_before * factor, 0.0, 1.0)
    twin_expected = np.clip(twin_before * factor, 0.0, 1.0)
    return ((public_after - public_expected) - (twin_after - twin_expected)).mean(axis=-1)


def _two_level_excess(
    counts: EventCounts, pairs: np.ndarray, *, resamples: int, seed: int
) -> np.ndarray:
    """The gap resampled: pairs drawn with replacement, then samples within each member."""
    rng = np.random.default_rng([seed, len(pairs), 3])
    drawn = pairs[bootstrap_indices(len(pairs), resamples, seed)]  # (resamples, k, 2)
    n0 = np.asarray(counts.before_n, dtype=np.int64)
    n1 = np.asarray(counts.after_n, dtype=np.int64)
    p0 = np.asarray(counts.before_events, dtype=float) / np.maximum(n0, 1)
    p1 = np.asarray(counts.after_events, dtype=float) / np.maximum(n1, 1)
    members = []
    for side in (0, 1):
        indices = drawn[:, :, side]
        members.append(
            (
                _redraw(n0, p0, indices, rng) / n0[indices],
                _redraw(n1, p1, indices, rng) / n1[indices],
            )
        )
    (public_before, public_after), (twin_before, twin_after) = members
    return _excess(public_before, twin_before, public_after, twin_after)


def benjamini_hochberg(p_values: list[float]) -> list[float]:
    """Benjamini-Hochberg adjusted p-values (q-values), in the order given."""
    m = len(p_values)
    if m == 0:
        return []
    p = np.asarray(p_values, dtype=float)
    order = np.argsort(p)
    ranked = p[order] * m / np.arange(1, m + 1)
    # Step-up: each q is the smallest adjusted value at its rank or above.
    adjusted = np.minimum.accumulate(ranked[::-1])[::-1]
    q = np.empty(m)
    q[order] = np.minimum(adjusted, 1.0)
    return [float(v) for v in q]
