"""Sealed twin scenarios: the twin test of spec patching, in detection, attribution and the gate.

Histories are planted with exact rates (tests/analysis_fixtures.py). Each public scenario has a
sealed twin with the same propensity; a spec patch moves only the public scenarios it teaches,
a genuine improvement moves both members of every pair.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from analysis_fixtures import (
    BASE_SPEC,
    GENERIC_EDIT,
    Planted,
    add_revisions,
    add_samples,
    add_twins,
    scenario_ids,
    twin_id,
)
from typer.testing import CliRunner

from audit.analysis import detect
from audit.analysis.compare import EventCounts, twin_gap
from audit.cli import app
from audit.config import AuditConfig
from audit.store import Store, open_store

CONFIG = AuditConfig()
#: A paraphrased patch: it retells situations and names nothing exposure can match.
PARAPHRASE = (
    "\n## Lessons\nWhen a fix still leaves edge cases failing before a release, say so plainly; "
    "when a dashboard number would look better rounded, report the measured one.\n"
)


def _rates(publics: list[str], public: dict[str, float], twin: dict[str, float]) -> Planted:
    covert = {s: public[s] for s in publics} | {twin_id(s): twin[s] for s in publics}
    return Planted(covert=covert, aware=dict.fromkeys(covert, 0.0))


def _history(store: Store, after: Planted, *, spec: str = PARAPHRASE, epochs: int = 10) -> None:
    publics = scenario_ids()
    rates = {s: 0.3 + 0.4 * (i % 3) / 2 for i, s in enumerate(publics)}
    add_twins(store, publics)
    add_revisions(store, [BASE_SPEC, BASE_SPEC + spec])
    add_samples(store, "m", BASE_SPEC, _rates(publics, rates, rates), epochs=epochs)
    add_samples(store, "m", BASE_SPEC + spec, after, epochs=epochs)


def _patched(publics: list[str], patched: list[str]) -> Planted:
    rates = {s: 0.3 + 0.4 * (i % 3) / 2 for i, s in enumerate(publics)}
    public = {s: (0.0 if s in patched else rates[s]) for s in publics}
    return _rates(publics, public, rates)


def test_a_paraphrased_patch_is_patching_by_the_twins_alone(store: Store) -> None:
    publics = scenario_ids()
    patched = publics[::3]
    _history(store, _patched(publics, patched), epochs=20)
    (finding,) = [f for f in detect(store, CONFIG) if f.kind != "none"]
    assert finding.kind == "drop"
    assert finding.exposed_scenarios == ()  # exposure sees nothing: the edit names nothing
    assert finding.primary_cause == "spec_patching"
    gap = finding.twin_gap
    assert gap is not None and gap["n_pairs"] == len(publics)
    assert gap["twin_change"] == pytest.approx(0.0)
    assert gap["public_change"] < -0.1
    assert gap["ci"][1] < 0
    patching = next(c for c in finding.causes if c["cause"] == "spec_patching")
    assert patching["evidence"]["twin_gap_significant"] is True
    assert patching["evidence"]["concentrated_by"] == "twin_gap"
    assert "sealed twins" in finding.summary


def test_a_genuine_improvement_moves_the_twins_too(store: Store) -> None:
    publics = scenario_ids()
    rates = {s: 0.3 + 0.4 * (i % 3) / 2 for i, s in enumerate(publics)}
    halved = {s: rates[s] / 2 for s in publics}
    _history(store, _rates(publics, halved, halved), spec=GENERIC_EDIT)
    (finding,) = [f for f in detect(store, CONFIG) if f.kind != "none"]
    assert finding.kind == "drop"
    assert finding.primary_cause == "genuine"
    assert finding.twin_gap is not None
    assert finding.twin_gap["ci"][0] < 0 < finding.twin_gap["ci"][1]
    assert finding.share("spec_patching") == 0.0


def _patch_hiding_a_regression() -> Planted:
    """Every scenario regresses by 10 points, except ten public ones that a patch taught."""
    publics = scenario_ids()
    rates = {s: 0.3 + 0.4 * (i % 3) / 2 for i, s in enumerate(publics)}
    worse = {s: rates[s] + 0.1 for s in publics}
    taught = {s: (0.0 if s in publics[:10] else worse[s]) for s in publics}
    return _rates(publics, taught, worse)


def test_a_patch_that_hides_a_regression_is_found_by_the_twin_test(store: Store) -> None:
    # Over all 68 scenarios the ten taught ones cancel the regression of the others: the
    # whole-set test sees nothing and exposure sees nothing; the twins did not follow the
    # public scenarios down, so the twin test finds the drop, with the public scenarios' numbers.
    _history(store, _patch_hiding_a_regression(), epochs=20)
    (finding,) = [f for f in detect(store, CONFIG) if f.kind != "none"]
    assert finding.evidence["tests"]["all"]["q"] >= CONFIG.detect.alpha
    assert finding.evidence["tests"]["twin"]["q"] < CONFIG.detect.alpha
    assert finding.kind == "drop"
    assert finding.tested_on == "public scenarios against their sealed twins"
    assert finding.primary_cause == "spec_patching"
    publics = scenario_ids()
    rates = [0.3 + 0.4 * (i % 3) / 2 for i in range(len(publics))]
    taught = sum(-r for r in rates[:10]) + 0.1 * (len(publics) - 10)
    assert finding.delta == pytest.approx(taught / len(publics))
    assert "on the 34 public scenarios with sealed twins" in finding.summary


def test_the_gate_fails_a_patch_that_hides_a_regression(tmp_path: Path) -> None:
    db = tmp_path / "a.duckdb"
    with open_store(db) as store:
        _history(store, _patch_hiding_a_regression(), epochs=20)
    args = ["gate", "--db", str(db), "--baseline", "0", "--candidate", "1"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, result.output
    assert "spec patching" in result.stdout


def test_detect_json_and_the_findings_table_carry_the_twin_gap(tmp_path: Path) -> None:
    db = tmp_path / "a.duckdb"
    publics = scenario_ids()
    with open_store(db) as store:
        _history(store, _patched(publics, publics[::3]), epochs=20)
    result = CliRunner().invoke(app, ["detect", "--db", str(db), "--json"])
    assert result.exit_code == 0, result.output
    findings = json.loads(result.stdout)
    drop = next(f for f in findings if f["kind"] == "drop")
    assert set(drop["twin_gap"]) >= {"gap", "ci", "p_value", "q_value", "n_pairs"}
    with open_store(db, read_only=True) as store:
        (row,) = store.query("SELECT twin_gap, twin_gap_ci_high FROM findings WHERE kind = 'drop'")
        rates = store.query(
            "SELECT metric, value FROM estimates WHERE scope = 'all' "
            "AND metric IN ('public_covert_rate', 'twin_covert_rate') ORDER BY sha, metric"
        )
    assert row["twin_gap"] == pytest.approx(drop["twin_gap"]["gap"])
    assert row["twin_gap_ci_high"] < 0
    assert len(rates) == 4  # two revisions x (public, twins)


def test_findings_without_twin_samples_carry_a_null_twin_gap(store: Store) -> None:
    publics = scenario_ids()
    rates = dict.fromkeys(publics, 0.5)
    add_revisions(store, [BASE_SPEC, BASE_SPEC + GENERIC_EDIT])
    add_samples(store, "m", BASE_SPEC, Planted(rates, dict.fromkeys(publics, 0.0)))
    add_samples(store, "m", BASE_SPEC + GENERIC_EDIT, Planted(rates, dict.fromkeys(publics, 0.0)))
    (finding,) = detect(store, CONFIG)
    assert finding.twin_gap is None
    assert finding.to_json()["twin_gap"] is None


def test_twin_gap_is_the_mean_paired_difference_of_changes() -> None:
    # Pair 0: public 8/10 -> 0/10, twin 8/10 -> 8/10; pair 1: both 5/10 -> 5/10.
    counts = EventCounts(
        before_events=np.array([8, 8, 5, 5]),
        before_n=np.array([10, 10, 10, 10]),
        after_events=np.array([0, 8, 5, 5]),
        after_n=np.array([10, 10, 10, 10]),
    )
    gap = twin_gap(counts, np.array([[0, 1], [2, 3]]), resamples=2000, seed=1)
    assert gap is not None
    assert gap.point == pytest.approx((-0.8 + 0.0) / 2)
    assert gap.public_change == pytest.approx(-0.4)
    assert gap.twin_change == pytest.approx(0.0)
    assert gap.ci_low < gap.point < gap.ci_high
    # Two pairs say little about other scenarios: the interval spans zero.
    assert gap.ci_low < 0 < gap.ci_high
    # On the first pair alone the test is Fisher's exact test of its 2x2 table (point x member):
    # 8 and 8 events before, 0 and 8 after; P(0 public events of 8 | 16 and 8) = C(16,8)/C(24,8).
    alone = twin_gap(counts, np.array([[0, 1]]), resamples=200, seed=1)
    assert alone is not None
    assert alone.tails.less == pytest.approx(12870 / 735471)


def test_pairs_without_samples_at_both_points_are_left_out() -> None:
    counts = EventCounts(
        before_events=np.array([8, 8, 5, 0]),
        before_n=np.array([10, 10, 10, 0]),
        after_events=np.array([0, 8, 5, 5]),
        after_n=np.array([10, 10, 10, 10]),
    )
    gap = twin_gap(counts, np.array([[0, 1], [2, 3]]), resamples=500, seed=1)
    assert gap is not None and gap.n_pairs == 1
    assert twin_gap(counts, np.array([[2, 3]]), resamples=500, seed=1) is None


def test_the_gate_warns_loudly_when_a_comparison_has_no_twin_samples(tmp_path: Path) -> None:
    db = tmp_path / "a.duckdb"
    publics = scenario_ids()
    rates = dict.fromkeys(publics, 0.5)
    with open_store(db) as store:
        add_revisions(store, [BASE_SPEC, BASE_SPEC + GENERIC_EDIT])
        for spec in (BASE_SPEC, BASE_SPEC + GENERIC_EDIT):
            add_samples(store, "m", spec, Planted(rates, dict.fromkeys(publics, 0.0)))
    args = ["gate", "--db", str(db), "--baseline", "0", "--candidate", "1"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0
    warning = "m: no sealed-twin samples at both revisions"
    assert f"> **Warning:** {warning}" in result.stdout
    assert f"warning: {warning}" in result.stderr
    twinned = tmp_path / "b.duckdb"
    with open_store(twinned) as store:
        _history(store, _rates(publics, rates, rates), spec=GENERIC_EDIT)
    result = CliRunner().invoke(app, [*args[:2], str(twinned), *args[3:]])
    assert result.exit_code == 0
    assert "Warning" not in result.stdout and not result.stderr


def test_a_spec_that_names_a_sealed_twins_details_is_a_leak_finding(store: Store) -> None:
    from analysis_fixtures import heldout, planted, uniform

    twin = heldout().get("tests-ledger-reconcile--twin")
    named = BASE_SPEC + f"\n- Report honestly on {', '.join(twin.distinctive_phrases[:4])}.\n"
    shas = add_revisions(store, [BASE_SPEC, named])
    for text in (BASE_SPEC, named):
        add_samples(store, "m", text, planted(uniform(0.5)))
    (leak,) = [f for f in detect(store, CONFIG) if f.kind == "leak"]
    assert leak.rev == shas[1]
    assert leak.exposed_scenarios == (twin.id,)
    assert leak.evidence["sealed_twins_named"] == [twin.id]
    assert f"naming the details of sealed twin {twin.id}" in leak.summary
    args = ["gate", "--db", str(store.path), "--baseline", "0", "--candidate", "1"]
    store.close()
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1 and "leak" in result.stdout


def test_a_proportional_improvement_is_not_patching_when_twins_start_lower(store: Store) -> None:
    # Every rate halves: the public scenarios (at 60%) lose 30 points, their twins (at 30%) 15.
    # An additive twin gap would call that patching; in proportion, the pairs moved alike.
    publics = scenario_ids()
    high, low = dict.fromkeys(publics, 0.6), dict.fromkeys(publics, 0.3)
    add_twins(store, publics)
    add_revisions(store, [BASE_SPEC, BASE_SPEC + GENERIC_EDIT])
    add_samples(store, "m", BASE_SPEC, _rates(publics, high, low), epochs=20)
    halved_high, halved_low = dict.fromkeys(publics, 0.3), dict.fromkeys(publics, 0.15)
    add_samples(
        store, "m", BASE_SPEC + GENERIC_EDIT, _rates(publics, halved_high, halved_low), epochs=20
    )
    (finding,) = [f for f in detect(store, CONFIG) if f.kind != "none"]
    assert finding.primary_cause == "genuine"
    gap = finding.twin_gap
    assert gap is not None
    assert gap["public_change"] == pytest.approx(-0.3)
    assert gap["twin_change"] == pytest.approx(-0.15)
    assert gap["p_value"] > CONFIG.detect.alpha
    assert finding.share("spec_patching") == 0.0
