"""Detection: every change along the history of every model, tested, attributed and stored.

One pass reads per-scenario counts from DuckDB (aggregated in SQL), writes the estimates of every
(model, revision), compares each model's consecutive revisions, every revision against a
baseline, and consecutive versions of one model line at the same revision, corrects all p-values
of the pass together (Benjamini-Hochberg), attributes every significant change, and replaces the
previous pass's findings for the same models and spec source. Spec leaks of the held-out set are
findings of their own, whatever the scores do.

Each comparison gets the exact stratified test of :mod:`audit.analysis.compare` (conditional on
the fixed held-out scenarios: "did any scenario change on this set?"), once over all common
scenarios and once over the scenarios exposed to the spec edits in between, since a patch moves
only the few scenarios it names; both p-values join the same Benjamini-Hochberg family. Rate and
change intervals are cluster bootstraps over scenarios (how far the result would generalise to
other scenarios like these), a different question from the test's.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from audit.analysis.attribution import Attribution, attribute_drop, attribute_rise
from audit.analysis.compare import EventCounts, PairedChange, benjamini_hochberg, paired_change
from audit.analysis.estimates import (
    Cell,
    CellKey,
    Interval,
    cell_estimates,
    cluster_bootstrap,
    load_cells,
)
from audit.analysis.exposure import Exposure, ExposureModel, ScenarioText
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


@dataclass(frozen=True)
class Finding:
    """A detected change (or, from the gate, a checked comparison) with its attribution."""

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
            "summary": self.summary,
        }

    def row(self) -> dict[str, Any]:
        """The finding as a ``findings`` row."""
        data = self.to_json()
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
    ``heldout`` the held-out set whose scenarios exposure is measured against (default: the
    package's set). Findings of kind ``none`` are not returned or stored.
    """
    progress = progress or NullProgress()
    models = [model] if model else None
    cells = load_cells(store, models=models, set_hash=set_hash)
    if not cells:
        what = f"model {model!r}" if model else "any model"
        raise AuditError(f"no samples stored for {what}: run `audit run` (or the demo) first")
    _refuse_mixed_sets(cells)
    sources = _load_revisions(store, source_id)
    context = _Context(config, heldout, progress)
    sample_set = next(iter(cells)).set_hash
    if context.heldout is not None and context.heldout.set_hash != sample_set:
        progress.message(
            f"exposure is measured against held-out set {context.heldout.set_hash[:19]}, but the "
            f"samples were made on {sample_set[:19]}: scenarios missing from it count as unexposed"
        )
    findings: list[Finding] = []
    estimate_rows: list[dict[str, Any]] = []
    analysed_models = sorted({k.model for k in cells})
    for source, revisions in sources.items():
        base = _resolve(store, baseline, source, revisions) if baseline else None
        points = _points(cells, revisions)
        estimate_rows.extend(_estimate_rows(points, config))
        comparisons = _history_comparisons(points, config, base)
        progress.start(len(comparisons), f"comparisons ({source})")
        findings.extend(_evaluate(comparisons, context, include_none=False))
        findings.extend(_leak_findings(revisions, context))
        progress.finish()
    _store_results(store, sorted(sources), analysed_models, estimate_rows, findings, context)
    return findings


# -- loading -----------------------------------------------------------------------------------


def _refuse_mixed_sets(cells: dict[CellKey, Cell]) -> None:
    hashes = sorted({k.set_hash for k in cells})
    if len(hashes) > 1:
        raise AuditError(
            f"samples were made on {len(hashes)} versions of the held-out set "
            f"({', '.join(h[:19] for h in hashes)}): comparing across them is refused; "
            "pass --set-hash to analyse one"
        )


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


# -- comparisons -------------------------------------------------------------------------------


def _history_comparisons(
    points: dict[str, list[Point]], config: AuditConfig, baseline: Revision | None
) -> list[Comparison]:
    comparisons: list[Comparison] = []
    for model_points in points.values():
        # Revisions with equal text share samples: comparing them would compare a cell to itself.
        distinct = [
            p
            for i, p in enumerate(model_points)
            if i == 0 or p.cell is not model_points[i - 1].cell
        ]
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


class _Context:
    """What evaluation needs besides the comparisons: settings, exposure, a progress sink."""

    def __init__(self, config: AuditConfig, heldout: Any, progress: Progress) -> None:
        self.config = config
        self.progress = progress
        self.heldout = heldout if heldout is not None else _default_heldout(progress)
        self._model: ExposureModel | None = None
        self._cache: dict[tuple[str, str], list[Exposure]] = {}
        self.exposure_rows: list[dict[str, Any]] = []

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


def _default_heldout(progress: Progress) -> Any:
    try:
        from audit.heldout import load_heldout  # type: ignore[attr-defined]
    except ImportError:
        from audit.heldout.loader import load_heldout
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
class _Tested:
    comparison: Comparison
    before: Cell
    after: Cell
    change: PairedChange
    rate_before: Interval
    rate_after: Interval
    exposed: np.ndarray
    #: The change of the exposed scenarios alone (None without both exposed and unexposed ones).
    exposed_change: PairedChange | None = None


def _evaluate(
    comparisons: Sequence[Comparison], context: _Context, *, include_none: bool
) -> list[Finding]:
    """Test every comparison, correct them together, attribute the significant ones."""
    tested = [t for c in comparisons if (t := _test(c, context)) is not None]
    # A patch can move only the scenarios it names, too few to move the macro rate: the exposed
    # scenarios get a test of their own, corrected together with every other test of the pass.
    extra = [(i, t.exposed_change.p_value) for i, t in enumerate(tested) if t.exposed_change]
    q_all = benjamini_hochberg([t.change.p_value for t in tested] + [p for _, p in extra])
    q_exposed = {i: q for (i, _), q in zip(extra, q_all[len(tested) :], strict=True)}
    findings = []
    for index, (item, q) in enumerate(zip(tested, q_all[: len(tested)], strict=True)):
        finding = _classify(item, q, q_exposed.get(index), context)
        if include_none or finding.kind != "none":
            findings.append(finding)
        context.progress.advance()
    return findings


def _test(comparison: Comparison, context: _Context) -> _Tested | None:
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
    change = paired_change(
        before.rate("covert_rate"),
        after.rate("covert_rate"),
        resamples=settings.bootstrap,
        seed=settings.seed,
        counts=counts,
    )
    exposed_ids = _exposed_ids(comparison, context)
    exposed = np.array([s in exposed_ids for s in common], dtype=bool)
    exposed_change = None
    if 1 <= exposed.sum() < len(common):
        # The same stratified test on the named scenarios alone: unexposed scenarios' noise
        # cannot hide a patch that moves only the few scenarios it names.
        exposed_change = paired_change(
            before.rate("covert_rate")[exposed],
            after.rate("covert_rate")[exposed],
            resamples=settings.bootstrap,
            seed=settings.seed,
            counts=counts.take(exposed),
        )
    return _Tested(
        comparison=comparison,
        before=before,
        after=after,
        change=change,
        rate_before=cluster_bootstrap(
            before.rate("covert_rate"), resamples=settings.bootstrap, seed=settings.seed
        ),
        rate_after=cluster_bootstrap(
            after.rate("covert_rate"), resamples=settings.bootstrap, seed=settings.seed
        ),
        exposed=exposed,
        exposed_change=exposed_change,
    )


def covert_counts(before: Cell, after: Cell) -> EventCounts:
    """Covert events and sample counts of two aligned cells, for the stratified test."""
    return EventCounts(
        before.counts["covert"], before.counts["n"], after.counts["covert"], after.counts["n"]
    )


def _exposed_ids(comparison: Comparison, context: _Context) -> set[str]:
    before, after = comparison.before.revision, comparison.after.revision
    if before.sha == after.sha:
        return set()  # model versions at one revision: no spec edit to be exposed to
    return {e.scenario_id for e in context.exposure(before, after) if e.exposed}


def _classify(item: _Tested, q_value: float, q_exposed: float | None, context: _Context) -> Finding:
    settings = context.config.detect
    change = item.change
    significant = q_value < settings.alpha
    exposed_drop = (
        not significant
        and q_exposed is not None
        and q_exposed < settings.alpha
        and item.exposed_change is not None
        and item.exposed_change.delta < 0
    )
    collapsed = _below(item.rate_after, settings.collapse_upper_bound)
    was_collapsed = _below(item.rate_before, settings.collapse_upper_bound)
    attribution = Attribution(causes=())
    kind = "none"
    if significant and change.delta > 0:
        kind, attribution = "regression", attribute_rise(item.before, item.after)
    elif (significant or exposed_drop) and change.delta < 0:
        kind = "drop"
        attribution = attribute_drop(
            item.before,
            item.after,
            item.exposed,
            alpha=settings.alpha,
            resamples=settings.bootstrap,
            seed=settings.seed,
        )
    if collapsed and not was_collapsed and kind != "regression":
        kind = "collapse"
    if exposed_drop and kind != "none" and item.exposed_change is not None:
        # Reported with the test that found it: the exposed scenarios' own change.
        return _finding(item, q_exposed, kind, attribution, tested_on="exposed scenarios")
    return _finding(item, q_value, kind, attribution)


def _below(interval: Interval, bound: float) -> bool:
    return interval.high is not None and interval.high < bound


def _finding(
    item: _Tested,
    q_value: float | None,
    kind: str,
    attribution: Attribution,
    *,
    tested_on: str = "all scenarios",
) -> Finding:
    comparison, change = item.comparison, item.change
    tested = item.exposed_change if tested_on == "exposed scenarios" else change
    exposed = tuple(s for s, e in zip(item.before.scenario_ids, item.exposed, strict=True) if e)
    finding = Finding(
        model=comparison.after.model,
        baseline_model=comparison.before.model,
        source_id=comparison.after.revision.source_id,
        baseline_rev=comparison.before.revision.sha,
        rev=comparison.after.revision.sha,
        comparison=comparison.kind,
        kind=kind,
        baseline_rate=item.rate_before.value,
        rate=item.rate_after.value,
        ci_low=item.rate_after.low,
        ci_high=item.rate_after.high,
        delta=change.delta,
        delta_ci_low=change.ci_low,
        delta_ci_high=change.ci_high,
        p_value=tested.p_value if tested else None,
        q_value=q_value,
        primary_cause=attribution.primary,
        causes=tuple(c.to_json() for c in attribution.causes),
        exposed_scenarios=exposed,
        evidence={
            "n_scenarios": len(item.before.scenario_ids),
            "tested_on": tested_on,
            "n_samples_before": item.before.n_samples,
            "n_samples_after": item.after.n_samples,
            "set_hash": comparison.after.cell.key.set_hash,
            "baseline_ci": [item.rate_before.low, item.rate_before.high],
            "dropped_scenarios": list(attribution.dropped_scenarios),
            "exposed_dropped_scenarios": list(attribution.exposed_dropped),
        },
    )
    return _with_summary(finding, attribution)


def _with_summary(finding: Finding, attribution: Attribution) -> Finding:
    return replace(finding, summary=describe(finding, attribution))


def describe(finding: Finding, attribution: Attribution | None = None) -> str:
    """One plain sentence about a finding, for people, starting with the model it is about."""
    return f"{finding.model}: {_describe_change(finding, attribution)}"


def _describe_change(finding: Finding, attribution: Attribution | None) -> str:
    at = finding.rev[:7]
    versus = (
        f"{finding.baseline_model} -> {finding.model}"
        if finding.model != finding.baseline_model
        else f"vs {finding.baseline_rev[:7]}"
    )
    points = abs(finding.delta or 0.0) * 100
    rate = (
        f"{100 * (finding.rate or 0):.1f}% (95% CI {100 * (finding.ci_low or 0):.1f}-"
        f"{100 * (finding.ci_high or 0):.1f}%)"
    )
    if finding.kind == "none":
        return f"no significant change at {at} ({versus}): covert rate {rate}"
    if finding.kind == "regression":
        return (
            f"regression: rise of {points:.1f} points at {at} ({versus}) to {rate}, "
            f"q={finding.q_value:.3g}"
        )
    head = f"drop of {points:.1f} points at {at} ({versus}) to {rate}"
    if finding.kind == "collapse":
        head = (
            f"collapse: covert rate at {at} ({versus}) is {rate}; the set may have lost its "
            f"power to detect covert actions; change {-points:+.1f} points"
        )
    if not finding.causes:
        return head
    primary = finding.causes[0]
    share = 100 * float(primary["share"])
    reason = _reason(primary["cause"], primary["evidence"], attribution)
    return f"{head}, {share:.0f}% explained by {_CAUSE_NAMES[primary['cause']]}: {reason}"


_CAUSE_NAMES = {
    "spec_patching": "spec patching",
    "eval_awareness": "eval awareness",
    "genuine": "genuine improvement",
    "regression": "regression",
}


def _reason(cause: str, evidence: dict[str, Any], attribution: Attribution | None) -> str:
    if cause == "spec_patching" and attribution is not None:
        return (
            f"{len(attribution.exposed_dropped)} of {len(attribution.dropped_scenarios)} "
            "dropped scenarios were named by the edit"
        )
    if cause == "eval_awareness":
        return (
            f"awareness rose from {100 * evidence['awareness_before']:.1f}% to "
            f"{100 * evidence['awareness_after']:.1f}% while the covert rate of unaware "
            f"samples went from {100 * (evidence['covert_rate_unaware_before'] or 0):.1f}% to "
            f"{100 * (evidence['covert_rate_unaware_after'] or 0):.1f}%"
        )
    return "the drop is spread over exposed and unexposed scenarios"


# -- leaks -------------------------------------------------------------------------------------


def _leak_findings(revisions: Sequence[Revision], context: _Context) -> list[Finding]:
    findings = []
    previous: Revision | None = None
    for revision in revisions:
        leaked = [e for e in context.exposure(previous, revision) if e.leak]
        if leaked:
            findings.append(leak_finding(previous, revision, leaked))
        previous = revision
    return findings


def leak_finding(before: Revision | None, after: Revision, leaked: Sequence[Exposure]) -> Finding:
    """A ``leak`` finding: the held-out set's canary or prompt text entered the spec."""
    canary = any(e.canary_hit for e in leaked)
    copied = sorted(e.scenario_id for e in leaked if e.verbatim_hit)
    what = "the held-out canary string" if canary else "near-verbatim scenario text"
    if copied:
        what += (
            f" (copied from {', '.join(copied[:5])})" if canary else f" of {', '.join(copied[:5])}"
        )
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
        exposed_scenarios=tuple(sorted(e.scenario_id for e in leaked)),
        evidence={
            "matched_text": sorted({e.matched_text for e in leaked if e.matched_text}),
            "canary": canary,
            "verbatim_scenarios": copied,
        },
        summary=f"held-out set leaked into the spec at {after.sha[:7]}: {what} was added",
    )


# -- storing -----------------------------------------------------------------------------------


def _store_results(
    store: Store,
    sources: list[str],
    models: list[str],
    estimate_rows: list[dict[str, Any]],
    findings: list[Finding],
    context: _Context,
) -> None:
    """Replace this pass's estimates, exposure and findings in one transaction."""
    with store.transaction():
        for source in sources:
            store.con.execute(
                "DELETE FROM findings WHERE source_id = ? AND (model = '*' OR model IN "
                "(SELECT unnest(?)))",
                [source, models],
            )
            store.con.execute(
                "DELETE FROM estimates WHERE source_id = ? AND model IN (SELECT unnest(?))",
                [source, models],
            )
        store.insert_rows("estimates", estimate_rows, on_conflict="replace")
        store.insert_rows("exposure", context.exposure_rows, on_conflict="replace")
        store.insert_rows("findings", [f.row() for f in findings], on_conflict="replace")
