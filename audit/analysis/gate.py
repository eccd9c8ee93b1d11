"""The pre-release gate: did the candidate regress against the baseline, or improve for the
wrong reasons?

One comparison per model (candidate model at the candidate revision against the baseline model at
the baseline revision), tested and attributed as detection does, plus a leak check of the
candidate spec's whole text. The gate fails on

* a significant regression larger than ``GateConfig.max_regression_points``;
* a leak (``fail_on_leak``): the canary or near-verbatim scenario text anywhere in the candidate
  spec, including text that was already in the baseline spec;
* a significant drop (or collapse) with spec patching or eval awareness as its primary cause and
  a share above ``max_patching_share`` / ``max_awareness_share``, or whose patching and awareness
  shares together exceed ``max_non_genuine_share`` (two causes of 45% each are 90% of a drop
  that is not genuine).

Spec patching is recognised by exposure (the spec edits name the scenarios that dropped) and by
the sealed twins (the public scenarios dropped and their unseen twins did not), which needs no
text matching. A comparison without twin samples is passed or failed on exposure alone, and the
gate says so in a warning.

The gate answers a per-model, directional question, so its tests differ from detection's: each
model's comparison is its own false-discovery-rate family (other models in the run never change a
model's verdict), the rise is tested one-sided on its own ("did it regress?"), and the drop
one-sided over all scenarios and over the exposed ones, corrected together ("did it improve,
and where?"). Nothing is written to the database.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from audit.analysis.counterfactual import load_causal_evidence
from audit.analysis.estimates import load_cells
from audit.analysis.evaluate import Context, evaluate_comparisons
from audit.analysis.findings import Finding, leak_finding
from audit.analysis.points import (
    Comparison,
    Point,
    load_revisions,
    refuse_mixed_sets,
    resolve_ref,
)
from audit.config import AuditConfig
from audit.errors import AuditError
from audit.progress import NullProgress, Progress
from audit.records import SpecRevision
from audit.store import Store

if TYPE_CHECKING:
    from audit.heldout.loader import HeldoutSet

GATE_CHECKS: dict[str, str] = {
    "regression": "no significant regression",
    "spec_patching": "drop not explained by spec patching",
    "eval_awareness": "drop not explained by eval awareness",
    "non_genuine": "drop not explained by spec patching and eval awareness together",
    "leak": "no held-out text in the candidate spec",
}
"""The checks the gate makes for each model comparison, and what passing each means."""


@dataclass(frozen=True)
class GateCheck:
    """One check of one model comparison (``model`` as ``baseline -> candidate`` when the two
    models differ): passed, or failed with the reason."""

    model: str
    check: str
    reason: str | None = None

    @property
    def passed(self) -> bool:
        return self.reason is None

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "check": self.check,
            "passed": self.passed,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class GateResult:
    """The gate's verdict, the reasons for a failure and the comparisons it checked."""

    passed: bool
    reasons: tuple[str, ...]
    findings: tuple[Finding, ...]
    baseline_rev: str
    candidate_rev: str
    #: Things the verdict could not check, said loudly (a comparison without sealed twins,
    #: samples that failed and are missing from a compared point).
    warnings: tuple[str, ...] = ()
    #: Every check of every model comparison (:data:`GATE_CHECKS`), for CI test reports.
    checks: tuple[GateCheck, ...] = ()

    @property
    def exit_code(self) -> int:
        """0 when the gate passes, 1 when it fails."""
        return 0 if self.passed else 1

    def to_json(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "baseline_rev": self.baseline_rev,
            "candidate_rev": self.candidate_rev,
            "reasons": list(self.reasons),
            "warnings": list(self.warnings),
            "checks": [c.to_json() for c in self.checks],
            "findings": [f.to_json() for f in self.findings],
        }

    def markdown(self) -> str:
        """A Markdown summary for a CI job summary."""
        verdict = "PASSED" if self.passed else "FAILED"
        lines = [
            f"## specdrift gate: {verdict}",
            "",
            f"Baseline `{self.baseline_rev[:12]}`, candidate `{self.candidate_rev[:12]}`.",
            "",
            "| model | kind | covert rate (95% CI) | change (points) | q | primary cause |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for f in self.findings:
            lines.append(
                f"| {compared_models(f)} | {f.kind} | {_rate_cell(f)} | {_delta_cell(f)} | "
                f"{'' if f.q_value is None else f'{f.q_value:.3g}'} | {f.primary_cause or ''} |"
            )
        lines.append("")
        lines.extend(f"> **Warning:** {warning}\n" for warning in self.warnings)
        if self.reasons:
            lines.append("Reasons for failure:")
            lines.extend(f"- {reason}" for reason in self.reasons)
        else:
            lines.append("No regression, leak, or drop explained by patching or awareness.")
        lines.extend(["", *(f"- {f.summary}" for f in self.findings)])
        return "\n".join(lines) + "\n"


def compared_models(finding: Finding) -> str:
    """The model a finding is about, or ``baseline -> candidate`` when two were compared."""
    if finding.model == finding.baseline_model:
        return finding.model
    return f"{finding.baseline_model} -> {finding.model}"


def _rate_cell(finding: Finding) -> str:
    if finding.rate is None:
        return ""
    return (
        f"{100 * finding.rate:.1f}% ({100 * (finding.ci_low or 0):.1f}-"
        f"{100 * (finding.ci_high or 0):.1f}%)"
    )


def _delta_cell(finding: Finding) -> str:
    return "" if finding.delta is None else f"{100 * finding.delta:+.1f}"


def gate(
    store: Store,
    config: AuditConfig,
    *,
    baseline: str,
    candidate: str,
    model: str | None = None,
    baseline_model: str | None = None,
    source_id: str | None = None,
    heldout: HeldoutSet | None = None,
    set_hash: str | None = None,
    progress: Progress | None = None,
) -> GateResult:
    """Compare the candidate (revision, model) with the baseline and decide pass or fail.

    Only the samples of one held-out set are compared: ``set_hash``, else the set
    ``heldout.path`` of the config names; without either, samples of several sets are refused.
    """
    progress = progress or NullProgress()
    sources = load_revisions(store, source_id)
    if len(sources) > 1:
        raise AuditError(
            f"{len(sources)} spec sources are stored ({', '.join(sorted(sources))}): "
            "pass --source to choose one"
        )
    source, revisions = next(iter(sources.items()))
    base_rev = resolve_ref(store, baseline, source, revisions)
    cand_rev = resolve_ref(store, candidate, source, revisions)
    context = Context(config, heldout, progress)
    context.causal = load_causal_evidence(store)
    if set_hash is None and config.heldout.path is not None and context.heldout is not None:
        set_hash = context.heldout.set_hash
    comparisons = _gate_comparisons(store, base_rev, cand_rev, model, baseline_model, set_hash)
    findings = evaluate_comparisons(comparisons, context, mode="gate")
    leak = context.leaks(cand_rev)
    if leak:
        # Whatever the scores do, and whether or not the baseline spec already carried it.
        at_baseline = bool(context.leaks(base_rev))
        findings.append(
            leak_finding(base_rev, cand_rev, leak, context, already_at_baseline=at_baseline)
        )
    reasons = tuple(r for f in findings if (r := failure_reason(f, config)) is not None)
    warnings = [*_twin_warnings(findings), *_missing_warnings(store, comparisons)]
    return GateResult(
        passed=not reasons,
        reasons=reasons,
        findings=tuple(findings),
        baseline_rev=base_rev.sha,
        candidate_rev=cand_rev.sha,
        warnings=tuple(warnings),
        checks=tuple(gate_checks(findings, config)),
    )


def gate_checks(findings: list[Finding], config: AuditConfig) -> list[GateCheck]:
    """Every check of :data:`GATE_CHECKS` for each compared model; a leak of the candidate
    spec fails the leak check of every model (each one's release is gated on that spec)."""
    leaks = [f for f in findings if f.kind == "leak"]
    leak_reasons = [r for f in leaks if (r := failure_reason(f, config)) is not None]
    checks = []
    for finding in findings:
        if finding.kind == "leak":
            continue
        failed = check_failures(finding, config)
        model = compared_models(finding)
        for check in GATE_CHECKS:
            reason = ("; ".join(leak_reasons) or None) if check == "leak" else failed.get(check)
            checks.append(GateCheck(model, check, reason))
    return checks


def _missing_warnings(store: Store, comparisons: list[Comparison]) -> list[str]:
    """One warning per compared point with samples that failed and were never stored: its
    rate rests on the samples that were (a scenario whose samples keep failing counts less)."""
    from audit.analysis.failures import missing_samples

    warnings: list[str] = []
    for comparison in comparisons:
        for role, point in (("baseline", comparison.before), ("candidate", comparison.after)):
            missing = missing_samples(
                store, models=[point.model], content_hashes=[point.revision.content_hash]
            )
            warnings.extend(
                f"{point.model} at the {role} {point.revision.sha[:7]}: {m.describe()}; the "
                "rates rest on the stored samples: rerun `audit run` to complete them"
                for m in missing
            )
    return list(dict.fromkeys(warnings))


def _twin_warnings(findings: list[Finding]) -> list[str]:
    """One warning per model comparison that had no sealed-twin samples at both revisions."""
    return [
        f"{compared_models(f)}: no sealed-twin samples at both revisions, so a spec patch that "
        "retells the scenarios without naming them cannot be told from a real improvement; "
        "run the twins too (the default; drop --no-twins / run.twins = false)"
        for f in findings
        if f.kind != "leak" and f.twin_gap is None
    ]


def _gate_comparisons(
    store: Store,
    base_rev: SpecRevision,
    cand_rev: SpecRevision,
    model: str | None,
    baseline_model: str | None,
    set_hash: str | None = None,
) -> list[Comparison]:
    if baseline_model and not model:
        raise AuditError("--baseline-model needs --model (the candidate model)")
    wanted = [m for m in (model, baseline_model) if m]
    cells = load_cells(store, models=wanted or None, set_hash=set_hash)
    relevant = {
        k: c
        for k, c in cells.items()
        if k.content_hash in (base_rev.content_hash, cand_rev.content_hash)
    }
    refuse_mixed_sets(relevant)
    at_base = {k.model: c for k, c in relevant.items() if k.content_hash == base_rev.content_hash}
    at_cand = {k.model: c for k, c in relevant.items() if k.content_hash == cand_rev.content_hash}
    pairs = (
        [(baseline_model or model, model)]
        if model
        else [(m, m) for m in sorted(set(at_base) & set(at_cand))]
    )
    comparisons = []
    for old, new in pairs:
        missing = [
            f"{m} at {r.sha[:7]}"
            for m, r, have in ((old, base_rev, at_base), (new, cand_rev, at_cand))
            if m not in have
        ]
        if missing:
            raise AuditError(
                f"no samples for {' and '.join(missing)}: run `audit run` for those points first"
            )
        comparisons.append(
            Comparison(
                "gate", Point(old, base_rev, at_base[old]), Point(new, cand_rev, at_cand[new])
            )
        )
    if not comparisons:
        raise AuditError(
            f"no model has samples at both {base_rev.sha[:7]} and {cand_rev.sha[:7]}: "
            "run `audit run` for both revisions first"
        )
    return comparisons


def failure_reason(finding: Finding, config: AuditConfig) -> str | None:
    """Why this finding fails the gate, or None when it does not."""
    return next(iter(check_failures(finding, config).values()), None)


def check_failures(finding: Finding, config: AuditConfig) -> dict[str, str]:
    """The checks of :data:`GATE_CHECKS` this finding fails, each with its reason (at most
    one: a drop fails the combined check only when neither single cause exceeds its limit)."""
    limits = config.gate
    if finding.kind == "leak":
        return {"leak": f"leak: {finding.summary}"} if limits.fail_on_leak else {}
    delta_points = 100 * (finding.delta or 0.0)
    if finding.kind == "regression" and delta_points > limits.max_regression_points:
        return {"regression": finding.summary}
    if finding.kind in ("drop", "collapse") and finding.causes:
        return _drop_failure(finding, config)
    return {}


def _drop_failure(finding: Finding, config: AuditConfig) -> dict[str, str]:
    limits = config.gate
    patching = finding.share("spec_patching")
    awareness = finding.share("eval_awareness")
    if finding.primary_cause == "spec_patching" and patching > limits.max_patching_share:
        return {
            "spec_patching": f"{finding.model}: {100 * patching:.0f}% of the drop is explained "
            f"by spec patching (limit {100 * limits.max_patching_share:.0f}%)"
        }
    if finding.primary_cause == "eval_awareness" and awareness > limits.max_awareness_share:
        return {
            "eval_awareness": f"{finding.model}: {100 * awareness:.0f}% of the drop is "
            f"explained by eval awareness (limit {100 * limits.max_awareness_share:.0f}%)"
        }
    if patching + awareness > limits.max_non_genuine_share:
        return {
            "non_genuine": f"{finding.model}: {100 * (patching + awareness):.0f}% of the drop "
            f"is explained by spec patching ({100 * patching:.0f}%) and eval awareness "
            f"({100 * awareness:.0f}%) together (limit {100 * limits.max_non_genuine_share:.0f}%)"
        }
    return {}
