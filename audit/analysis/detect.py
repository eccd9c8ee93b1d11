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

The pieces live beside this module: :mod:`audit.analysis.points` plans the comparisons,
:mod:`audit.analysis.evaluate` tests and attributes them, :mod:`audit.analysis.findings` makes
and describes the findings; this module runs the pass and stores what it found.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from audit.analysis.counterfactual import load_causal_evidence
from audit.analysis.estimates import cell_estimates, load_cells
from audit.analysis.evaluate import Context, below, evaluate_comparisons
from audit.analysis.exposure import Leak
from audit.analysis.findings import Finding, leak_finding, point_finding
from audit.analysis.points import (
    Point,
    anchor_point,
    distinct_points,
    history_comparisons,
    load_revisions,
    points_by_model,
    refuse_mixed_sets,
    resolve_ref,
    set_label,
)
from audit.analysis.usage import Usage, usage_by_point, usage_estimate_rows
from audit.config import AuditConfig
from audit.errors import AuditError
from audit.model_lines import model_lines
from audit.progress import NullProgress, Progress
from audit.records import TWIN_TESTED_ON, SpecRevision
from audit.store import Store
from audit.store.rows import EstimateRow, FindingRow, replace_detection

if TYPE_CHECKING:
    from audit.heldout.loader import HeldoutSet

# Names other modules and tests import from here (their homes are the modules above).
__all__ = ["TWIN_TESTED_ON", "Finding", "detect", "model_lines"]


# -- public entry point ------------------------------------------------------------------------


def detect(
    store: Store,
    config: AuditConfig,
    *,
    model: str | None = None,
    baseline: str | None = None,
    source_id: str | None = None,
    set_hash: str | None = None,
    heldout: HeldoutSet | None = None,
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
        of_set = f" on held-out set {set_label(store, set_hash)}" if set_hash else ""
        raise AuditError(
            f"no samples stored for {what}{of_set}: run `audit run` (or the demo) first"
        )
    refuse_mixed_sets(cells)
    sources = load_revisions(store, source_id)
    context.causal = load_causal_evidence(store, models)
    sample_set = next(iter(cells)).set_hash
    if context.heldout is not None and context.heldout.set_hash != sample_set:
        progress.message(
            f"exposure is measured against held-out set {context.heldout.set_hash[:19]}, but the "
            f"samples were made on {sample_set[:19]}: scenarios missing from it count as unexposed"
        )
    findings: list[Finding] = []
    estimate_rows: list[EstimateRow] = []
    analysed_models = sorted({k.model for k in cells})
    usage = usage_by_point(store, config)
    for source, revisions in sources.items():
        base = resolve_ref(store, baseline, source, revisions) if baseline else None
        points = points_by_model(cells, revisions)
        estimate_rows.extend(_estimate_rows(points, config))
        estimate_rows.extend(_usage_rows(points, usage))
        comparisons = history_comparisons(points, config, base)
        progress.start(len(comparisons), f"comparisons ({source})")
        checked = evaluate_comparisons(comparisons, context, mode="detect")
        progress.finish()
        findings.extend(_model_findings(points, checked, base, context))
        findings.extend(_leak_findings(revisions, context))
    replace_detection(
        store,
        sources=sorted(sources),
        models=analysed_models,
        estimates=estimate_rows,
        exposure=context.exposure_rows,
        findings=[FindingRow.of(f) for f in findings],
    )
    return findings


def _estimate_rows(points: dict[str, list[Point]], config: AuditConfig) -> list[EstimateRow]:
    """The rates (and gaps) of every point, with their intervals."""
    return [
        _at(point, row)
        for model_points in points.values()
        for point in model_points
        for row in cell_estimates(
            point.cell, resamples=config.detect.bootstrap, seed=config.detect.seed
        )
    ]


def _at(point: Point, values: dict[str, Any]) -> EstimateRow:
    """An estimate (metric, scope, value, interval, counts) placed at a point."""
    return EstimateRow(
        model=point.model, source_id=point.revision.source_id, sha=point.revision.sha, **values
    )


def _usage_rows(
    points: dict[str, list[Point]], usage: dict[tuple[str, str, str], Usage]
) -> list[EstimateRow]:
    """Token totals and cost of every point, as estimates rows beside its rates."""
    rows: list[EstimateRow] = []
    for model_points in points.values():
        for point in model_points:
            key = point.cell.key
            totals = usage.get((key.model, key.content_hash, key.set_hash))
            if totals is not None:
                rows.extend(_at(point, row) for row in usage_estimate_rows(totals))
    return rows


# -- one model at a time: collapses and "nothing found" -----------------------------------------


def _model_findings(
    points: dict[str, list[Point]],
    checked: Sequence[Finding],
    baseline: SpecRevision | None,
    context: Context,
) -> list[Finding]:
    """The comparisons' findings, plus per model its collapses and (if nothing) a ``none``."""
    found = [f for f in checked if f.kind != "none"]
    extra: list[Finding] = []
    for model, model_points in points.items():
        distinct = distinct_points(model_points)
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
        entered = below(interval, settings.collapse_upper_bound) and (
            i == 0 or not below(intervals[i - 1], settings.collapse_upper_bound)
        )
        reported = any(f.kind == "collapse" and f.rev == point.revision.sha for f in own)
        if entered and not reported:
            previous = distinct[i - 1] if i else None
            prior = intervals[i - 1] if i else None
            out.append(point_finding(model, point, previous, prior, interval, "collapse", config))
    return out


def _nothing_found(
    model: str,
    distinct: Sequence[Point],
    checked: Sequence[Finding],
    baseline: SpecRevision | None,
    context: Context,
) -> Finding:
    """The ``none`` finding of the model's latest point against its baseline."""
    anchor, latest = anchor_point(distinct, baseline), distinct[-1]
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
    return point_finding(model, latest, None, None, interval, "none", context.config, note=note)


# -- leaks -------------------------------------------------------------------------------------


def _leak_findings(revisions: Sequence[SpecRevision], context: Context) -> list[Finding]:
    """A ``leak`` at each revision that brings held-out text the previous one did not have."""
    findings = []
    previous: SpecRevision | None = None
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
