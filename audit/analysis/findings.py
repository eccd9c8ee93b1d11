"""Findings: the record of a detected change (or of a checked comparison), the constructors
that make one from a test, a point or a leak, and the sentence that summarises it for people.

``tested_on`` says which scenarios a finding's numbers describe: all of them, the exposed ones
when the test of the scenarios a spec edit names found the change, or the public scenarios with
sealed twins when the twin test did (its evidence keeps the all-scenario figures).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from audit.config import AuditConfig
from audit.records import (  # the record lives with the other domain records
    ALL_SCENARIOS,
    CAUSE_NAMES,
    EXPOSED_TESTED_ON,
    TWIN_TESTED_ON,
    Finding,
    FindingKind,
    TestedOn,
)

__all__ = [
    "TWIN_TESTED_ON",
    "Finding",
    "describe",
    "leak_finding",
    "point_finding",
    "tested_finding",
]

if TYPE_CHECKING:
    from audit.analysis.attribution import Attribution
    from audit.analysis.compare import PairedChange
    from audit.analysis.estimates import Interval
    from audit.analysis.evaluate import Context, Mode, Tested
    from audit.analysis.exposure import Leak
    from audit.analysis.points import Comparison, Point
    from audit.records import SpecRevision


def tested_finding(
    item: Tested,
    tests: dict[str, tuple[float, float]],
    label: str,
    kind: FindingKind,
    attribution: Attribution,
    mode: Mode,
) -> Finding:
    comparison = item.comparison
    change, rate_before, rate_after = item.change, item.rate_before, item.rate_after
    tested_on: TestedOn = ALL_SCENARIOS
    n_scenarios = len(item.before.scenario_ids)
    exposed = item.exposed_ids
    if label in ("exposed", "exposed_drop") and item.exposed_change and item.exposed_rate_after:
        # Every number of the finding from the test that found it: the exposed scenarios'.
        tested_on, n_scenarios = EXPOSED_TESTED_ON, len(exposed)
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
    if finding.tested_on == EXPOSED_TESTED_ON:
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
    return f"{head}, {share:.0f}% explained by {CAUSE_NAMES[primary['cause']]}: {reason}"


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


def point_finding(
    model: str,
    point: Point,
    previous: Point | None,
    prior: Interval | None,
    interval: Interval,
    kind: FindingKind,
    config: AuditConfig,
    *,
    note: str | None = None,
) -> Finding:
    """A finding about one point alone: a ``collapse`` no significant drop led to, or a
    ``none`` when nothing could be compared (``note`` says why)."""
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
        evidence=evidence,
    )
    return _with_summary(finding, None)


def leak_finding(
    before: SpecRevision | None,
    after: SpecRevision,
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
