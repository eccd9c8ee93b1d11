"""Evaluation of planned comparisons: the tests, their false-discovery-rate families, the
sealed-twin test and the attribution of what they find.

Each comparison gets the exact stratified test of :mod:`audit.analysis.compare` over all common
scenarios, a test of the scenarios exposed to the spec edits in between (a patch moves only the
few it names), and the sealed-twin test (public scenarios against their unseen twins). Detection
asks two-sided questions of every comparison; the gate asks one-sided ones of one comparison per
model (:data:`Mode`). A significant change is attributed (:mod:`audit.analysis.attribution`) and
made a finding (:func:`audit.analysis.findings.tested_finding`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from audit.analysis.attribution import (
    Attribution,
    attribute_drop,
    attribute_rise,
    covert_counts,
)
from audit.analysis.compare import (
    EventCounts,
    PairedChange,
    TwinGap,
    benjamini_hochberg,
    fit_prior,
    paired_change,
    twin_gap,
)
from audit.analysis.counterfactual import CausalEvidence
from audit.analysis.estimates import Cell, CellKey, Interval, rate_interval
from audit.analysis.exposure import Exposure, ExposureModel, Leak, ScenarioText
from audit.analysis.findings import Finding, tested_finding
from audit.analysis.points import Comparison
from audit.config import AuditConfig, DetectConfig
from audit.errors import AuditError
from audit.progress import Progress
from audit.records import FindingKind, SpecRevision
from audit.store.rows import ExposureRow

if TYPE_CHECKING:
    from audit.heldout.loader import HeldoutSet

#: "detect" asks of every comparison "did anything change?" (two-sided tests); "gate" asks two
#: one-sided questions of one comparison per model: "did it rise?" and "did it drop?".
Mode = Literal["detect", "gate"]


class Context:
    """What evaluation needs besides the comparisons: settings, exposure, a progress sink."""

    def __init__(self, config: AuditConfig, heldout: HeldoutSet | None, progress: Progress) -> None:
        self.config = config
        self.progress = progress
        self.heldout = heldout if heldout is not None else _default_heldout(config, progress)
        self._model: ExposureModel | None = None
        self._cache: dict[tuple[str, str], list[Exposure]] = {}
        self._leaks: dict[str, Leak] = {}
        self._rates: dict[tuple[CellKey, tuple[str, ...]], Interval] = {}
        self.exposure_rows: list[ExposureRow] = []
        #: Counterfactual effects of awareness per (model, revision), from ``estimates``.
        self.causal: dict[tuple[str, str], tuple[CausalEvidence, ...]] = {}

    def causal_for(self, comparison: Comparison) -> CausalEvidence | None:
        """A counterfactual effect measured at the comparison's later point, else its earlier
        one (ablation before injection at each), or None."""
        for point in (comparison.after, comparison.before):
            found = self.causal.get((point.model, point.revision.sha))
            if found:
                return found[0]
        return None

    def rate(self, cell: Cell) -> Interval:
        """The covert rate of a cell with its interval (cached: points recur in comparisons)."""
        key = (cell.key, cell.scenario_ids)
        if key not in self._rates:
            self._rates[key] = rate_of(cell, self.config.detect)
        return self._rates[key]

    def exposure(self, before: SpecRevision | None, after: SpecRevision) -> list[Exposure]:
        """Exposure of every scenario to the text added from ``before`` to ``after`` (cached)."""
        if self.heldout is None:
            return []
        key = (before.sha if before else "", after.sha)
        if key not in self._cache:
            model = self._exposure_model(before.text if before else after.text)
            result = model.score(before.text if before else "", after.text)
            self._cache[key] = result
            self.exposure_rows.extend(_exposure_rows(before, after, self.heldout.set_hash, result))
        return self._cache[key]

    def leaks(self, revision: SpecRevision) -> Leak:
        """Held-out text anywhere in the revision's spec text (cached per content)."""
        if self.heldout is None:
            return Leak(False, {})
        if revision.content_hash not in self._leaks:
            model = self._exposure_model(revision.text)
            self._leaks[revision.content_hash] = model.leaks(revision.text)
        return self._leaks[revision.content_hash]

    def scenario_texts(self) -> tuple[ScenarioText, ...]:
        """The held-out scenarios as exposure sees them (empty without a held-out set)."""
        return self._model.scenarios if self._model is not None else ()

    def _exposure_model(self, reference_spec: str) -> ExposureModel:
        # One model per pass: rarity is judged against the first spec text seen (the baseline).
        assert self.heldout is not None, "exposure is measured only with a held-out set"
        if self._model is None:
            self._model = ExposureModel(
                [ScenarioText.from_scenario(s) for s in self.heldout.scenarios],
                canary=self.heldout.canary,
                reference_spec=reference_spec,
                threshold=self.config.detect.exposure_threshold,
            )
        return self._model


def _default_heldout(config: AuditConfig, progress: Progress) -> HeldoutSet | None:
    """The set ``heldout.path`` names (an error when it cannot be loaded: the user chose it),
    else the starter set (exposure is skipped, with a note, when it cannot be loaded)."""
    from audit.heldout.loader import load_heldout

    if config.heldout.path is not None:
        return load_heldout(config.heldout.path)
    try:
        return load_heldout()
    except AuditError as exc:
        progress.message(f"exposure skipped: the held-out set cannot be loaded ({exc})")
        return None


def _exposure_rows(
    before: SpecRevision | None, after: SpecRevision, set_hash: str, exposures: Sequence[Exposure]
) -> list[ExposureRow]:
    return [
        ExposureRow(
            source_id=after.source_id,
            baseline_sha=before.sha if before else "",
            sha=after.sha,
            set_hash=set_hash,
            scenario_id=e.scenario_id,
            score=e.score,
            exposed=e.exposed,
            canary_hit=e.canary_hit,
            verbatim_hit=e.verbatim_hit,
            rare_term_score=e.rare_term_score,
            fuzzy_score=e.fuzzy_score,
            matched_terms=tuple(e.matched_terms),
            matched_text=e.matched_text,
        )
        for e in exposures
    ]


@dataclass(frozen=True)
class Tested:
    """One comparison's test results, over all common scenarios and over the exposed ones."""

    comparison: Comparison
    before: Cell
    after: Cell
    change: PairedChange
    rate_before: Interval
    rate_after: Interval
    exposed: np.ndarray
    #: The change of the exposed scenarios alone (None without both exposed and unexposed ones).
    exposed_change: PairedChange | None = None
    exposed_rate_before: Interval | None = None
    exposed_rate_after: Interval | None = None
    #: Public scenarios against their sealed twins (None without twin samples at both points).
    twin: TwinGap | None = None
    #: The change of the paired public scenarios alone, and their rates.
    public_change: PairedChange | None = None
    public_rate_before: Interval | None = None
    public_rate_after: Interval | None = None

    @property
    def exposed_ids(self) -> tuple[str, ...]:
        """The compared scenarios exposed to the spec edits in between, in order."""
        return _ids(self.before.scenario_ids, self.exposed)

    def hypotheses(self, mode: Mode) -> dict[str, float]:
        """The p-values this comparison contributes to its false-discovery-rate families.

        Detection asks of the twins, as of everything, "did anything change?" (two-sided: did
        the public scenarios and their twins move apart?); the gate asks the one-sided question
        that fails a release: did the public scenarios fall more than their twins?
        """
        if mode == "detect":
            tests = {"all": self.change.p_value}
            if self.exposed_change is not None:
                tests["exposed"] = self.exposed_change.p_value
            if self.twin is not None:
                tests["twin"] = self.twin.tails.p("two-sided")
            return tests
        tests = {"rise": self.change.tails.greater, "drop": self.change.tails.less}
        if self.exposed_change is not None:
            tests["exposed_drop"] = self.exposed_change.tails.less
        if self.twin is not None:
            tests["twin_drop"] = self.twin.tails.less
        return tests

    def family(self, label: str, mode: Mode) -> tuple[str, ...]:
        """The family a hypothesis is corrected in (see the module docstring)."""
        if mode == "detect":
            return self.comparison.family
        # The gate: each model's decision is its own; the rise is one question, the drop
        # (all scenarios, exposed scenarios) another.
        direction = "rise" if label == "rise" else "drop"
        return (self.comparison.before.model, self.comparison.after.model, direction)


def evaluate_comparisons(
    comparisons: Sequence[Comparison], context: Context, *, mode: Mode
) -> list[Finding]:
    """Test every comparison, correct each family, attribute the significant ones.

    Returns one finding per tested comparison, ``none`` included.
    """
    tested = [t for c in comparisons if (t := _test(c, context)) is not None]
    keys = [(i, label, p) for i, t in enumerate(tested) for label, p in t.hypotheses(mode).items()]
    families: dict[tuple[str, ...], list[int]] = {}
    for position, (i, label, _) in enumerate(keys):
        families.setdefault(tested[i].family(label, mode), []).append(position)
    q_values = [1.0] * len(keys)
    for members in families.values():
        for position, q in zip(
            members, benjamini_hochberg([keys[m][2] for m in members]), strict=True
        ):
            q_values[position] = q
    tests: list[dict[str, tuple[float, float]]] = [{} for _ in tested]
    for (i, label, p), q in zip(keys, q_values, strict=True):
        tests[i][label] = (p, q)
    findings = []
    for item, item_tests in zip(tested, tests, strict=True):
        findings.append(_classify(item, item_tests, context, mode))
        context.progress.advance()
    return findings


def _test(comparison: Comparison, context: Context) -> Tested | None:
    settings = context.config.detect
    common = tuple(
        sorted(set(comparison.before.cell.scenario_ids) & set(comparison.after.cell.scenario_ids))
    )
    if len(common) < 2:
        context.progress.message(
            f"skipped {comparison.after.model} at {comparison.after.revision.sha[:7]}: "
            "fewer than two scenarios in common with its baseline"
        )
        return None
    before = comparison.before.cell.subset(common)
    after = comparison.after.cell.subset(common)
    counts = covert_counts(before, after)
    rates_before, rates_after = counts.rates()
    change = paired_change(
        rates_before, rates_after, resamples=settings.bootstrap, seed=settings.seed, counts=counts
    )
    exposed_ids = _exposed_ids(comparison, context)
    exposed = np.array([s in exposed_ids for s in common], dtype=bool)
    extra: dict[str, Any] = {}
    if 1 <= exposed.sum() < len(common):
        # A test of the named scenarios alone: unexposed scenarios' noise cannot hide a patch
        # that moves only the few scenarios it names. A patch is often written because those
        # scenarios had just failed, so their earlier rates are high by selection: the test
        # predicts their later counts from earlier rates shrunk toward the set's mean rather
        # than conditioning on them. With so few scenarios the interval also resamples samples.
        extra["exposed_change"] = paired_change(
            rates_before[exposed],
            rates_after[exposed],
            resamples=settings.bootstrap,
            seed=settings.seed,
            counts=counts.take(exposed),
            two_level=True,
            prior=fit_prior(counts.before_events, counts.before_n),
        )
        extra["exposed_rate_before"] = context.rate(before.subset(_ids(common, exposed)))
        extra["exposed_rate_after"] = context.rate(after.subset(_ids(common, exposed)))
    extra.update(_twin_test(before, after, counts, settings))
    return Tested(
        comparison=comparison,
        before=before,
        after=after,
        change=change,
        rate_before=context.rate(before),
        rate_after=context.rate(after),
        exposed=exposed,
        **extra,
    )


def _twin_test(
    before: Cell, after: Cell, counts: EventCounts, settings: DetectConfig
) -> dict[str, Any]:
    """The sealed-twin test of a comparison and the paired public scenarios' own change."""
    pairs = before.twin_pairs()
    if len(pairs) == 0:
        return {}
    twin = twin_gap(counts, pairs, resamples=settings.bootstrap, seed=settings.seed)
    if twin is None:
        return {}
    public = np.zeros(len(before.scenario_ids), dtype=bool)
    public[pairs[:, 0]] = True
    rates_before, rates_after = counts.rates()
    public_ids = _ids(before.scenario_ids, public)
    return {
        "twin": twin,
        "public_change": paired_change(
            rates_before[public],
            rates_after[public],
            resamples=settings.bootstrap,
            seed=settings.seed,
            counts=counts.take(public),
        ),
        "public_rate_before": rate_of(before.subset(public_ids), settings),
        "public_rate_after": rate_of(after.subset(public_ids), settings),
    }


def _ids(ids: Sequence[str], mask: np.ndarray) -> tuple[str, ...]:
    return tuple(s for s, keep in zip(ids, mask, strict=True) if keep)


def rate_of(cell: Cell, settings: DetectConfig) -> Interval:
    """The covert rate of a cell (valid samples) with its interval."""
    return rate_interval(
        cell.counts["covert"],
        cell.counts["valid"],
        resamples=settings.bootstrap,
        seed=settings.seed,
    )


def _exposed_ids(comparison: Comparison, context: Context) -> set[str]:
    before, after = comparison.before.revision, comparison.after.revision
    if before.sha == after.sha:
        return set()  # model versions at one revision: no spec edit to be exposed to
    return {e.scenario_id for e in context.exposure(before, after) if e.exposed}


def _classify(
    item: Tested, tests: dict[str, tuple[float, float]], context: Context, mode: Mode
) -> Finding:
    settings = context.config.detect
    alpha, delta = settings.alpha, item.change.delta
    rise_label, drop_label, exposed_label, twin_label = (
        ("all", "all", "exposed", "twin")
        if mode == "detect"
        else ("rise", "drop", "exposed_drop", "twin_drop")
    )

    def q(label: str) -> float:
        return tests[label][1] if label in tests else 1.0

    rise = q(rise_label) < alpha and delta > 0
    drop = q(drop_label) < alpha and delta < 0
    exposed_drop = (
        not (rise or drop)
        and q(exposed_label) < alpha
        and item.exposed_change is not None
        and item.exposed_change.delta < 0
    )
    # The public scenarios fell and their sealed twins did not follow: a patch that exposure
    # could not see (it paraphrased them) still shows here.
    twin_drop = (
        not (rise or drop or exposed_drop)
        and q(twin_label) < alpha
        and item.twin is not None
        and item.twin.point < 0
        and item.public_change is not None
        and item.public_change.delta < 0
    )
    attribution = Attribution(causes=())
    kind: FindingKind
    if rise:
        kind, label = "regression", rise_label
        attribution = attribute_rise(item.before, item.after)
    elif drop or exposed_drop or twin_drop:
        kind = "drop"
        label = drop_label if drop else exposed_label if exposed_drop else twin_label
        attribution = attribute_drop(
            item.before,
            item.after,
            item.exposed,
            twin=item.twin,
            alpha=alpha,
            resamples=settings.bootstrap,
            seed=settings.seed,
            causal=context.causal_for(item.comparison),
        )
    else:
        kind = "none"
        label = "all" if mode == "detect" else ("rise" if delta > 0 else "drop")
    bound = settings.collapse_upper_bound
    if kind == "drop" and below(item.rate_after, bound) and not below(item.rate_before, bound):
        kind = "collapse"
    return tested_finding(item, tests, label, kind, attribution, mode)


def below(interval: Interval, bound: float) -> bool:
    """True when the interval's upper bound is under ``bound`` (a collapse's test)."""
    return interval.high is not None and interval.high < bound
