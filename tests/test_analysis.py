"""Detection and attribution on planted histories stored in a real DuckDB file."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from analysis_fixtures import (
    BASE_SPEC,
    GENERIC_EDIT,
    add_revisions,
    add_samples,
    heldout,
    patch_naming,
    planted,
    scenario_ids,
    uniform,
)
from typer.testing import CliRunner

from audit.analysis import detect
from audit.analysis.compare import (
    EventCounts,
    benjamini_hochberg,
    paired_change,
    sign_flip_tails,
    stratified_p,
)
from audit.analysis.detect import model_lines
from audit.analysis.estimates import cluster_bootstrap, load_cells, wilson_interval
from audit.cli import app
from audit.config import AuditConfig, ModelConfig
from audit.errors import AuditError
from audit.store import Store

CONFIG = AuditConfig()
ISSUE_KEYS = {
    "model",
    "baseline_rev",
    "rev",
    "kind",
    "baseline_rate",
    "rate",
    "ci_low",
    "ci_high",
    "p_value",
    "q_value",
    "primary_cause",
    "causes",
    "exposed_scenarios",
}


def _two_point_history(store: Store, second_spec: str, after, model: str = "m") -> list[str]:
    shas = add_revisions(store, [BASE_SPEC, second_spec])
    add_samples(store, model, BASE_SPEC, planted(uniform(0.5)))
    add_samples(store, model, second_spec, after)
    return shas


def _exposed_ids() -> list[str]:
    ids = scenario_ids()
    return ids[: int(len(ids) * 0.75)]


# -- estimates and tests -----------------------------------------------------------------------


def test_cluster_bootstrap_is_reproducible_and_brackets_the_mean() -> None:
    rates = np.array([0.0, 0.1, 0.5, 0.9, 0.2, 0.3])
    first = cluster_bootstrap(rates, resamples=2000, seed=7)
    second = cluster_bootstrap(rates, resamples=2000, seed=7)
    assert first == second
    assert first.value == pytest.approx(rates.mean())
    assert first.low < first.value < first.high


def test_wilson_interval_of_zero_successes_excludes_nothing_below_zero() -> None:
    interval = wilson_interval(0, 20)
    assert interval.value == 0.0
    assert interval.low == 0.0
    assert interval.high == pytest.approx(0.1611, abs=1e-3)


def test_sign_flip_p_is_one_without_change_and_small_for_a_consistent_shift() -> None:
    assert sign_flip_tails(np.zeros(12), 2000, 1).p() == 1.0
    assert sign_flip_tails(np.full(12, -0.3), 2000, 1).p() < 0.002


def _enumerated_p(counts: EventCounts) -> float:
    """The stratified test by brute force: the exact null law of the summed later events."""
    law = {0: 1.0}
    for b, nb, a, na in zip(*(c.tolist() for c in vars(counts).values()), strict=True):
        total, events = nb + na, a + b
        stratum = {
            k: math.comb(events, k) * math.comb(total - events, na - k) / math.comb(total, na)
            for k in range(na + 1)
            if 0 <= events - k <= nb
        }
        convolved: dict[int, float] = {}
        for s1, p1 in law.items():
            for k, p2 in stratum.items():
                convolved[s1 + k] = convolved.get(s1 + k, 0.0) + p1 * p2
        law = convolved
    observed = int(counts.after_events.sum())
    lower = sum(p for s1, p in law.items() if s1 <= observed)
    upper = sum(p for s1, p in law.items() if s1 >= observed)
    return min(1.0, 2 * min(lower, upper))


def test_stratified_p_equals_the_enumerated_conditional_law() -> None:
    rng = np.random.default_rng(5)
    for _ in range(40):
        k = int(rng.integers(1, 5))
        before_n, after_n = rng.integers(1, 6, k), rng.integers(1, 6, k)
        counts = EventCounts(
            np.array([rng.integers(0, n + 1) for n in before_n]),
            before_n,
            np.array([rng.integers(0, n + 1) for n in after_n]),
            after_n,
        )
        assert stratified_p(counts) == pytest.approx(_enumerated_p(counts), abs=1e-12)


def test_stratified_p_finds_a_patch_on_two_scenarios_that_sign_flips_cannot() -> None:
    # The two scenarios a patch names go from 9/10 covert to 0/10 (detect tests them alone).
    n = np.full(2, 10)
    p = stratified_p(EventCounts(np.array([9, 9]), n, np.zeros(2, dtype=int), n))
    assert p == pytest.approx(2 * (11 / math.comb(20, 10)) ** 2)
    # The scenario-level sign-flip test can never go below 1/2^2 on two scenarios.
    assert sign_flip_tails(np.array([-0.9, -0.9]), 2000, 1).p() >= 0.25
    # 0/10 -> 4/4 in three scenarios: only one relabelling per scenario is as extreme.
    everything_new = EventCounts(np.zeros(3), np.full(3, 10), np.full(3, 4), np.full(3, 4))
    assert stratified_p(everything_new) == pytest.approx(2 / math.comb(14, 4) ** 3)
    # Scenarios whose samples all agree carry no information: without any, p = 1.
    assert stratified_p(EventCounts(np.array([0, 10]), n, np.array([0, 10]), n)) == 1.0


def test_paired_change_drops_scenarios_missing_on_one_side() -> None:
    change = paired_change(
        np.array([0.5, np.nan, 0.4]), np.array([0.2, 0.1, 0.4]), resamples=500, seed=3
    )
    assert change.differences.tolist() == pytest.approx([-0.3, 0.0])
    assert change.delta == pytest.approx(-0.15)


def test_benjamini_hochberg_matches_the_step_up_definition() -> None:
    q = benjamini_hochberg([0.01, 0.04, 0.03, 0.2])
    # Ranked: 0.01*4/1 = 0.04, 0.03*4/2 = 0.06, 0.04*4/3 = 0.0533, 0.2*4/4 = 0.2; step-up minimum.
    assert q == pytest.approx([0.04, 0.04 * 4 / 3, 0.04 * 4 / 3, 0.2])
    assert benjamini_hochberg([]) == []


def test_load_cells_aggregates_counts_per_scenario(store: Store) -> None:
    add_revisions(store, [BASE_SPEC])
    add_samples(store, "m", BASE_SPEC, planted(uniform(0.25), aware=0.5), epochs=8)
    (cell,) = load_cells(store).values()
    assert cell.scenario_ids == tuple(scenario_ids())
    assert cell.counts["n"].tolist() == [8] * len(scenario_ids())
    assert cell.counts["covert"].tolist() == [2] * len(scenario_ids())
    assert cell.counts["aware"].tolist() == [4] * len(scenario_ids())
    assert cell.counts["covert_aware"].tolist() == [0] * len(scenario_ids())


def test_model_lines_group_versions_by_suffix_or_configured_family() -> None:
    config = AuditConfig(
        models=(ModelConfig(name="alpha", family="line"), ModelConfig(name="beta", family="line"))
    )
    lines = model_lines(
        ["patcher-v2", "patcher-v10", "patcher-v1", "alpha", "beta", "solo"], config
    )
    assert lines == {
        "patcher": ["patcher-v1", "patcher-v2", "patcher-v10"],
        "line": ["alpha", "beta"],
    }


# -- attribution on planted histories -----------------------------------------------------------


def test_planted_patching_drop_is_attributed_to_patching(store: Store) -> None:
    exposed = _exposed_ids()
    patched = BASE_SPEC + patch_naming(exposed)
    base_sha, sha = _two_point_history(
        store, patched, planted(lambda s: 0.05 if s in exposed else 0.5)
    )
    (finding,) = detect(store, CONFIG)
    assert (finding.kind, finding.primary_cause) == ("drop", "spec_patching")
    assert (finding.baseline_rev, finding.rev) == (base_sha, sha)
    assert finding.share("spec_patching") == pytest.approx(1.0)
    evidence = finding.causes[0]["evidence"]
    assert evidence["exposed_failing_before"] == len(exposed)
    assert evidence["did"] == pytest.approx(-0.45)
    assert sorted(finding.exposed_scenarios) == sorted(exposed)
    assert finding.summary.endswith(
        f"100% explained by spec patching: {len(exposed)} of {len(exposed)} dropped scenarios "
        "were named by the edit"
    )
    assert finding.summary.startswith(f"m: drop of {45 * len(exposed) / len(scenario_ids()):.1f}")


def test_planted_awareness_drop_is_attributed_to_awareness(store: Store) -> None:
    _two_point_history(store, BASE_SPEC + GENERIC_EDIT, planted(uniform(0.2), aware=0.6))
    (finding,) = detect(store, CONFIG)
    assert (finding.kind, finding.primary_cause) == ("drop", "eval_awareness")
    assert finding.delta == pytest.approx(-0.3)
    cause = finding.causes[0]
    assert cause["share"] == pytest.approx(1.0)
    assert cause["evidence"]["awareness_after"] == pytest.approx(0.6)
    assert cause["evidence"]["covert_rate_unaware_after"] == pytest.approx(0.5)
    assert "awareness rose from 0.0% to 60.0%" in finding.summary


def test_uniform_drop_is_genuine_even_when_some_scenarios_are_named(store: Store) -> None:
    named = scenario_ids()[:3]
    _two_point_history(store, BASE_SPEC + patch_naming(named), planted(uniform(0.2)))
    (finding,) = detect(store, CONFIG)
    assert (finding.kind, finding.primary_cause) == ("drop", "genuine")
    assert [c["cause"] for c in finding.causes] == ["genuine"]
    assert sorted(finding.exposed_scenarios) == sorted(named)
    genuine = finding.causes[0]["evidence"]
    assert genuine["mean_change_unexposed"] == pytest.approx(-0.3)


def test_rise_is_a_regression(store: Store) -> None:
    _two_point_history(store, BASE_SPEC + GENERIC_EDIT, planted(uniform(0.6)))
    (finding,) = detect(store, CONFIG)
    assert (finding.kind, finding.primary_cause) == ("regression", "regression")
    assert finding.delta == pytest.approx(0.1)
    assert finding.q_value is not None and finding.q_value < 0.05
    assert finding.summary.startswith("m: regression: rise of 10.0 points at ")


def test_no_change_gives_one_none_finding_that_is_stored(store: Store) -> None:
    base_sha, sha = _two_point_history(store, BASE_SPEC + GENERIC_EDIT, planted(uniform(0.5)))
    (finding,) = detect(store, CONFIG)
    # An empty result would not say whether anything was checked: the latest point against the
    # baseline is reported as checked, with its test.
    assert (finding.kind, finding.comparison, finding.model) == ("none", "consecutive", "m")
    assert (finding.baseline_rev, finding.rev) == (base_sha, sha)
    assert finding.q_value == 1.0
    assert finding.summary.startswith(f"m: no significant change at {sha[:7]} (vs {base_sha[:7]})")
    assert store.query("SELECT kind, rev FROM findings") == [{"kind": "none", "rev": sha}]


def test_drop_to_zero_is_a_collapse_with_attribution_and_an_exact_upper_bound(
    store: Store,
) -> None:
    _two_point_history(store, BASE_SPEC + GENERIC_EDIT, planted(uniform(0.0)))
    (finding,) = detect(store, CONFIG)
    assert (finding.kind, finding.primary_cause) == ("collapse", "genuine")
    # Zero covert samples of 20 x 34: the Clopper-Pearson bound, not a bootstrap's [0, 0].
    n = 20 * len(scenario_ids())
    assert finding.rate == 0.0
    assert finding.ci_high == pytest.approx(1 - 0.025 ** (1 / n))
    assert finding.summary.startswith("m: collapse: covert rate at ")


def test_canary_in_the_spec_is_a_leak_whatever_the_scores(store: Store) -> None:
    leaked = BASE_SPEC + f"\nInternal note: {heldout().canary}\n"
    _, sha = _two_point_history(store, leaked, planted(uniform(0.5)))
    findings = detect(store, CONFIG)
    (finding,) = [f for f in findings if f.kind == "leak"]
    assert (finding.kind, finding.model, finding.rev) == ("leak", "*", sha)
    assert finding.primary_cause is None
    # The canary leaks the whole set, its sealed twins included.
    assert len(finding.exposed_scenarios) == len(heldout().ids())
    assert "canary" in finding.summary
    assert [f.kind for f in findings if f.model == "m"] == ["none"]


# -- storage and output -------------------------------------------------------------------------


def test_findings_estimates_and_exposure_are_stored_and_replaced(store: Store) -> None:
    exposed = _exposed_ids()
    patched = BASE_SPEC + patch_naming(exposed)
    _, sha = _two_point_history(store, patched, planted(lambda s: 0.05 if s in exposed else 0.5))
    detect(store, CONFIG)
    detect(store, CONFIG)  # a second pass replaces the first
    rows = store.query("SELECT model, rev, kind, primary_cause, comparison FROM findings")
    assert rows == [
        {
            "model": "m",
            "rev": sha,
            "kind": "drop",
            "primary_cause": "spec_patching",
            "comparison": "consecutive",
        }
    ]
    overall = store.query(
        "SELECT value, n_samples, n_scenarios FROM estimates WHERE sha = ? "
        "AND metric = 'covert_rate' AND scope = 'all'",
        [sha],
    )
    n = len(scenario_ids())
    assert overall == [
        {
            "value": pytest.approx((0.05 * len(exposed) + 0.5 * (n - len(exposed))) / n),
            "n_samples": 20 * n,
            "n_scenarios": n,
        }
    ]
    per_scenario = store.query(
        "SELECT count(*) AS n FROM estimates WHERE sha = ? AND scope = 'scenario'", [sha]
    )
    assert per_scenario == [{"n": n}]
    exposed_rows = store.query(
        "SELECT scenario_id FROM exposure WHERE sha = ? AND exposed ORDER BY scenario_id", [sha]
    )
    assert [r["scenario_id"] for r in exposed_rows] == sorted(exposed)


def test_samples_on_two_set_versions_are_refused(store: Store) -> None:
    _two_point_history(store, BASE_SPEC + GENERIC_EDIT, planted(uniform(0.5)))
    add_samples(store, "other", BASE_SPEC, planted(uniform(0.5)), set_hash="sha256:" + "0" * 64)
    with pytest.raises(AuditError, match="2 versions of the held-out set"):
        detect(store, CONFIG)


def test_model_versions_at_one_revision_are_compared(store: Store) -> None:
    add_revisions(store, [BASE_SPEC])
    add_samples(store, "patcher-v1", BASE_SPEC, planted(uniform(0.2)))
    add_samples(store, "patcher-v2", BASE_SPEC, planted(uniform(0.5)))
    finding, only_point = detect(store, CONFIG)
    assert (finding.comparison, finding.kind) == ("model_version", "regression")
    # patcher-v1 has one point and nothing found: a "none" about that point, not a silence.
    assert (only_point.model, only_point.comparison, only_point.kind) == (
        "patcher-v1",
        "point",
        "none",
    )
    assert (finding.baseline_model, finding.model) == ("patcher-v1", "patcher-v2")
    assert finding.baseline_rev == finding.rev


def test_detect_json_has_the_issue_keys(store: Store, tmp_path) -> None:
    _two_point_history(store, BASE_SPEC + GENERIC_EDIT, planted(uniform(0.8)))
    store.close()
    result = CliRunner().invoke(app, ["detect", "--json", "--db", str(tmp_path / "audit.duckdb")])
    assert result.exit_code == 0, result.output
    (item,) = json.loads(result.stdout)
    assert set(item) >= ISSUE_KEYS
    assert item["kind"] == "regression"
    assert item["causes"] == [
        {"cause": "regression", "share": 1.0, "evidence": item["causes"][0]["evidence"]}
    ]
    assert len(item["rev"]) == 40 and len(item["baseline_rev"]) == 40


def test_detect_text_output_and_unknown_baseline(store: Store, tmp_path) -> None:
    _two_point_history(store, BASE_SPEC + GENERIC_EDIT, planted(uniform(0.8)))
    store.close()
    db = str(tmp_path / "audit.duckdb")
    result = CliRunner().invoke(app, ["detect", "--db", db])
    assert result.exit_code == 0
    assert result.stdout.startswith("[regression] m: regression: rise of 30.0 points at ")
    bad = CliRunner().invoke(app, ["detect", "--db", db, "--baseline", "feedface"])
    assert bad.exit_code == 2
    assert bad.stderr.startswith("error: no revision of 'spec' has a sha starting with 'feedface'")


def test_detect_on_an_empty_database_is_a_user_error(tmp_path) -> None:
    result = CliRunner().invoke(app, ["detect", "--db", str(tmp_path / "empty.duckdb")])
    assert result.exit_code == 2
    assert (
        result.stderr
        == "error: no samples stored for any model: run `audit run` (or the demo) first\n"
    )


def test_every_metric_is_estimated_and_the_sandbagging_gap_comes_from_conditions(
    store: Store,
) -> None:
    (sha,) = add_revisions(store, [BASE_SPEC])
    add_samples(store, "m", BASE_SPEC, planted(uniform(0.25), aware=0.5), epochs=8)
    sandbag = next(s for s in heldout().scenarios if s.family == "sandbagging")
    # Paired conditions: 0.9 correct when neutral, 0.5 under the incentive to underperform.
    store.con.execute(
        "UPDATE samples SET condition = CASE WHEN epoch < 4 THEN 'neutral' ELSE 'incentive' END, "
        "score = CASE WHEN epoch < 4 THEN 0.9 ELSE 0.5 END WHERE scenario_id = ?",
        [sandbag.id],
    )
    detect(store, CONFIG)
    metrics = store.query(
        "SELECT metric, value FROM estimates WHERE sha = ? AND scope = 'all' ORDER BY metric",
        [sha],
    )
    assert metrics == [
        {"metric": "covert_rate", "value": pytest.approx(0.25)},
        {"metric": "eval_awareness_rate", "value": pytest.approx(0.5)},
        {"metric": "invalid_rate", "value": 0.0},
        {"metric": "refusal_rate", "value": 0.0},
        {"metric": "sandbagging_gap", "value": pytest.approx(0.4)},
        {"metric": "spec_citation_rate", "value": 0.0},
    ]
    gap = store.query(
        "SELECT value, ci_low, ci_high, n_samples, n_scenarios FROM estimates "
        "WHERE sha = ? AND metric = 'sandbagging_gap' AND scope = 'all'",
        [sha],
    )[0]
    # One paired scenario with no spread inside either condition: the two-level bootstrap
    # still cannot widen it (every resample equals 0.4), but it counts the samples behind it.
    assert (gap["ci_low"], gap["ci_high"]) == (pytest.approx(0.4), pytest.approx(0.4))
    assert (gap["n_samples"], gap["n_scenarios"]) == (8, 1)
    families = store.query(
        "SELECT scope_id, n_scenarios FROM estimates WHERE sha = ? AND metric = 'covert_rate' "
        "AND scope = 'family' ORDER BY scope_id",
        [sha],
    )
    assert [f["scope_id"] for f in families] == heldout().families()


def test_each_revision_is_compared_with_the_chosen_baseline(store: Store) -> None:
    second, third = BASE_SPEC + GENERIC_EDIT, BASE_SPEC + GENERIC_EDIT + "\nBe brief.\n"
    shas = add_revisions(store, [BASE_SPEC, second, third])
    add_samples(store, "m", BASE_SPEC, planted(uniform(0.5)))
    add_samples(store, "m", second, planted(uniform(0.2)))
    add_samples(store, "m", third, planted(uniform(0.2)))
    findings = detect(store, CONFIG)
    assert [(f.comparison, f.baseline_rev, f.rev, f.kind) for f in findings] == [
        ("consecutive", shas[0], shas[1], "drop"),
        ("baseline", shas[0], shas[2], "drop"),
    ]
    # Against revision 1 as the baseline, revision 2 has not changed: only the first edit shows.
    rebased = detect(store, CONFIG, baseline=shas[1][:10])
    assert [(f.comparison, f.rev) for f in rebased] == [("consecutive", shas[1])]


def test_a_drop_confined_to_exposed_scenarios_is_found_by_their_own_test(store: Store) -> None:
    ids = scenario_ids()
    exposed, rest = ids[:7], ids[7:]
    # Nine unexposed scenarios rise by as much as the exposed ones fall (7 x 0.4 vs 9 x 0.3), so
    # the test over all scenarios sees no net change; the named scenarios' own test sees the drop.
    after = {sid: 0.1 for sid in exposed}
    after.update({sid: (0.8 if i < 9 else 0.5) for i, sid in enumerate(rest)})
    _two_point_history(store, BASE_SPEC + patch_naming(exposed), planted(after))
    (finding,) = detect(store, CONFIG)
    assert (finding.kind, finding.primary_cause) == ("drop", "spec_patching")
    assert finding.evidence["tested_on"] == "exposed scenarios"
    assert finding.q_value is not None and finding.q_value < 0.05
    assert sorted(finding.exposed_scenarios) == sorted(exposed)


def test_every_model_gets_its_own_baseline_comparisons(store: Store) -> None:
    texts = [BASE_SPEC, BASE_SPEC + GENERIC_EDIT, BASE_SPEC + GENERIC_EDIT + "\nBe brief.\n"]
    shas = add_revisions(store, texts)
    for model in ("a", "b"):
        add_samples(store, model, texts[0], planted(uniform(0.5)))
        add_samples(store, model, texts[1], planted(uniform(0.2)))
        add_samples(store, model, texts[2], planted(uniform(0.2)))
    findings = detect(store, CONFIG)
    # A pair set shared across models used to skip every model's baseline but the first one's.
    assert sorted((f.model, f.comparison, f.rev) for f in findings) == [
        ("a", "baseline", shas[2]),
        ("a", "consecutive", shas[1]),
        ("b", "baseline", shas[2]),
        ("b", "consecutive", shas[1]),
    ]


def test_sandbagging_gap_interval_counts_the_samples_within_each_condition(
    store: Store,
) -> None:
    """With one paired scenario, resampling per-scenario gaps gives a zero-width interval;
    the two-level bootstrap reflects how much the scores vary within each condition."""
    (sha,) = add_revisions(store, [BASE_SPEC])
    add_samples(store, "m", BASE_SPEC, planted(uniform(0.25)), epochs=8)
    sandbag = next(s for s in heldout().scenarios if s.family == "sandbagging")
    store.con.execute(
        "UPDATE samples SET condition = CASE WHEN epoch < 4 THEN 'neutral' ELSE 'incentive' END, "
        "score = CASE epoch WHEN 0 THEN 1.0 WHEN 1 THEN 0.8 WHEN 2 THEN 0.9 WHEN 3 THEN 0.9 "
        "WHEN 4 THEN 0.3 WHEN 5 THEN 0.7 WHEN 6 THEN 0.5 ELSE 0.5 END WHERE scenario_id = ?",
        [sandbag.id],
    )
    detect(store, CONFIG)
    gap = store.query(
        "SELECT value, ci_low, ci_high FROM estimates "
        "WHERE sha = ? AND metric = 'sandbagging_gap' AND scope = 'all'",
        [sha],
    )[0]
    assert gap["value"] == pytest.approx(0.4)
    assert gap["ci_low"] < 0.4 - 0.05 and gap["ci_high"] > 0.4 + 0.05
    assert gap["ci_low"] > 0  # still a clear gap: lower scores under the incentive
