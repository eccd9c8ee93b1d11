"""Paired changes between two points of the history, and false-discovery-rate control.

Two points (two spec revisions, or two model versions) are compared on the scenarios both have,
scenario by scenario: the change is the mean of per-scenario differences, its interval a cluster
bootstrap over those differences, and its p-value a sign-flip permutation test (under no change,
the sign of each scenario's difference is a coin toss). Many comparisons along a history are
corrected together with Benjamini-Hochberg.
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


def paired_change(
    before: np.ndarray, after: np.ndarray, *, resamples: int, seed: int
) -> PairedChange:
    """Compare per-scenario values of two points (aligned arrays, NaN pairs dropped)."""
    keep = ~(np.isnan(before) | np.isnan(after))
    differences = after[keep] - before[keep]
    n = differences.size
    if n == 0:
        return PairedChange(0.0, 0.0, 0.0, 1.0, differences)
    delta = float(differences.mean())
    if n == 1:
        return PairedChange(delta, delta, delta, 1.0, differences)
    boot = differences[bootstrap_indices(n, resamples, seed)].mean(axis=1)
    low, high = np.quantile(boot, [0.025, 0.975])
    return PairedChange(
        delta, float(low), float(high), sign_flip_p(differences, resamples, seed), differences
    )


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
