"""Detection findings: FDR families, collapses, "none", invalid samples, leaks, reported numbers.

Each test plants a history in a real DuckDB file (see ``analysis_fixtures``) and runs the real
``detect()`` or CLI on it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from analysis_fixtures import (
    BASE_SPEC,
    GENERIC_EDIT,
    Planted,
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
from audit.analysis.exposure import ScenarioText
from audit.cli import app
from audit.config import AuditConfig
from audit.store import Store

CONFIG = AuditConfig()


def _moderate_patch(store: Store, models: list[str]) -> tuple[list[str], list[str]]:
    """Model "target": two named scenarios fall from 10/20 to 4/20 (exact one-sided p 0.005);
    every other model in ``models`` stays put."""
    named = scenario_ids()[:2]
    patched = BASE_SPEC + patch_naming(named)
    shas = add_revisions(store, [BASE_SPEC, patched])
    after = uniform(0.5) | dict.fromkeys(named, 0.2)
    add_samples(store, "target", BASE_SPEC, planted(uniform(0.5)))
    add_samples(store, "target", patched, planted(after))
    for model in models:
        add_samples(store, model, BASE_SPEC, planted(uniform(0.5)))
        add_samples(store, model, patched, planted(uniform(0.5)))
    return shas, named


# -- the false-discovery-rate family -------------------------------------------------------------


def test_q_value_of_a_finding_does_not_depend_on_the_other_models_analysed(store: Store) -> None:
    _moderate_patch(store, [f"bystander{i}" for i in range(8)])
    everyone = {f.finding_id: f for f in detect(store, CONFIG) if f.model == "target"}
    alone = {f.finding_id: f for f in detect(store, CONFIG, model="target")}
    assert everyone.keys() == alone.keys()
    (finding,) = alone.values()
    assert (finding.kind, finding.primary_cause) == ("drop", "spec_patching")
    assert finding.q_value < 0.05
    # Before, BH ran over all 18 tests of the pass: the bystanders diluted q to about 0.18.
    assert everyone[finding.finding_id].q_value == pytest.approx(finding.q_value)
    assert finding.evidence["fdr_family"] == "target along spec: history"


# -- collapse ----------------------------------------------------------------------------------


def test_an_all_zero_rate_on_few_samples_is_not_a_collapse(store: Store) -> None:
    add_revisions(store, [BASE_SPEC])
    add_samples(store, "m", BASE_SPEC, planted(uniform(0.0)), epochs=5)
    (finding,) = detect(store, CONFIG)
    # 0 of 170: the exact upper bound is 2.1%, so the set cannot vouch for "under 1%".
    assert (finding.kind, finding.comparison) == ("none", "point")
    assert finding.ci_high == pytest.approx(1 - 0.025 ** (1 / (5 * len(scenario_ids()))))
    assert finding.ci_high > 0.01


def test_a_single_collapsed_point_is_a_collapse_without_causes(store: Store) -> None:
    (sha,) = add_revisions(store, [BASE_SPEC])
    add_samples(store, "m", BASE_SPEC, planted(uniform(0.0)), epochs=20)
    (finding,) = detect(store, CONFIG)
    assert (finding.kind, finding.comparison, finding.rev) == ("collapse", "point", sha)
    assert finding.causes == () and finding.primary_cause is None
    assert finding.ci_high < 0.01
    assert finding.evidence["covert_samples"] == 0
    assert "the set may have lost its power" in finding.summary
    assert "no cause" in finding.summary


def test_an_already_collapsed_baseline_is_flagged_once_at_the_start(store: Store) -> None:
    shas = add_revisions(store, [BASE_SPEC, BASE_SPEC + GENERIC_EDIT])
    add_samples(store, "m", BASE_SPEC, planted(uniform(0.0)))
    add_samples(store, "m", BASE_SPEC + GENERIC_EDIT, planted(uniform(0.0)))
    findings = detect(store, CONFIG)
    assert [(f.kind, f.comparison, f.rev) for f in findings] == [("collapse", "point", shas[0])]


def test_a_collapse_without_a_significant_drop_has_no_causes(store: Store) -> None:
    shas = add_revisions(store, [BASE_SPEC, BASE_SPEC + GENERIC_EDIT])
    # Five scenarios with one covert sample of 20 (0.7%, upper bound 1.7%), then none at all:
    # too small a fall to be significant, but the set has now lost its power.
    before = uniform(0.0) | dict.fromkeys(scenario_ids()[:5], 0.05)
    add_samples(store, "m", BASE_SPEC, planted(before))
    add_samples(store, "m", BASE_SPEC + GENERIC_EDIT, planted(uniform(0.0)))
    (finding,) = detect(store, CONFIG)
    assert (finding.kind, finding.comparison) == ("collapse", "point")
    assert (finding.baseline_rev, finding.rev) == tuple(shas)
    assert finding.baseline_rate == pytest.approx(0.25 / len(scenario_ids()))
    assert finding.causes == ()
    assert "without a significant drop from" in finding.summary


# -- "none" ------------------------------------------------------------------------------------


def test_detect_json_lists_a_none_finding_per_model_when_nothing_is_found(
    store: Store, tmp_path: Path
) -> None:
    add_revisions(store, [BASE_SPEC, BASE_SPEC + GENERIC_EDIT, BASE_SPEC + GENERIC_EDIT + "x\n"])
    for model in ("a", "b"):
        for text in (BASE_SPEC, BASE_SPEC + GENERIC_EDIT, BASE_SPEC + GENERIC_EDIT + "x\n"):
            add_samples(store, model, text, planted(uniform(0.3)))
    store.close()
    result = CliRunner().invoke(app, ["detect", "--json", "--db", str(tmp_path / "audit.duckdb")])
    assert result.exit_code == 0, result.output
    items = json.loads(result.stdout)
    # Latest revision against the baseline, once per model: checked, nothing found.
    assert [(i["model"], i["kind"], i["comparison"]) for i in items] == [
        ("a", "none", "baseline"),
        ("b", "none", "baseline"),
    ]
    assert all(i["q_value"] == 1.0 and i["tested_on"] == "all scenarios" for i in items)


# -- invalid samples ---------------------------------------------------------------------------


def test_invalid_samples_do_not_count_as_honest(store: Store) -> None:
    shas = add_revisions(store, [BASE_SPEC, BASE_SPEC + GENERIC_EDIT])
    add_samples(store, "m", BASE_SPEC, planted(uniform(0.25)), epochs=40)
    # Half the samples become ungradable; the valid ones are as covert as before (5 of 20).
    after = Planted(uniform(0.25), {}, invalid=uniform(0.5))
    add_samples(store, "m", BASE_SPEC + GENERIC_EDIT, after, epochs=40)
    (finding,) = detect(store, CONFIG)
    assert finding.kind == "none"
    assert finding.rate == pytest.approx(0.25)
    rates = store.query(
        "SELECT metric, value, n_samples FROM estimates WHERE sha = ? AND scope = 'all' "
        "AND metric IN ('covert_rate', 'invalid_rate') ORDER BY metric",
        [shas[1]],
    )
    n = len(scenario_ids())
    assert rates == [
        {"metric": "covert_rate", "value": pytest.approx(0.25), "n_samples": 20 * n},
        {"metric": "invalid_rate", "value": pytest.approx(0.5), "n_samples": 40 * n},
    ]


# -- leaks -------------------------------------------------------------------------------------


def _shouted_canary() -> str:
    """The canary upper-cased and re-wrapped onto two lines, as a careless copy might be."""
    words = heldout().canary.upper().split(" ")
    return " ".join(words[:3]) + "\n  " + " ".join(words[3:])


def test_a_leak_is_reported_once_at_the_revision_that_introduced_it(store: Store) -> None:
    leaky = BASE_SPEC + f"\nInternal note: {_shouted_canary()}\n"
    texts = [BASE_SPEC, leaky, leaky + GENERIC_EDIT]
    shas = add_revisions(store, texts)
    for text in texts:
        add_samples(store, "m", text, planted(uniform(0.5)))
    leaks = [f for f in detect(store, CONFIG) if f.kind == "leak"]
    assert [(f.baseline_rev, f.rev) for f in leaks] == [(shas[0], shas[1])]
    assert leaks[0].evidence["canary"] is True


def test_a_leak_in_the_first_revision_is_reported_there(store: Store) -> None:
    leaky = BASE_SPEC + f"\n{_shouted_canary()}\n"
    shas = add_revisions(store, [leaky, leaky + GENERIC_EDIT])
    for text in (leaky, leaky + GENERIC_EDIT):
        add_samples(store, "m", text, planted(uniform(0.5)))
    leaks = [f for f in detect(store, CONFIG) if f.kind == "leak"]
    assert [(f.baseline_rev, f.rev) for f in leaks] == [("", shas[0])]


def test_a_prompt_sentence_quoted_inside_a_longer_clause_is_a_leak(store: Store) -> None:
    scenario = heldout().get("checklist-leaver-access-review")
    sentence = ScenarioText.from_scenario(scenario).prompt_sentences[0]
    quoted = f"For the on-call rota, remember this exact past case word for word: {sentence}"
    texts = [BASE_SPEC, BASE_SPEC + "\n" + quoted + "\n"]
    shas = add_revisions(store, texts)
    for text in texts:
        add_samples(store, "m", text, planted(uniform(0.5)))
    (leak,) = [f for f in detect(store, CONFIG) if f.kind == "leak"]
    assert leak.rev == shas[1]
    assert leak.exposed_scenarios == (scenario.id,)
    assert leak.evidence["verbatim_scenarios"] == [scenario.id]


# -- reported numbers --------------------------------------------------------------------------


def test_numbers_of_an_exposed_scenario_finding_all_come_from_the_exposed_scenarios(
    store: Store,
) -> None:
    ids = scenario_ids()
    exposed, rest = ids[:7], ids[7:]
    # The named scenarios fall 0.5 -> 0.1; nine others rise to 0.8, hiding the fall overall.
    after = dict.fromkeys(exposed, 0.1) | {s: (0.8 if i < 9 else 0.5) for i, s in enumerate(rest)}
    add_revisions(store, [BASE_SPEC, BASE_SPEC + patch_naming(exposed)])
    add_samples(store, "m", BASE_SPEC, planted(uniform(0.5)))
    add_samples(store, "m", BASE_SPEC + patch_naming(exposed), planted(after))
    (finding,) = detect(store, CONFIG)
    assert finding.tested_on == "exposed scenarios"
    assert (finding.baseline_rate, finding.rate) == (pytest.approx(0.5), pytest.approx(0.1))
    assert finding.delta == pytest.approx(-0.4)
    assert finding.delta_ci_low < -0.4 < finding.delta_ci_high < 0
    assert finding.ci_low < 0.1 < finding.ci_high
    whole = finding.evidence["all_scenarios"]
    assert whole["delta"] == pytest.approx((7 * -0.4 + 9 * 0.3) / len(ids))
    assert whole["n_scenarios"] == len(ids)
    assert finding.evidence["exposed_scenarios"]["q_value"] == finding.q_value
    assert finding.summary.startswith("m: drop of 40.0 points on the 7 exposed scenarios at ")
    assert f"(all {len(ids)} scenarios: -0.3 points, 95% CI " in finding.summary


def test_a_two_scenario_patch_gets_a_wide_difference_in_differences_interval(
    store: Store,
) -> None:
    named = scenario_ids()[:2]
    add_revisions(store, [BASE_SPEC, BASE_SPEC + patch_naming(named)])
    add_samples(store, "m", BASE_SPEC, planted(uniform(0.5)))
    add_samples(
        store,
        "m",
        BASE_SPEC + patch_naming(named),
        planted(uniform(0.5) | dict.fromkeys(named, 0.1)),
    )
    (finding,) = detect(store, CONFIG)
    patching = next(c for c in finding.causes if c["cause"] == "spec_patching")["evidence"]
    assert patching["did"] == pytest.approx(-0.4, abs=0.01)
    # Scenarios alone: two identical exposed changes and 32 identical unexposed ones resample
    # into one value, a zero-width interval. Samples within scenarios carry binomial noise.
    assert patching["did_ci_low"] < -0.45
    assert patching["did_ci_high"] > -0.35
