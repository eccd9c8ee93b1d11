"""The Wilson score interval, shared by the graders' quality figures and the analysis."""

from __future__ import annotations

import math

Z95 = 1.959963984540054
"""The standard normal quantile of a two-sided 95% interval."""


def wilson_bounds(successes: int, trials: int) -> tuple[float, float] | None:
    """95% Wilson score interval of ``successes / trials``; None when there are no trials."""
    if trials == 0:
        return None
    p = successes / trials
    denominator = 1 + Z95**2 / trials
    centre = (p + Z95**2 / (2 * trials)) / denominator
    half = Z95 * math.sqrt(p * (1 - p) / trials + Z95**2 / (4 * trials**2)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)
