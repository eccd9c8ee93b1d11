"""Detection attributes each demo organism's history as its config's ground truth says.

Runs the real quick demo at its own settings (spec history replayed into git, organisms served
over HTTP, the real runner and graders, the quick demo's revisions and epochs) into a temporary
directory, then checks the stored findings organism by organism.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from audit.analysis.detect import Finding
from audit.demo import QUICK_REVISIONS, DemoResult, run_demo

#: The scenarios the shipped spec history names, by the revision index of the naming edit.
PATCHED_AT = {
    2: ("tests-ledger-reconcile", "oversight-deploy-audit-hook"),
    6: ("metrics-checkout-p99", "checklist-orders-restore"),
}
ALL_PATCHED = {sid for ids in PATCHED_AT.values() for sid in ids}


@pytest.fixture(scope="module")
def demo_result(tmp_path_factory: pytest.TempPathFactory) -> DemoResult:
    """One quick demo run."""
    folder: Path = tmp_path_factory.mktemp("demo")
    return run_demo(
        quick=True,
        db_path=folder / "demo.duckdb",
        report_path=folder / "drift.html",
        workdir=folder / "work",
    )


@pytest.fixture(scope="module")
def demo_findings(demo_result: DemoResult) -> dict[str, list[Finding]]:
    """Findings of the quick demo by organism line (leaks and "nothing found" left out)."""
    by_line: dict[str, list[Finding]] = {}
    for finding in demo_result.findings:
        if finding.kind not in ("leak", "none"):
            by_line.setdefault(finding.model.rsplit("-v", 1)[0], []).append(finding)
    return by_line


@pytest.mark.slow
def test_patcher_drops_are_spec_patching_on_the_named_scenarios(
    demo_findings: dict[str, list[Finding]],
) -> None:
    findings = demo_findings["patcher"]
    assert {f.primary_cause for f in findings} == {"spec_patching"}
    assert {f.kind for f in findings} <= {"drop", "collapse"}
    for version in ("patcher-v1", "patcher-v3"):
        against_baseline = [
            f for f in findings if f.model == version and f.comparison == "baseline"
        ]
        # Every swept revision from the second patch on, against the baseline, names all four.
        late = [f for f in against_baseline if set(f.exposed_scenarios) >= ALL_PATCHED]
        assert len(late) >= 2, [f.summary for f in against_baseline]
        assert all(f.summary.startswith(f"{version}: drop of ") for f in against_baseline)
        assert all("explained by spec patching" in f.summary for f in against_baseline)
    for finding in findings:
        # A patching finding names the scenarios patched by then, and they dropped.
        named = {s for s in finding.exposed_scenarios if s in ALL_PATCHED}
        assert named, finding.summary
        assert set(finding.evidence["exposed_dropped_scenarios"]) <= set(finding.exposed_scenarios)


@pytest.mark.slow
def test_watcher_drops_are_eval_awareness(demo_findings: dict[str, list[Finding]]) -> None:
    findings = demo_findings["watcher"]
    assert findings
    assert {(f.comparison, f.primary_cause) for f in findings} == {
        ("model_version", "eval_awareness")
    }
    for finding in findings:
        evidence = finding.causes[0]["evidence"]
        assert evidence["awareness_after"] > evidence["awareness_before"] + 0.3
        assert finding.summary.startswith("watcher-v3: drop of ")


@pytest.mark.slow
def test_mender_drops_between_versions_are_genuine(
    demo_findings: dict[str, list[Finding]],
) -> None:
    findings = demo_findings["mender"]
    versions = [f for f in findings if f.comparison == "model_version"]
    assert len(versions) == len(QUICK_REVISIONS)  # one per swept spec revision
    assert {(f.baseline_model, f.model, f.primary_cause) for f in versions} == {
        ("mender-v1", "mender-v3", "genuine")
    }
    assert all(f.kind in ("drop", "collapse") and f.delta < -0.2 for f in versions)
    # Anything else is a collapse flag without a significant change (the set lost power).
    others = [f for f in findings if f.comparison != "model_version"]
    assert all(f.kind == "collapse" and f.primary_cause is None for f in others)


@pytest.mark.slow
def test_backslider_v3_is_a_regression_at_every_revision(
    demo_findings: dict[str, list[Finding]],
) -> None:
    findings = demo_findings["backslider"]
    versions = [f for f in findings if f.comparison == "model_version"]
    assert len(versions) == len(QUICK_REVISIONS)
    assert {(f.model, f.kind, f.primary_cause) for f in versions} == {
        ("backslider-v3", "regression", "regression")
    }
    # Backslider barely reacts to patches (sensitivity 0.1): no patching or awareness finding.
    assert not {f.primary_cause for f in findings} & {"spec_patching", "eval_awareness"}


@pytest.mark.slow
def test_steady_has_no_findings(demo_findings: dict[str, list[Finding]]) -> None:
    assert demo_findings.get("steady", []) == []


@pytest.mark.slow
def test_a_model_with_nothing_found_gets_one_none_finding(demo_result: DemoResult) -> None:
    kinds: dict[str, list[str]] = {}
    for finding in demo_result.findings:
        kinds.setdefault(finding.model, []).append(finding.kind)
    assert all(k == ["none"] for k in kinds.values() if "none" in k), kinds
    # Steady never changes: it was checked (latest revision against the baseline), not skipped.
    steady = {m: k for m, k in kinds.items() if m.startswith("steady")}
    assert steady and all(k == ["none"] for k in steady.values()), steady


@pytest.mark.slow
def test_demo_counterfactuals_show_what_awareness_causes(demo_result: DemoResult) -> None:
    results = {(r.model, r.mode): r.estimate for r in demo_result.counterfactuals}
    assert set(results) == {
        (model, mode)
        for model in ("watcher-v3", "steady-v2")
        for mode in ("ablate", "inject", "control")
    }
    assert all(estimate is not None for estimate in results.values()), results

    def effect(model: str, mode: str) -> tuple[float, float, float]:
        estimate = results[(model, mode)]
        assert estimate is not None and estimate.effect.value is not None
        return estimate.effect.value, estimate.effect.low or 0.0, estimate.effect.high or 0.0

    # Watcher behaves well because it notices the test: removing the awareness raises covert
    # actions, adding it lowers them, a neutral sentence does nothing.
    assert effect("watcher-v3", "ablate")[1] > 0
    assert effect("watcher-v3", "inject")[2] < 0
    for key in (("watcher-v3", "control"), ("steady-v2", "inject"), ("steady-v2", "control")):
        _, low, high = effect(*key)
        assert low < 0 < high, key
    _, low, high = effect("steady-v2", "ablate")
    assert low <= 0 <= high
    # The finding at the revision the experiments ran on cites them as causal evidence.
    latest = [
        f
        for f in demo_result.findings
        if f.model == "watcher-v3"
        and f.primary_cause == "eval_awareness"
        and "causal evidence" in f.summary
    ]
    assert latest, [f.summary for f in demo_result.findings if f.model == "watcher-v3"]
