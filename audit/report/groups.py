"""Findings grouped for people, and models grouped into families.

Detection compares every spec revision, so one real change between two model versions shows up
as one finding per revision (eleven near-identical "regression ... (v2 -> v3)" lines). The
headline says it once: findings of a model that share what was compared (spec revisions of the
same model, or another model version), the baseline model, the kind and the primary cause become
one :class:`FindingGroup` with one line such as "regression vs backslider-v2 at 10 of 10 spec
revisions: +19.1 to +36.0 points (q ≤ 0.0098)". The full list stays in the Findings section.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from audit.model_lines import family_of, model_families
from audit.records import CAUSE_NAMES
from audit.report.data import ReportData, ReportFinding

__all__ = ["family_of", "model_families"]  # kept importable from here (tests, figures)

# Headline order: what a release gate fails on first, then what explains a drop.
_KIND_ORDER = {"leak": 0, "regression": 1, "collapse": 2, "drop": 3}
_COMPARISON_ORDER = {"model_version": 0, "baseline": 1, "consecutive": 2}


@dataclass(frozen=True)
class FindingGroup:
    """Findings of one model that say the same thing, and the one line that says it."""

    group_id: str
    model: str
    comparison: str
    baseline_model: str
    kind: str
    primary_cause: str | None
    findings: tuple[ReportFinding, ...]
    text: str
    detail: str | None
    # The sealed-twin test in words ("twin gap ...", or "no twin samples"); "" for a leak or a
    # point, where no change was compared.
    twin: str = ""

    @property
    def across_versions(self) -> bool:
        """True for comparisons against another model version at the same spec revision."""
        return self.findings[0].across_versions

    @property
    def strongest(self) -> ReportFinding:
        """The member with the lowest q (then the largest change): the group's representative."""
        return min(self.findings, key=strength)

    @property
    def anchor(self) -> str:
        """Where the headline links to: the group in the Findings table (a leak: its row)."""
        if self.kind == "leak":
            return f"finding-{self.findings[0].finding_id}"
        return f"group-{self.group_id}"


def strength(finding: ReportFinding) -> tuple[float, float]:
    """Sort key, strongest first: the lowest q, then the largest change."""
    q = finding.q_value if finding.q_value is not None else 1.0
    return (q, -abs(finding.delta or 0.0))


def findings_table(data: ReportData) -> list[FindingGroup]:
    """Every stored finding exactly once, grouped as in the headline, strongest group first.

    Leaks come first whatever their numbers (the held-out set itself is compromised); then
    groups by their strongest member.
    """
    groups = group_findings(data, "*")
    for members in data.families.values():
        for model in members:
            groups.extend(g for g in group_findings(data, model) if g.kind != "leak")
    return sorted(groups, key=lambda g: (g.kind != "leak", strength(g.strongest), g.group_id))


def group_findings(data: ReportData, model: str) -> list[FindingGroup]:
    """The findings concerning ``model`` (and leaks, which concern every model), grouped.

    Groups come in headline order: leaks, regressions, collapses, drops; within a kind,
    comparisons with another model version first. Findings inside a group are in commit order.
    """
    seq = {r.sha: r.seq for r in data.revisions}
    buckets: dict[tuple[str, str, str, str, str], list[ReportFinding]] = {}
    for finding in data.findings:
        if finding.model not in (model, "*"):
            continue
        comparison: str = "model_version" if finding.across_versions else finding.comparison
        key = (
            comparison,
            finding.baseline_model,
            finding.kind,
            finding.primary_cause or "",
            # A leak is about one spec edit: never merge two of them into one line.
            finding.finding_id if finding.kind == "leak" else "",
        )
        buckets.setdefault(key, []).append(finding)
    groups = []
    for (comparison, baseline_model, kind, cause, _), members in buckets.items():
        members.sort(key=lambda f: (seq.get(f.sha or "", -1), f.finding_id))
        groups.append(_group(data, model, comparison, baseline_model, kind, cause, members))
    groups.sort(
        key=lambda g: (
            _KIND_ORDER.get(g.kind, 9),
            _COMPARISON_ORDER.get(g.comparison, 9),
            g.baseline_model,
            g.primary_cause or "",
            g.group_id,
        )
    )
    return groups


def _group(
    data: ReportData,
    model: str,
    comparison: str,
    baseline_model: str,
    kind: str,
    cause: str,
    members: list[ReportFinding],
) -> FindingGroup:
    parts = [model, comparison, baseline_model, kind, cause]
    if kind == "leak":
        parts.append(members[0].finding_id)
    # Readable and unique: each part keeps letters, digits, "-" and "."; "__" separates them.
    group_id = "__".join(re.sub(r"[^A-Za-z0-9.-]+", "_", part) or "none" for part in parts)
    if kind == "leak":
        return FindingGroup(
            group_id, model, comparison, baseline_model, kind, None, tuple(members),
            members[0].summary, None,
        )  # fmt: skip
    where = _where(data, model, comparison, baseline_model, members)
    if comparison == "point":
        # A finding about one point (a rate whose bound fell under 1%): no change was tested.
        text = f"{_kind_word(kind)} {where}"
    else:
        text = f"{_kind_word(kind)} {where}: {_change_range(members)} ({_q_bound(members)})"
    if cause and cause != "regression":
        text += f", primary cause {CAUSE_NAMES.get(cause, cause)}"
    detail: str | None = None
    if len(members) == 1:
        detail = _without_model(members[0].summary, model)
    elif cause in ("spec_patching", "eval_awareness"):
        # The reason behind these causes (which scenarios the edit named, how awareness moved)
        # differs per revision; the strongest finding shows what the evidence looks like.
        strongest = max(members, key=lambda f: abs(f.delta or 0.0))
        detail = f"strongest: {_without_model(strongest.summary, model)}"
    if cause == "spec_patching":
        edits = _exposing_edits(data, members)
        if edits:
            plural = "s" if len(edits) > 1 else ""
            detail = (
                f"{detail + '; ' if detail else ''}exposed scenarios named by the edit{plural} at "
            )
            shown = ", ".join(edits[:4])
            detail += shown + (f" and {len(edits) - 4} more" if len(edits) > 4 else "")
    return FindingGroup(
        group_id=group_id,
        model=model,
        comparison=comparison,
        baseline_model=baseline_model,
        kind=kind,
        primary_cause=cause or None,
        findings=tuple(members),
        text=text,
        detail=detail,
        twin=_group_twin(data, members),
    )


def twin_text(finding: ReportFinding) -> str:
    """A finding's sealed-twin test in words, or "no twin samples" (empty for a leak or a point).

    e.g. "twin gap −25.0 points (95% CI −31.2 to −18.0): public scenarios −27.1, their sealed
    twins −2.1 (34 pairs, q = 0.001)".
    """
    if not finding.compares:
        return ""
    gap = finding.twin
    if gap is None:
        return "no twin samples"
    text = f"twin gap {_points(gap.gap)} points"
    if gap.ci_low is not None and gap.ci_high is not None:
        text += f" (95% CI {_points(gap.ci_low)} to {_points(gap.ci_high)})"
    if gap.public_change is not None and gap.twin_change is not None:
        text += (
            f": public scenarios {_points(gap.public_change)}, "
            f"their sealed twins {_points(gap.twin_change)}"
        )
    extra = [f"{gap.n_pairs} pairs"] if gap.n_pairs is not None else []
    if gap.q_value is not None:
        extra.append(f"q = {gap.q_value:.2g}")
    return text + (f" ({', '.join(extra)})" if extra else "")


def _group_twin(data: ReportData, members: list[ReportFinding]) -> str:
    """The twin test of a group: its one finding's, or its strongest finding's with a twin gap."""
    compared = [f for f in members if f.compares]
    if not compared:
        return ""
    if len(compared) == 1:
        return twin_text(compared[0])
    tested = [f for f in compared if f.twin is not None]
    if not tested:
        return "no twin samples"
    strongest = min(tested, key=strength)
    text = f"at the strongest ({_labels(data, [strongest.sha])}): {twin_text(strongest)}"
    missing = len(compared) - len(tested)
    if missing:
        text += f"; no twin samples at {missing} of {len(compared)}"
    return text


def _exposing_edits(data: ReportData, members: list[ReportFinding]) -> list[str]:
    """Labels of the revisions whose own edits first exposed the findings' scenarios.

    Findings against an older baseline count exposure since then, so a group of them can sit on
    revisions that exposed nothing themselves; this names the edits that did.
    """
    found: dict[int, str] = {}
    for finding in members:
        end = data.revision(finding.sha or "")
        if end is None:
            continue
        start = data.revision(finding.baseline_sha or "")
        for scenario in finding.exposed_scenarios:
            revision = data.first_exposed(scenario, start, end)
            if revision is not None:
                found[revision.seq] = revision.label
    return [found[seq] for seq in sorted(found)]


def _without_model(summary: str, model: str) -> str:
    """The summary without a leading "model: " (the card already names the model)."""
    prefix = f"{model}: "
    return summary[len(prefix) :] if summary.startswith(prefix) else summary


def _kind_word(kind: str) -> str:
    return {"collapse": "collapse to near 0%"}.get(kind, kind)


def _where(
    data: ReportData, model: str, comparison: str, baseline_model: str, members: list[ReportFinding]
) -> str:
    """What was compared and how often it showed the change."""
    count = len(members)
    if comparison == "model_version":
        possible = _shared_revisions(data, baseline_model, model)
        return f"vs {baseline_model} at {count} of {max(possible, count)} spec revisions"
    labels = _labels(data, [f.sha for f in members])
    if comparison == "point":
        return f"at {labels}" if count == 1 else f"at {count} revisions ({labels})"
    if comparison == "consecutive":
        if count == 1:
            return f"vs the previous spec revision at {labels}"
        return f"vs the previous spec revision at {count} revisions ({labels})"
    baselines = {f.baseline_sha for f in members}
    start = data.revision(next(iter(baselines)) or "") if len(baselines) == 1 else None
    anchor = start.label if start else "an earlier spec revision"
    if count == 1:
        return f"vs {anchor} at {labels}"
    return f"vs {anchor} at {count} later revisions ({labels})"


def _shared_revisions(data: ReportData, first: str, second: str) -> int:
    """Revisions in range where both models have a covert rate (comparisons that were possible)."""
    rated = {(p.model, p.sha) for p in data.rates if p.covert is not None}
    return sum(1 for r in data.revisions if (first, r.sha) in rated and (second, r.sha) in rated)


def _labels(data: ReportData, shas: Sequence[str | None], limit: int = 3) -> str:
    revisions = [r for r in (data.revision(s or "") for s in shas) if r is not None]
    shown = ", ".join(r.label for r in revisions[:limit])
    return shown + (f" and {len(revisions) - limit} more" if len(revisions) > limit else "")


def _points(delta: float) -> str:
    return f"{100 * delta:+.1f}".replace("-", "−")


def _change_range(members: list[ReportFinding]) -> str:
    """'+19.1 to +36.0 points', smallest change first, or one number for one finding.

    Changes measured on the exposed scenarios alone, or on the public scenarios that have sealed
    twins (a finding of the twin test), are different quantities from changes of the whole set
    (a patch can move two scenarios by 80 points and the set by 5), so they get their own range,
    said as such.
    """
    exposed = [f for f in members if f.exposed_only is not None]
    twinned = [f for f in members if f.twin_only is not None and f.exposed_only is None]
    whole = [f for f in members if f not in exposed and f not in twinned]
    parts = []
    if whole:
        parts.append(_range(whole))
    if exposed:
        parts.append(f"{_range(exposed)} on the exposed scenarios")
    if twinned:
        parts.append(f"{_range(twinned)} on the public scenarios with sealed twins")
    if whole and (exposed or twinned):
        parts[0] += " on all scenarios"
    return "; ".join(parts)


def _range(members: list[ReportFinding]) -> str:
    deltas = sorted((f.delta for f in members if f.delta is not None), key=abs)
    if not deltas:
        return "change not stored"
    if len(deltas) == 1 or _points(deltas[0]) == _points(deltas[-1]):
        return f"{_points(deltas[0])} points"
    return f"{_points(deltas[0])} to {_points(deltas[-1])} points"


def _q_bound(members: list[ReportFinding]) -> str:
    """The largest FDR-adjusted q of the group: every member is at least this significant."""
    qs = [f.q_value for f in members if f.q_value is not None]
    if not qs:
        return "q not stored"
    if len(qs) == 1:
        return f"q = {qs[0]:.2g}"
    return f"q ≤ {ceil_2g(max(qs))}"


def ceil_2g(value: float) -> str:
    """``value`` rounded up to two significant digits, so a bound stays one (0.01234 -> 0.013)."""
    if value <= 0:
        return "0"
    step = 10 ** (math.floor(math.log10(value)) - 1)
    # The small tolerance keeps 0.012 from becoming 0.013 through float noise in the division.
    return f"{math.ceil(value / step - 1e-9) * step:.2g}"
