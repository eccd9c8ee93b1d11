"""Detection: every change along the history of every model, tested, attributed and stored.

One pass reads per-scenario counts from DuckDB (aggregated in SQL), writes the estimates of every
(model, revision), compares each model's consecutive revisions, every revision against a
baseline, and consecutive versions of one model line at the same revision, corrects p-values for
many comparisons (Benjamini-Hochberg), attributes every significant change, and replaces the
previous pass's findings for the same models and spec source.

Each comparison gets the exact stratified test of :mod:`audit.analysis.compare` (conditional on
the fixed held-out scenarios: "did any scenario change on this set?"), once over all common
scenarios and once over the scenarios exposed to the spec edits in between, since a patch moves
only the few scenarios it names. Rate and change intervals are cluster bootstraps over scenarios
(how far the result would generalise to other scenarios like these), a different question from
the test's.

The false-discovery-rate family is fixed by what a finding is about, never by what else a pass
happened to analyse: all tests of one model along one spec source's history (its consecutive and
baseline comparisons, both tests of each), and separately all of its comparisons with the
previous version of its line. So ``--model M`` gives M the same q-values as a pass over every
model.

Besides changes, a pass reports per model a ``collapse`` where the rate's upper bound first falls
under the configured bound (1%), whether or not a significant drop led there, and a ``none``
finding (latest point against the baseline) when nothing else was found, so an empty result is
never ambiguous. Leaks of the held-out set into the spec (the canary, copied prompt sentences,
anywhere in a revision's text) are findings of their own at the revision that introduced them,
whatever the scores do.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

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
from audit.analysis.counterfactual import CausalEvidence, load_causal_evidence
from audit.analysis.estimates import (
    Cell,
    CellKey,
    Interval,
    cell_estimates,
    load_cells,
    rate_interval,
)
from audit.analysis.exposure import Exposure, ExposureModel, Leak, ScenarioText
from audit.analysis.usage import Usage, usage_by_point, usage_estimate_rows
from audit.config import AuditConfig
from audit.errors import AuditError
from audit.progress import NullProgress, Progress
from audit.spec_history import resolve_revision
from audit.store import Store

_VERSIONED_NAME = re.compile(r"^(?P<line>.+?)[-_]v(?P<version>\d+(?:\.\d+)*)$")


@dataclass(frozen=True)
class Revision:
    """A spec revision as analysis needs it."""

    source_id: str
    sha: str
    seq: int
    content_hash: str
    content: str


@dataclass(frozen=True)
class Point:
    """One model at one spec revision, with the counts of its samples there."""

    model: str
    revision: Revision
    cell: Cell


@dataclass(frozen=True)
class Comparison:
    """Two points to compare; ``kind`` is consecutive, baseline, model_version or gate."""

    kind: str
    before: Point
    after: Point

    @property
    def family(self) -> tuple[str, str, str]:
        """The false-discovery-rate family: (source, model, history or model_version)."""
        group = "model_version" if self.kind == "model_version" else "history"
        return (self.after.revision.source_id, self.after.model, group)


@dataclass(frozen=True)
class Finding:
    """A detected change (or a checked comparison, kind ``none``) with its attribution.

    ``comparison`` is consecutive, baseline, model_version or gate for a tested pair of points,
    and ``point`` for a finding about one point alone (a collapse not reached through a
    significant drop; a model with a single point). ``tested_on`` says which scenarios the
    numbers describe: "all scenarios", or "exposed scenarios" when the test of the scenarios the
    spec edit names found the change (then rates, change, interval, p and q are all theirs, and
    the evidence keeps the all-scenario figures).
    """

    model: str
    baseline_model: str
    source_id: str
    baseline_rev: str
    rev: str
    comparison: str
    kind: str
    baseline_rate: float | None
    rate: float | None
    ci_low: float | None
    ci_high: float | None
    delta: float | None
    delta_ci_low: float | None
    delta_ci_high: float | None
    p_value: float | None
    q_value: float | None
    primary_cause: str | None
    causes: tuple[dict[str, Any], ...]
    exposed_scenarios: tuple[str, ...]
    evidence: dict[str, Any] = field(default_factory=dict)
    summary: str = ""
    tested_on: str = "all scenarios"
    #: Public scenarios' change minus their sealed twins' (``TwinGap.to_json``); None without
    #: twin samples at both points.
    twin_gap: dict[str, Any] | None = None

    @property
    def finding_id(self) -> str:
        """Stable id: the same comparison in a later pass gets the same id."""
        key = "|".join(
            (
                self.model,
                self.baseline_model,
                self.source_id,
                self.baseline_rev,
                self.rev,
                self.comparison,
                self.kind,
            )
        )
        return hashlib.sha256(key.encode()).hexdigest()[:16]

    def share(self, cause: str) -> float:
        """Share of the change attributed to ``cause`` (0 when it is not among the causes)."""
        return next((float(c["share"]) for c in self.causes if c["cause"] == cause), 0.0)

    def to_json(self) -> dict[str, Any]:
        """The finding as printed by ``audit detect --json`` (keys fixed by issue 5)."""
        return {
            "finding_id": self.finding_id,
            "model": self.model,
            "baseline_model": self.baseline_model,
            "source_id": self.source_id,
            "comparison": self.comparison,
            "baseline_rev": self.baseline_rev,
            "rev": self.rev,
            "kind": self.kind,
            "baseline_rate": self.baseline_rate,
            "rate": self.rate,
            "ci_low": self.ci_low,
            "ci_high": self.ci_high,
            "delta": self.delta,
            "delta_ci_low": self.delta_ci_low,
            "delta_ci_high": self.delta_ci_high,
            "p_value": self.p_value,
            "q_value": self.q_value,
            "primary_cause": self.primary_cause,
            "causes": list(self.causes),
            "exposed_scenarios": list(self.exposed_scenarios),
            "tested_on": self.tested_on,
            "twin_gap": self.twin_gap,
            "summary": self.summary,
        }

    def row(self) -> dict[str, Any]:
        """The finding as a ``findings`` row."""
        data = self.to_json()
        del data["tested_on"]  # kept in the evidence column
        gap = data.pop("twin_gap") or {}
        data["twin_gap"] = gap.get("gap")
        data["twin_gap_ci_low"], data["twin_gap_ci_high"] = gap.get("ci") or (None, None)
        data["causes"] = json.dumps(list(self.causes))
        data["evidence"] = json.dumps(self.evidence)
        return data


# -- public entry point ------------------------------------------------------------------------


def detect(
    store: Store,
    config: AuditConfig,
    *,
    model: str | None = None,
    baseline: str | None = None,
    source_id: str | None = None,
    set_hash: str | None = None,
    heldout: Any = None,
    progress: Progress | None = None,
) -> list[Finding]:
    """Detect, attribute and store every change of the history; return the findings.

    ``baseline`` is a revision reference (sha prefix, tag, index; default: the first revision);
    ``heldout`` the held-out set whose scenarios exposure is measured against (default: the set
    ``heldout.path`` of the config names, whose samples alone are then analysed, else the
    starter set). ``set_hash`` analyses the samples of that set only. Comparisons without a
    finding are left out, except one ``none`` finding per model (its latest point against the
    baseline) when nothing was found for it.
    """
    progress = progress or NullProgress()
    models = [model] if model else None
    context = Context(config, heldout, progress)
    if set_hash is None and config.heldout.path is not None and context.heldout is not None:
        set_hash = context.heldout.set_hash  # the configured set's samples, and only those
    cells = load_cells(store, models=models, set_hash=set_hash)
    if not cells:
        what = f"model {model!r}" if model else "any model"
        of_set = f" on held-out set {_set_label(store, set_hash)}" if set_hash else ""
        raise AuditError(
            f"no samples stored for {what}{of_set}: run `audit run` (or the demo) first"
        )
    _refuse_mixed_sets(cells)
    sources = _load_revisions(store, source_id)
    context.causal = load_causal_evidence(store, models)
    sample_set = next(iter(cells)).set_hash
    if context.heldout is not None and context.heldout.set_hash != sample_set:
        progress.message(
            f"exposure is measured against held-out set {context.heldout.set_hash[:19]}, but the "
            f"samples were made on {sample_set[:19]}: scenarios missing from it count as unexposed"
        )
    findings: list[Finding] = []
    estimate_rows: list[dict[str, Any]] = []
    analysed_models = sorted({k.model for k in cells})
    usage = usage_by_point(store, config)
    for source, revisions in sources.items():
        base = _resolve(store, baseline, source, revisions) if baseline else None
        points = _points(cells, revisions)
        estimate_rows.extend(_estimate_rows(points, config))
        estimate_rows.extend(_usage_rows(points, usage))
        comparisons = _history_comparisons(points, config, base)
        progress.start(len(comparisons), f"comparisons ({source})")
        checked = evaluate_comparisons(comparisons, context, mode="detect")
        progress.finish()
        findings.extend(_model_findings(points, checked, base, context))
        findings.extend(_leak_findings(revisions, context))
    _store_results(store, sorted(sources), analysed_models, estimate_rows, findings, context)
    return findings


# -- loading -----------------------------------------------------------------------------------


def _refuse_mixed_sets(cells: dict[CellKey, Cell]) -> None:
    hashes = sorted({k.set_hash for k in cells})
    if len(hashes) > 1:
        raise AuditError(
            f"samples were made on {len(hashes)} versions of the held-out set (or other sets) "
            f"({', '.join(h[:19] for h in hashes)}): comparing across them is refused; "
            "pass --heldout DIR (or --set-hash) to analyse one"
        )


def _set_label(store: Store, set_hash: str) -> str:
    """``name version (hash prefix)`` of a registered set, else its hash prefix."""
    rows = store.query("SELECT name, version FROM heldout_sets WHERE set_hash = ?", [set_hash])
    if not rows:
        return set_hash[:19]
    return f"{rows[0]['name'] or 'unnamed'} {rows[0]['version']} ({set_hash[:19]})"


def _load_revisions(store: Store, source_id: str | None) -> dict[str, list[Revision]]:
    rows = store.query(
        "SELECT source_id, sha, seq, content_hash, content FROM spec_revisions "
        "WHERE ? IS NULL OR source_id = ? ORDER BY source_id, seq",
        [source_id, source_id],
    )
    if not rows:
        where = f"source {source_id!r}" if source_id else "any spec source"
        raise AuditError(f"no spec revisions stored for {where}: run `audit specs sync` first")
    sources: dict[str, list[Revision]] = {}
    for row in rows:
        sources.setdefault(row["source_id"], []).append(Revision(**row))
    return sources


def resolve_ref(store: Store, ref: str, source_id: str, revisions: Sequence[Revision]) -> Revision:
    """A revision reference (sha prefix, tag, index) resolved to one of ``revisions``."""
    return _resolve(store, ref, source_id, revisions)


def _resolve(store: Store, ref: str, source_id: str, revisions: Sequence[Revision]) -> Revision:
    found = resolve_revision(store, ref, source_id=source_id)
    for revision in revisions:
        if revision.sha == found.sha:
            return revision
    raise AuditError(f"revision {ref!r} is not among the stored revisions of {source_id!r}")


def _points(cells: dict[CellKey, Cell], revisions: Sequence[Revision]) -> dict[str, list[Point]]:
    """For each model, its points along the history in revision order."""
    by_hash: dict[str, list[Cell]] = {}
    for key, cell in cells.items():
        by_hash.setdefault(key.content_hash, []).append(cell)
    points: dict[str, list[Point]] = {}
    for revision in revisions:
        for cell in by_hash.get(revision.content_hash, []):
            points.setdefault(cell.key.model, []).append(Point(cell.key.model, revision, cell))
    return points


def _estimate_rows(points: dict[str, list[Point]], config: AuditConfig) -> list[dict[str, Any]]:
    rows = []
    for model, model_points in points.items():
        for point in model_points:
            for row in cell_estimates(
                point.cell, resamples=config.detect.bootstrap, seed=config.detect.seed
            ):
                row.update(model=model, source_id=point.revision.source_id, sha=point.revision.sha)
                rows.append(row)
    return rows


def _usage_rows(
    points: dict[str, list[Point]], usage: dict[tuple[str, str, str], Usage]
) -> list[dict[str, Any]]:
    """Token totals and cost of every point, as estimates rows beside its rates."""
    rows = []
    for model, model_points in points.items():
        for point in model_points:
            key = point.cell.key
            totals = usage.get((key.model, key.content_hash, key.set_hash))
            if totals is None:
                continue
            for row in usage_estimate_rows(totals):
                row.update(model=model, source_id=point.revision.source_id, sha=point.revision.sha)
                rows.append(row)
    return rows


# -- comparisons -------------------------------------------------------------------------------


def _history_comparisons(
    points: dict[str, list[Point]], config: AuditConfig, baseline: Revision | None
) -> list[Comparison]:
    comparisons: list[Comparison] = []
    for model_points in points.values():
        # Revisions with equal text share samples: comparing them would compare a cell to itself.
        distinct = _distinct(model_points)
        consecutive = [Comparison("consecutive", b, a) for b, a in itertools.pairwise(distinct)]
        comparisons.extend(consecutive)
        anchor = _anchor(distinct, baseline)
        if anchor is None:
            continue
        # Only this model's own consecutive pairs: every model gets its baseline comparisons.
        consecutive_pairs = {(c.before.revision.sha, c.after.revision.sha) for c in consecutive}
        for point in distinct:
            if point.revision.seq <= anchor.revision.seq or point.cell is anchor.cell:
                continue
            if (anchor.revision.sha, point.revision.sha) not in consecutive_pairs:
                comparisons.append(Comparison("baseline", anchor, point))
    comparisons.extend(_version_comparisons(points, config))
    return comparisons


def _anchor(points: Sequence[Point], baseline: Revision | None) -> Point | None:
    if not points:
        return None
    if baseline is None:
        return points[0]
    return next((p for p in points if p.revision.sha == baseline.sha), None)


def model_lines(models: Sequence[str], config: AuditConfig) -> dict[str, list[str]]:
    """Models grouped into lines (``ModelConfig.family`` or a ``-vN`` name suffix), oldest first."""
    configured = {m.name: m.family for m in config.models if m.family}
    lines: dict[str, list[tuple[tuple[int, ...], str]]] = {}
    for name in models:
        match = _VERSIONED_NAME.match(name)
        version = tuple(int(p) for p in match["version"].split(".")) if match else ()
        line = configured.get(name) or (match["line"] if match else None)
        if line is not None:
            lines.setdefault(line, []).append((version, name))
    return {
        line: [n for _, n in sorted(members)] for line, members in lines.items() if len(members) > 1
    }


def _version_comparisons(points: dict[str, list[Point]], config: AuditConfig) -> list[Comparison]:
    comparisons = []
    for members in model_lines(sorted(points), config).values():
        for older, newer in itertools.pairwise(members):
            old_at = {p.revision.sha: p for p in points[older]}
            for point in points[newer]:
                if point.revision.sha in old_at:
                    comparisons.append(
                        Comparison("model_version", old_at[point.revision.sha], point)
                    )
    return comparisons


# -- evaluation --------------------------------------------------------------------------------

#: "detect" asks of every comparison "did anything change?" (two-sided tests); "gate" asks two
#: one-sided questions of one comparison per model: "did it rise?" and "did it drop?".
Mode = Literal["detect", "gate"]


class Context:
    """What evaluation needs besides the comparisons: settings, exposure, a progress sink."""

    def __init__(self, config: AuditConfig, heldout: Any, progress: Progress) -> None:
        self.config = config
        self.progress = progress
        self.heldout = heldout if heldout is not None else _default_heldout(config, progress)
        self._model: ExposureModel | None = None
        self._cache: dict[tuple[str, str], list[Exposure]] = {}
        self._leaks: dict[str, Leak] = {}
        self._rates: dict[tuple[CellKey, tuple[str, ...]], Interval] = {}
        self.exposure_rows: list[dict[str, Any]] = []
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
            self._rates[key] = _rate(cell, self.config.detect)
        return self._rates[key]

    def exposure(self, before: Revision | None, after: Revision) -> list[Exposure]:
        """Exposure of every scenario to the text added from ``before`` to ``after`` (cached)."""
        if self.heldout is None:
            return []
        key = (before.sha if before else "", after.sha)
        if key not in self._cache:
            model = self._exposure_model(before.content if before else after.content)
            result = model.score(before.content if before else "", after.content)
            self._cache[key] = result
            self.exposure_rows.extend(_exposure_rows(before, after, self.heldout.set_hash, result))
        return self._cache[key]

    def leaks(self, revision: Revision) -> Leak:
        """Held-out text anywhere in the revision's spec text (cached per content)."""
        if self.heldout is None:
            return Leak(False, {})
        if revision.content_hash not in self._leaks:
            model = self._exposure_model(revision.content)
            self._leaks[revision.content_hash] = model.leaks(revision.content)
        return self._leaks[revision.content_hash]

    def scenario_texts(self) -> tuple[ScenarioText, ...]:
        """The held-out scenarios as exposure sees them (empty without a held-out set)."""
        return self._model.scenarios if self._model is not None else ()

    def _exposure_model(self, reference_spec: str) -> ExposureModel:
        # One model per pass: rarity is judged against the first spec text seen (the baseline).
        if self._model is None:
            self._model = ExposureModel(
                [ScenarioText.from_scenario(s) for s in self.heldout.scenarios],
                canary=self.heldout.canary,
                reference_spec=reference_spec,
                threshold=self.config.detect.exposure_threshold,
            )
        return self._model


def _default_heldout(config: AuditConfig, progress: Progress) -> Any:
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
    before: Revision | None, after: Revision, set_hash: str, exposures: Sequence[Exposure]
) -> list[dict[str, Any]]:
    return [
        {
            "source_id": after.source_id,
            "baseline_sha": before.sha if before else "",
            "sha": after.sha,
            "set_hash": set_hash,
            "scenario_id": e.scenario_id,
            "score": e.score,
            "exposed": e.exposed,
            "canary_hit": e.canary_hit,
            "verbatim_hit": e.verbatim_hit,
            "rare_term_score": e.rare_term_score,
            "fuzzy_score": e.fuzzy_score,
            "matched_terms": list(e.matched_terms),
            "matched_text": e.matched_text,
        }
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


def _twin_test(before: Cell, after: Cell, counts: EventCounts, settings: Any) -> dict[str, Any]:
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
        "public_rate_before": _rate(before.subset(public_ids), settings),
        "public_rate_after": _rate(after.subset(public_ids), settings),
    }


def _ids(ids: Sequence[str], mask: np.ndarray) -> tuple[str, ...]:
    return tuple(s for s, keep in zip(ids, mask, strict=True) if keep)


def _rate(cell: Cell, settings: Any) -> Interval:
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
    if kind == "drop" and _below(item.rate_after, bound) and not _below(item.rate_before, bound):
        kind = "collapse"
    return _finding(item, tests, label, kind, attribution, mode)


def _below(interval: Interval, bound: float) -> bool:
    return interval.high is not None and interval.high < bound


def _finding(
    item: Tested,
    tests: dict[str, tuple[float, float]],
    label: str,
    kind: str,
    attribution: Attribution,
    mode: Mode,
) -> Finding:
    comparison = item.comparison
    change, rate_before, rate_after = item.change, item.rate_before, item.rate_after
    tested_on, n_scenarios = "all scenarios", len(item.before.scenario_ids)
    exposed = _ids(item.before.scenario_ids, item.exposed)
    if label in ("exposed", "exposed_drop") and item.exposed_change and item.exposed_rate_after:
        # Every number of the finding from the test that found it: the exposed scenarios'.
        tested_on, n_scenarios = "exposed scenarios", len(exposed)
        change, rate_after = item.exposed_change, item.exposed_rate_after
        rate_before = item.exposed_rate_before or rate_before
    elif label in ("twin", "twin_drop") and item.twin and item.public_change:
        # Found by the twin test: the paired public scenarios' rates and change.
        tested_on, n_scenarios = TWIN_TESTED_ON, item.twin.n_pairs
        change = item.public_change
        rate_before = item.public_rate_before or rate_before
        rate_after = item.public_rate_after or rate_after
    p_value, q_value = tests.get(label, (change.p_value, 1.0))
    twin_label = "twin" if mode == "detect" else "twin_drop"
    twin_p, twin_q = tests.get(twin_label, (None, None))
    twin = item.twin.to_json(twin_q, twin_p) if item.twin else None
    evidence: dict[str, Any] = {
        "n_scenarios": n_scenarios,
        "tested_on": tested_on,
        "test": _TEST_NAMES[label],
        "fdr_family": _family_text(comparison, label, mode),
        "n_samples_before": item.before.n_samples,
        "n_samples_after": item.after.n_samples,
        "set_hash": comparison.after.cell.key.set_hash,
        "baseline_ci": [rate_before.low, rate_before.high],
        "dropped_scenarios": list(attribution.dropped_scenarios),
        "exposed_dropped_scenarios": list(attribution.exposed_dropped),
        "attribution_checks": attribution.checks,
        "tests": {name: {"p": p, "q": qv} for name, (p, qv) in tests.items()},
        "all_scenarios": _numbers(
            item.change, item.rate_before, item.rate_after, len(item.before.scenario_ids)
        )
        | _pq(tests, _all_label(mode, item)),
    }
    if twin is not None:
        evidence["twin_gap"] = twin
    if item.exposed_change is not None and item.exposed_rate_before and item.exposed_rate_after:
        exposed_label = "exposed" if mode == "detect" else "exposed_drop"
        evidence["exposed_scenarios"] = _numbers(
            item.exposed_change, item.exposed_rate_before, item.exposed_rate_after, len(exposed)
        ) | _pq(tests, exposed_label)
    finding = Finding(
        model=comparison.after.model,
        baseline_model=comparison.before.model,
        source_id=comparison.after.revision.source_id,
        baseline_rev=comparison.before.revision.sha,
        rev=comparison.after.revision.sha,
        comparison=comparison.kind,
        kind=kind,
        baseline_rate=rate_before.value,
        rate=rate_after.value,
        ci_low=rate_after.low,
        ci_high=rate_after.high,
        delta=change.delta,
        delta_ci_low=change.ci_low,
        delta_ci_high=change.ci_high,
        p_value=p_value,
        q_value=q_value,
        primary_cause=attribution.primary,
        causes=tuple(c.to_json() for c in attribution.causes),
        exposed_scenarios=exposed,
        evidence=evidence,
        tested_on=tested_on,
        twin_gap=twin,
    )
    return _with_summary(finding, attribution)


#: ``tested_on`` of a finding made by the sealed-twin test.
TWIN_TESTED_ON = "public scenarios against their sealed twins"

_TWIN_TEST = "exact stratified over (public, sealed twin) pairs"
_TEST_NAMES = {
    "twin": f"{_TWIN_TEST}, two-sided",
    "twin_drop": f"{_TWIN_TEST}, one-sided (the public share fell)",
    "rise": "exact stratified, one-sided (rise)",
    "drop": "exact stratified, one-sided (drop)",
    "exposed_drop": "beta-binomial predictive, one-sided (drop), exposed scenarios",
    "all": "exact stratified, two-sided",
    "exposed": "beta-binomial predictive, two-sided, exposed scenarios",
}


def _all_label(mode: Mode, item: Tested) -> str:
    if mode == "detect":
        return "all"
    return "rise" if item.change.delta > 0 else "drop"


def _family_text(comparison: Comparison, label: str, mode: Mode) -> str:
    if mode == "gate":
        direction = "rise" if label == "rise" else "drop"
        return f"gate: {comparison.after.model}, {direction}"
    source, model, group = comparison.family
    what = "comparisons with the previous version" if group == "model_version" else "history"
    return f"{model} along {source}: {what}"


def _numbers(change: PairedChange, before: Interval, after: Interval, n: int) -> dict[str, Any]:
    return {
        "n_scenarios": n,
        "baseline_rate": before.value,
        "rate": after.value,
        "ci": [after.low, after.high],
        "delta": change.delta,
        "delta_ci": [change.ci_low, change.ci_high],
        "delta_resampled": change.resampled,
    }


def _pq(tests: dict[str, tuple[float, float]], label: str) -> dict[str, Any]:
    p, q = tests.get(label, (None, None))
    return {"p_value": p, "q_value": q}


def _with_summary(finding: Finding, attribution: Attribution | None) -> Finding:
    return replace(finding, summary=describe(finding, attribution))


def describe(finding: Finding, attribution: Attribution | None = None) -> str:
    """One plain sentence about a finding, for people, starting with the model it is about."""
    return f"{finding.model}: {_describe_change(finding, attribution)}"


def _percent(value: float | None) -> str:
    return f"{100 * (value or 0):.1f}"


def _describe_change(finding: Finding, attribution: Attribution | None) -> str:
    at = finding.rev[:7]
    versus = (
        f"{finding.baseline_model} -> {finding.model}"
        if finding.model != finding.baseline_model
        else f"vs {finding.baseline_rev[:7]}"
    )
    points = abs(finding.delta or 0.0) * 100
    rate = (
        f"{_percent(finding.rate)}% (95% CI {_percent(finding.ci_low)}-"
        f"{_percent(finding.ci_high)}%)"
    )
    if finding.comparison == "point":
        return _describe_point(finding, rate)
    q = "" if finding.q_value is None else f", q={finding.q_value:.2g}"
    scope, overall = "", ""
    if finding.tested_on == "exposed scenarios":
        whole = finding.evidence.get("all_scenarios", {})
        n = finding.evidence.get("n_scenarios", len(finding.exposed_scenarios))
        scope = f" on the {n} exposed scenarios"
        low, high = whole.get("delta_ci", [None, None])
        overall = (
            f" (all {whole.get('n_scenarios')} scenarios: {100 * (whole.get('delta') or 0):+.1f} "
            f"points, 95% CI {100 * (low or 0):+.1f} to {100 * (high or 0):+.1f})"
        )
    elif finding.tested_on == TWIN_TESTED_ON and finding.twin_gap:
        gap = finding.twin_gap
        scope = f" on the {gap['n_pairs']} public scenarios with sealed twins"
        overall = (
            f" (their twins: {100 * gap['twin_change']:+.1f} points; gap "
            f"{100 * gap['gap']:+.1f}, 95% CI {100 * gap['ci'][0]:+.1f} to "
            f"{100 * gap['ci'][1]:+.1f})"
        )
    if finding.kind == "none":
        return f"no significant change at {at} ({versus}): covert rate {rate}{q}"
    if finding.kind == "regression":
        return f"regression: rise of {points:.1f} points at {at} ({versus}) to {rate}{q}"
    head = f"drop of {points:.1f} points{scope} at {at} ({versus}) to {rate}{q}{overall}"
    if finding.kind == "collapse":
        head = (
            f"collapse: covert rate at {at} ({versus}) is {rate}; the set may have lost its "
            f"power to detect covert actions; change {-points:+.1f} points{scope}{q}{overall}"
        )
    if not finding.causes:
        return head
    primary = finding.causes[0]
    share = 100 * float(primary["share"])
    reason = _reason(primary["cause"], primary["evidence"], attribution)
    return f"{head}, {share:.0f}% explained by {_CAUSE_NAMES[primary['cause']]}: {reason}"


def _describe_point(finding: Finding, rate: str) -> str:
    at = finding.rev[:7]
    if finding.kind == "collapse":
        since = (
            f" without a significant drop from {finding.baseline_rev[:7]}"
            if finding.baseline_rev
            else ""
        )
        return (
            f"collapse: covert rate at {at} is {rate}{since}; the set may have lost its power to "
            "detect covert actions (no cause: no change was found to attribute)"
        )
    note = finding.evidence.get("note", "nothing to compare")
    return f"no change checked at {at}: covert rate {rate}; {note}"


_CAUSE_NAMES = {
    "spec_patching": "spec patching",
    "eval_awareness": "eval awareness",
    "genuine": "genuine improvement",
    "regression": "regression",
}


def _reason(cause: str, evidence: dict[str, Any], attribution: Attribution | None) -> str:
    if cause == "spec_patching" and attribution is not None:
        text = (
            f"{len(attribution.exposed_dropped)} of {len(attribution.dropped_scenarios)} "
            "dropped scenarios were named by the edit"
        )
        if evidence.get("edit_follows_failures"):
            text += ", which followed their failures"
        if evidence.get("twin_gap_significant"):
            gap = evidence["twin_gap"]
            text += (
                f"; public scenarios changed {100 * gap['public_change']:+.1f} points, their "
                f"sealed twins {100 * gap['twin_change']:+.1f}"
            )
        return text
    if cause == "eval_awareness" and evidence.get("method") == "counterfactual":
        measured = evidence["counterfactual"]
        verb = "removing" if measured["mode"] == "ablate" else "injecting"
        return (
            f"causal evidence: {verb} verbalized awareness in the reasoning moved covert actions "
            f"from {100 * measured['covert_rate_original']:.1f}% to "
            f"{100 * measured['covert_rate_counterfactual']:.1f}% (McNemar "
            f"p={measured['p_value']:.2g}, {measured['n_pairs']} pairs at "
            f"{measured['rev'][:7]}), and awareness rose from "
            f"{100 * evidence['awareness_before']:.1f}% to {100 * evidence['awareness_after']:.1f}%"
        )
    if cause == "eval_awareness":
        return (
            f"awareness rose from {100 * evidence['awareness_before']:.1f}% to "
            f"{100 * evidence['awareness_after']:.1f}% while the covert rate of unaware "
            f"samples went from {100 * (evidence['covert_rate_unaware_before'] or 0):.1f}% to "
            f"{100 * (evidence['covert_rate_unaware_after'] or 0):.1f}%"
        )
    return "the drop is spread over exposed and unexposed scenarios"


# -- one model at a time: collapses and "nothing found" -----------------------------------------


def _distinct(model_points: Sequence[Point]) -> list[Point]:
    """A model's points, without revisions whose text (and so samples) equals the previous."""
    return [
        p for i, p in enumerate(model_points) if i == 0 or p.cell is not model_points[i - 1].cell
    ]


def _model_findings(
    points: dict[str, list[Point]],
    checked: Sequence[Finding],
    baseline: Revision | None,
    context: Context,
) -> list[Finding]:
    """The comparisons' findings, plus per model its collapses and (if nothing) a ``none``."""
    found = [f for f in checked if f.kind != "none"]
    extra: list[Finding] = []
    for model, model_points in points.items():
        distinct = _distinct(model_points)
        own = [f for f in found if f.model == model]
        collapses = _entered_collapse(model, distinct, own, context)
        extra.extend(collapses)
        if not own and not collapses:
            extra.append(_nothing_found(model, distinct, checked, baseline, context))
    return found + extra


def _entered_collapse(
    model: str, distinct: Sequence[Point], own: Sequence[Finding], context: Context
) -> list[Finding]:
    """A ``collapse`` at each point where the rate's upper bound falls under the bound.

    Where a significant drop led there, its finding already has kind ``collapse`` (with causes);
    otherwise (the first point, or a fall too small to test significant) it is a finding about
    the point alone, without causes.
    """
    config = context.config
    settings = config.detect
    intervals = [context.rate(p.cell) for p in distinct]
    out = []
    for i, (point, interval) in enumerate(zip(distinct, intervals, strict=True)):
        entered = _below(interval, settings.collapse_upper_bound) and (
            i == 0 or not _below(intervals[i - 1], settings.collapse_upper_bound)
        )
        reported = any(f.kind == "collapse" and f.rev == point.revision.sha for f in own)
        if entered and not reported:
            previous = distinct[i - 1] if i else None
            prior = intervals[i - 1] if i else None
            out.append(_point_finding(model, point, previous, prior, interval, "collapse", config))
    return out


def _nothing_found(
    model: str,
    distinct: Sequence[Point],
    checked: Sequence[Finding],
    baseline: Revision | None,
    context: Context,
) -> Finding:
    """The ``none`` finding of the model's latest point against its baseline."""
    anchor, latest = _anchor(distinct, baseline), distinct[-1]
    if anchor is not None and anchor is not latest:
        for finding in checked:
            if (
                finding.model == model
                and finding.baseline_model == model
                and finding.comparison in ("consecutive", "baseline")
                and (finding.baseline_rev, finding.rev)
                == (anchor.revision.sha, latest.revision.sha)
            ):
                return finding
    if anchor is None:
        note = "no samples at the baseline revision: nothing to compare with"
    elif anchor is latest:
        note = "the only point of this model: nothing to compare"
    else:
        note = "fewer than two scenarios in common with the baseline: not compared"
    interval = context.rate(latest.cell)
    return _point_finding(model, latest, None, None, interval, "none", context.config, note=note)


def _point_finding(
    model: str,
    point: Point,
    previous: Point | None,
    prior: Interval | None,
    interval: Interval,
    kind: str,
    config: AuditConfig,
    *,
    note: str | None = None,
) -> Finding:
    counts = point.cell.counts
    n_eff = int((counts["valid"] > 0).sum() * counts["valid"][counts["valid"] > 0].min(initial=0))
    evidence: dict[str, Any] = {
        "n_scenarios": int((counts["valid"] > 0).sum()),
        "n_samples": int(counts["valid"].sum()),
        "covert_samples": int(counts["covert"].sum()),
        "interval": "union of the scenario bootstrap and the pooled-count interval "
        "(exact Clopper-Pearson near 0)",
        "pooled_count_for_bound": n_eff,
        "set_hash": point.cell.key.set_hash,
    }
    if kind == "collapse":
        evidence["collapse_upper_bound"] = config.detect.collapse_upper_bound
        evidence["note"] = (
            "no significant drop led here: with so few covert actions the set may no longer be "
            "able to detect them"
        )
        if prior is not None:
            evidence["baseline_ci"] = [prior.low, prior.high]
    if note:
        evidence["note"] = note
    finding = Finding(
        model=model,
        baseline_model=model,
        source_id=point.revision.source_id,
        baseline_rev=previous.revision.sha if previous else "",
        rev=point.revision.sha,
        comparison="point",
        kind=kind,
        baseline_rate=prior.value if prior else None,
        rate=interval.value,
        ci_low=interval.low,
        ci_high=interval.high,
        delta=None,
        delta_ci_low=None,
        delta_ci_high=None,
        p_value=None,
        q_value=None,
        primary_cause=None,
        causes=(),
        exposed_scenarios=(),
        evidence=evidence,
    )
    return _with_summary(finding, None)


# -- leaks -------------------------------------------------------------------------------------


def _leak_findings(revisions: Sequence[Revision], context: Context) -> list[Finding]:
    """A ``leak`` at each revision that brings held-out text the previous one did not have."""
    findings = []
    previous: Revision | None = None
    carried = Leak(False, {})
    for revision in revisions:
        leak = context.leaks(revision)
        new = Leak(
            leak.canary and not carried.canary,
            {s: c for s, c in leak.copied.items() if s not in carried.copied},
            {s: c for s, c in leak.sealed.items() if s not in carried.sealed},
        )
        if new:
            findings.append(leak_finding(previous, revision, new, context))
        previous, carried = revision, leak
    return findings


def leak_finding(
    before: Revision | None,
    after: Revision,
    leak: Leak,
    context: Context,
    *,
    already_at_baseline: bool = False,
) -> Finding:
    """A ``leak`` finding: the held-out set's canary or prompt text is in the spec at ``after``."""
    copied = sorted(leak.copied)
    sealed = sorted(leak.sealed)
    what = (
        "the held-out canary string"
        if leak.canary
        else "near-verbatim scenario text"
        if copied
        else f"text naming the details of sealed twin{'s' if len(sealed) > 1 else ''} "
        f"{_listed(sealed)}"
    )
    if copied:
        what += f" (copied from {_listed(copied)})" if leak.canary else f" of {_listed(copied)}"
    if sealed and (leak.canary or copied):
        what += f", and text naming sealed twin{'s' if len(sealed) > 1 else ''} {_listed(sealed)}"
    all_ids = (
        [s.scenario_id for s in context.scenario_texts()]
        if leak.canary
        else sorted({*copied, *sealed})
    )
    verb = "is in the spec" if already_at_baseline else "was added"
    matched = sorted({*leak.copied.values(), *leak.sealed.values()})
    return Finding(
        model="*",
        baseline_model="*",
        source_id=after.source_id,
        baseline_rev=before.sha if before else "",
        rev=after.sha,
        comparison="consecutive",
        kind="leak",
        baseline_rate=None,
        rate=None,
        ci_low=None,
        ci_high=None,
        delta=None,
        delta_ci_low=None,
        delta_ci_high=None,
        p_value=None,
        q_value=None,
        primary_cause=None,
        causes=(),
        exposed_scenarios=tuple(sorted(all_ids)),
        evidence={
            "matched_text": matched,
            "canary": leak.canary,
            "verbatim_scenarios": copied,
            "sealed_twins_named": sealed,
            "already_at_baseline": already_at_baseline,
        },
        summary=f"held-out set leaked into the spec at {after.sha[:7]}: {what} {verb}",
    )


def _listed(ids: Sequence[str], limit: int = 5) -> str:
    more = f" and {len(ids) - limit} more" if len(ids) > limit else ""
    return ", ".join(ids[:limit]) + more


# -- storing -----------------------------------------------------------------------------------


def _store_results(
    store: Store,
    sources: list[str],
    models: list[str],
    estimate_rows: list[dict[str, Any]],
    findings: list[Finding],
    context: Context,
) -> None:
    """Replace this pass's estimates, exposure and findings in one transaction."""
    with store.transaction():
        for source in sources:
            store.con.execute(
                "DELETE FROM findings WHERE source_id = ? AND (model = '*' OR model IN "
                "(SELECT unnest(?)))",
                [source, models],
            )
            # Counterfactual estimates are audit counterfactual's: detect reads them, never redoes.
            store.con.execute(
                "DELETE FROM estimates WHERE source_id = ? AND model IN (SELECT unnest(?)) "
                "AND NOT starts_with(metric, 'counterfactual_')",
                [source, models],
            )
        store.insert_rows("estimates", estimate_rows, on_conflict="replace")
        store.insert_rows("exposure", context.exposure_rows, on_conflict="replace")
        store.insert_rows("findings", [f.row() for f in findings], on_conflict="replace")
