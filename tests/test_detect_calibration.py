"""Calibration of the intervals on simulated data with a known truth.

Scenarios are drawn from a population (per-scenario covert propensities from a Beta law), samples
from each scenario's binomial; the intervals claim 95% coverage of the population's mean rate
(and mean change). 200 replicate datasets per check: a coverage outside [0.90, 0.99] is a broken
interval, not bad luck (the binomial standard error of the coverage is about 0.015).
"""

from __future__ import annotations

import numpy as np
import pytest

from audit.analysis.compare import (
    EventCounts,
    fit_prior,
    paired_change,
    predictive_tails,
    stratified_tails,
)
from audit.analysis.estimates import cluster_bootstrap, rate_interval

REPLICATES = 200
SCENARIOS, EPOCHS, RESAMPLES = 30, 10, 1000
# Beta(2, 6): mean 0.25, the between-scenario spread of a real covert-action set.
ALPHA, BETA = 2.0, 6.0
TRUE_MEAN = ALPHA / (ALPHA + BETA)


def _dataset(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    propensity = rng.beta(ALPHA, BETA, SCENARIOS)
    return rng.binomial(EPOCHS, propensity), propensity


def test_the_rate_interval_covers_the_population_mean_about_95_percent_of_the_time() -> None:
    rng = np.random.default_rng(11)
    trials = np.full(SCENARIOS, EPOCHS)
    bootstrap_hits = union_hits = 0
    for replicate in range(REPLICATES):
        events, _ = _dataset(rng)
        boot = cluster_bootstrap(events / EPOCHS, resamples=RESAMPLES, seed=replicate)
        union = rate_interval(events, trials, resamples=RESAMPLES, seed=replicate)
        bootstrap_hits += boot.low <= TRUE_MEAN <= boot.high
        union_hits += union.low <= TRUE_MEAN <= union.high
    assert 0.90 <= bootstrap_hits / REPLICATES <= 0.99
    assert 0.90 <= union_hits / REPLICATES <= 0.99


def test_the_change_interval_covers_the_population_mean_change() -> None:
    # Every scenario's propensity falls by 40%: the population mean change is -0.4 x 0.25.
    rng = np.random.default_rng(12)
    trials = np.full(SCENARIOS, EPOCHS)
    hits = 0
    for replicate in range(REPLICATES):
        before, propensity = _dataset(rng)
        after = rng.binomial(EPOCHS, 0.6 * propensity)
        change = paired_change(
            before / EPOCHS,
            after / EPOCHS,
            resamples=RESAMPLES,
            seed=replicate,
            counts=EventCounts(before, trials, after, trials),
        )
        hits += change.ci_low <= -0.4 * TRUE_MEAN <= change.ci_high
    assert 0.90 <= hits / REPLICATES <= 0.99


def test_the_bootstrap_resamples_scenarios_not_samples() -> None:
    # Same samples, same pooled rate (204 covert of 680), different spread between scenarios.
    trials = np.full(34, 20)
    alike = np.full(34, 6)
    apart = np.array([0, 12] * 17)
    narrow = cluster_bootstrap(alike / 20, resamples=2000, seed=1)
    wide = cluster_bootstrap(apart / 20, resamples=2000, seed=1)
    # Resampling the 680 samples as if independent would give both about +-3.4 points.
    assert narrow.high - narrow.low < 1e-9
    assert wide.high - wide.low > 0.15
    # The reported interval keeps the spread between scenarios and never drops below the
    # sampling noise of the pooled counts.
    alike_rate = rate_interval(alike, trials, resamples=2000, seed=1)
    apart_rate = rate_interval(apart, trials, resamples=2000, seed=1)
    assert alike_rate.high - alike_rate.low == pytest.approx(0.069, abs=0.003)
    assert apart_rate.high - apart_rate.low > 2 * (alike_rate.high - alike_rate.low)


def test_the_exposed_scenario_test_holds_its_level_when_the_worst_scenarios_are_named() -> None:
    # Nothing changes between the two points, but the spec edit names the three scenarios that
    # failed most at the first: a patch written in answer to failures. Conditioning on their
    # (selected, too high) earlier counts, the exact test sees them "fall"; predicting from
    # rates shrunk toward the set's mean does not.
    rng = np.random.default_rng(13)
    trials = np.full(SCENARIOS, EPOCHS)
    conditional = predictive = 0
    for _ in range(REPLICATES):
        before, propensity = _dataset(rng)
        after = rng.binomial(EPOCHS, propensity)
        worst = np.argsort(-before, kind="stable")[:3]
        counts = EventCounts(before, trials, after, trials).take(worst)
        conditional += stratified_tails(counts).less < 0.05
        prior = fit_prior(before, trials)
        assert prior is not None  # 34 scenarios with spread: the prior must be estimable
        predictive += predictive_tails(counts, prior).less < 0.05
    assert conditional / REPLICATES > 0.15
    assert predictive / REPLICATES <= 0.08
