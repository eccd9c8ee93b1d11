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
  1/2^k for k changed scenarios).
* How large is the change, and would it generalise to other scenarios like these? The interval
  of the mean per-scenario difference comes from a cluster bootstrap over scenarios.

Many comparisons along a history are corrected together with Benjamini-Hochberg.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from audit.analysis.estimates import bootstrap_indices


@dataclass(frozen=True)
class PairedChange:
    """Mean per-scenario change (after - before) with its interval and two-sided p-value."""

    delta: float
    ci_low: float
    ci_high: float
    p_value: float
    differences: np.ndarray


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


def paired_change(
    before: np.ndarray,
    after: np.ndarray,
    *,
    resamples: int,
    seed: int,
    counts: EventCounts | None = None,
) -> PairedChange:
    """Compare per-scenario values of two points (aligned arrays, NaN pairs dropped).

    With ``counts`` (the events behind the rates) the p-value is the exact stratified test of
    :func:`stratified_p`; without them (a score that is not a count of events) it is the
    scenario-level sign-flip test. The interval is always a cluster bootstrap over scenarios.
    """
    keep = ~(np.isnan(before) | np.isnan(after))
    differences = after[keep] - before[keep]
    n = differences.size
    if n == 0:
        return PairedChange(0.0, 0.0, 0.0, 1.0, differences)
    delta = float(differences.mean())
    p_value = (
        stratified_p(counts.take(keep))
        if counts is not None
        else (sign_flip_p(differences, resamples, seed) if n > 1 else 1.0)
    )
    if n == 1:
        return PairedChange(delta, delta, delta, p_value, differences)
    boot = differences[bootstrap_indices(n, resamples, seed)].mean(axis=1)
    low, high = np.quantile(boot, [0.025, 0.975])
    return PairedChange(delta, float(low), float(high), p_value, differences)


def stratified_p(counts: EventCounts) -> float:
    """Two-sided p-value of the exact stratified (conditional) test that no scenario changed.

    Conditional on each scenario's sample sizes and total events, the later point's event count
    is hypergeometric under the null; the sum over scenarios (the CMH statistic) has the
    convolution of those distributions. The two-sided p-value doubles the smaller tail (capped at
    one). Scenarios whose samples all agree (no events, or only events) carry no information and
    drop out, as they do from any permutation of labels within them.
    """
    n0 = np.asarray(counts.before_n, dtype=np.int64)
    n1 = np.asarray(counts.after_n, dtype=np.int64)
    events = np.asarray(counts.before_events, dtype=np.int64) + counts.after_events
    total = n0 + n1
    informative = (n0 > 0) & (n1 > 0) & (events > 0) & (events < total)
    if not informative.any():
        return 1.0
    observed = int(np.asarray(counts.after_events, dtype=np.int64)[informative].sum())
    distribution, offset = _null_distribution(n0[informative], n1[informative], events[informative])
    index = observed - offset
    lower = float(distribution[: index + 1].sum())
    upper = float(distribution[index:].sum())
    return float(min(1.0, 2.0 * min(lower, upper)))


def _null_distribution(
    n0: np.ndarray, n1: np.ndarray, events: np.ndarray
) -> tuple[np.ndarray, int]:
    """Null distribution of the summed later-point events and the value of its first entry."""
    # The table's size is rounded up to a power of two so one cached table serves many tests.
    log_factorial = _log_factorials(1 << max(6, int((n0 + n1).max()).bit_length()))
    low = np.maximum(0, n1 - (n0 + n1 - events))
    high = np.minimum(n1, events)
    distribution = np.ones(1)
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
        pmf /= pmf.sum()
        for _ in range(int(times)):
            distribution = np.convolve(distribution, pmf)
    return distribution, int(low.sum())


@lru_cache(maxsize=8)
def _log_factorials(up_to: int) -> np.ndarray:
    """log(k!) for k = 0..up_to."""
    table = np.concatenate([[0.0], np.cumsum(np.log(np.arange(1, up_to + 1)))])
    table.setflags(write=False)
    return table


def sign_flip_p(differences: np.ndarray, resamples: int, seed: int) -> float:
    """Two-sided p-value of the paired sign-flip permutation test on the mean difference."""
    observed = abs(float(differences.mean()))
    if observed == 0.0:
        return 1.0
    null = np.abs(sign_matrix(differences.size, resamples, seed) @ differences) / differences.size
    # The tolerance keeps ties (null equal to the observed value) counted despite rounding.
    extreme = int(np.count_nonzero(null >= observed - 1e-12))
    return (1 + extreme) / (1 + resamples)


def difference_in_differences(
    differences: np.ndarray, exposed: np.ndarray, *, resamples: int, seed: int
) -> tuple[float, float, float] | None:
    """Mean change of exposed minus unexposed scenarios, with a stratified bootstrap interval.

    None when one of the two groups is empty (the contrast does not exist).
    """
    exposed_d, unexposed_d = differences[exposed], differences[~exposed]
    if exposed_d.size == 0 or unexposed_d.size == 0:
        return None
    point = float(exposed_d.mean() - unexposed_d.mean())
    # Each group is resampled within itself, so every draw keeps both groups' sizes.
    boot_e = exposed_d[bootstrap_indices(exposed_d.size, resamples, seed)].mean(axis=1)
    boot_u = unexposed_d[bootstrap_indices(unexposed_d.size, resamples, seed + 1)].mean(axis=1)
    low, high = np.quantile(boot_e - boot_u, [0.025, 0.975])
    return point, float(low), float(high)


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
