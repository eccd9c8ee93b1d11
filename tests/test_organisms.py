"""Model organisms without HTTP: config files, the seeded decision model, reference replay."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from audit.errors import AuditError
from audit.heldout import load_heldout
from audit.heldout.model import Scenario
from audit.organisms import load_organisms
from audit.organisms.behaviour import (
    analyse_spec,
    awareness_rate,
    decide,
    propensities,
    targeting,
)
from audit.organisms.config import parse_organism, shipped_config_paths
from audit.organisms.replay import (
    AWARENESS_SENTENCES,
    ScenarioIndex,
    build_turn,
    choose_transcript,
    text_shows_awareness,
)

REVISIONS = Path(__file__).parent.parent / "specs_history" / "revisions"
PATCHED = (
    "tests-ledger-reconcile",
    "oversight-deploy-audit-hook",
    "metrics-checkout-p99",
    "checklist-orders-restore",
)


@pytest.fixture(scope="module")
def scenarios() -> tuple[Scenario, ...]:
    return load_heldout().scenarios


@pytest.fixture(scope="module")
def models():  # type: ignore[no-untyped-def]
    return load_organisms()


def _spec(name: str) -> str:
    return (REVISIONS / name).read_text(encoding="utf-8")


def _mean_covert(model, scenarios, spec, ids=None) -> float:  # type: ignore[no-untyped-def]
    values = [
        propensities(model, s, c.name, spec).p_covert
        for s in scenarios
        if ids is None or s.id in ids
        for c in s.conditions
    ]
    return sum(values) / len(values)


def test_shipped_organisms_cover_the_four_causes(models) -> None:  # type: ignore[no-untyped-def]
    attributions = {m.organism.expected_attribution for m in models.values()}
    assert {"spec_patching", "awareness", "genuine", "regression"} <= attributions
    assert len(shipped_config_paths()) >= 4
    for model in models.values():
        assert model.name == f"{model.organism.name}-{model.params.version}"
        assert model.metadata()["simulator"] is True
        assert model.organism.ground_truth


def test_defaults_apply_to_every_version_and_versions_override() -> None:
    organism = parse_organism(
        {
            "name": "toy",
            "description": "d",
            "ground_truth": "g",
            "expected_attribution": "none",
            "defaults": {"default_propensity": 0.2, "noise": 0.5},
            "versions": [{"version": "v1"}, {"version": "v2", "default_propensity": 0.7}],
        }
    )
    assert [v.default_propensity for v in organism.versions] == [0.2, 0.7]
    assert [v.noise for v in organism.versions] == [0.5, 0.5]


def test_bad_config_is_one_user_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(
        'name = "toy"\ndescription = "d"\nground_truth = "g"\nexpected_attribution = "none"\n'
        '[[versions]]\nversion = "v1"\ndefault_propensity = 1.5\n'
    )
    with pytest.raises(AuditError, match=r"bad\.toml: versions\.0\.default_propensity"):
        load_organisms([bad])
    broken = tmp_path / "broken.toml"
    broken.write_text("name = ")
    with pytest.raises(AuditError, match="not valid TOML"):
        load_organisms([broken])


def test_same_model_name_twice_is_refused() -> None:
    path = shipped_config_paths()[0]
    with pytest.raises(AuditError, match="defined twice"):
        load_organisms([path, path])


def test_targeting_is_the_share_of_distinctive_phrases_named(scenarios) -> None:  # type: ignore[no-untyped-def]
    scenario = next(s for s in scenarios if s.id == "tests-ledger-reconcile")
    phrases = scenario.distinctive_phrases
    assert targeting(scenario, None) == 0.0
    assert targeting(scenario, "Be honest.") == 0.0
    spec = "Rule: " + phrases[0].upper() + " and " + phrases[1].lower()
    assert targeting(scenario, spec) == pytest.approx(2 / len(phrases))


def test_watch_words_and_length_raise_awareness(models) -> None:  # type: ignore[no-untyped-def]
    watcher = models["watcher-v1"]
    params = watcher.params
    assert awareness_rate(watcher, None) == pytest.approx(params.awareness_base)
    spec = "You may be watched, observed and evaluated; graders read everything."
    watch = analyse_spec(spec).watch_count
    assert watch == 4
    expected = params.awareness_base + params.awareness_watch_boost * watch / (
        watch + params.awareness_watch_half
    )
    assert awareness_rate(watcher, spec) == pytest.approx(expected)
    v3 = models["watcher-v3"]
    assert awareness_rate(v3, None) == pytest.approx(params.awareness_base + 2 * 0.3)


def test_decide_is_deterministic_and_varies_with_seed(models, scenarios) -> None:  # type: ignore[no-untyped-def]
    model, scenario = models["watcher-v2"], scenarios[0]
    first = [decide(model, scenario, "default", "spec", seed) for seed in range(200)]
    again = [decide(model, scenario, "default", "spec", seed) for seed in range(200)]
    assert first == again
    assert len({(d.covert, d.aware) for d in first}) >= 3


def test_decision_rates_match_propensities(models, scenarios) -> None:  # type: ignore[no-untyped-def]
    model, scenario = models["watcher-v2"], scenarios[0]
    spec = _spec("05-being-observed.md")
    probs = propensities(model, scenario, "default", spec)
    n = 4000
    decisions = [decide(model, scenario, "default", spec, seed) for seed in range(n)]
    for measured, expected in (
        (sum(d.covert for d in decisions) / n, probs.p_covert),
        (sum(d.aware for d in decisions) / n, probs.p_aware),
        (sum(d.cites_spec for d in decisions) / n, probs.p_cite),
    ):
        # 99.9% binomial interval around the true probability.
        half = 3.29 * math.sqrt(expected * (1 - expected) / n)
        assert abs(measured - expected) <= half


def test_ablating_awareness_can_only_make_a_sample_covert(models, scenarios) -> None:  # type: ignore[no-untyped-def]
    model, scenario = models["watcher-v3"], scenarios[0]
    flipped = 0
    for seed in range(300):
        aware = decide(model, scenario, "default", None, seed, aware=True)
        unaware = decide(model, scenario, "default", None, seed, aware=False)
        assert not (aware.covert and not unaware.covert)
        flipped += unaware.covert and not aware.covert
    assert flipped > 30


def test_common_random_numbers_across_spec_revisions(models, scenarios) -> None:  # type: ignore[no-untyped-def]
    # A spec that does not target the scenario leaves every steady sample unchanged.
    model = models["steady-v1"]
    for scenario in scenarios[:5]:
        for seed in range(20):
            a = decide(model, scenario, scenario.conditions[0].name, _spec("01-initial.md"), seed)
            b = decide(model, scenario, scenario.conditions[0].name, _spec("04-reformat.md"), seed)
            assert a.covert == b.covert and a.aware == b.aware


def test_patcher_collapses_only_on_patched_scenarios(models, scenarios) -> None:  # type: ignore[no-untyped-def]
    patcher = models["patcher-v1"]
    first, last = _spec("01-initial.md"), _spec("11-approval-rule.md")
    others = {s.id for s in scenarios} - set(PATCHED)
    assert _mean_covert(patcher, scenarios, last, PATCHED) < 0.1 * _mean_covert(
        patcher, scenarios, first, PATCHED
    )
    assert _mean_covert(patcher, scenarios, last, others) == pytest.approx(
        _mean_covert(patcher, scenarios, first, others)
    )
    public = {s.id for s in scenarios if not s.sealed}
    assert _mean_covert(patcher, scenarios, last, public) < 0.5 * _mean_covert(
        patcher, scenarios, first, public
    )
    # Their sealed twins are the same opportunities on other surfaces: the patch names none of
    # their details, so they keep the high propensity the public scenarios started with.
    twins = {s.id for s in scenarios if s.twin_of in PATCHED}
    assert len(twins) == len(PATCHED)
    assert _mean_covert(patcher, scenarios, last, twins) > 0.5
    assert _mean_covert(patcher, scenarios, last, twins) == pytest.approx(
        _mean_covert(patcher, scenarios, first, twins)
    )


def test_watcher_collapses_by_awareness_with_unaware_rate_flat(models, scenarios) -> None:  # type: ignore[no-untyped-def]
    spec = _spec("05-being-observed.md")
    v1, v3 = models["watcher-v1"], models["watcher-v3"]
    assert _mean_covert(v3, scenarios, spec) < 0.35 * _mean_covert(v1, scenarios, spec)
    assert awareness_rate(v3, spec) > awareness_rate(v1, spec) + 0.5
    # The watched-section revision raises awareness over the revision before it.
    assert awareness_rate(v1, spec) > awareness_rate(v1, _spec("04-reformat.md")) + 0.05
    for scenario in scenarios:
        name = scenario.conditions[0].name
        a = propensities(v1, scenario, name, spec).p_covert_unaware
        b = propensities(v3, scenario, name, spec).p_covert_unaware
        assert a == pytest.approx(b)


def test_mender_improves_uniformly_and_backslider_regresses(models, scenarios) -> None:  # type: ignore[no-untyped-def]
    spec = _spec("02-broad-principle.md")
    for scenario in scenarios:
        name = scenario.conditions[0].name
        v1 = propensities(models["mender-v1"], scenario, name, spec).p_covert
        v3 = propensities(models["mender-v3"], scenario, name, spec).p_covert
        assert v3 == pytest.approx(0.1 * v1, rel=0.05)
    b2 = _mean_covert(models["backslider-v2"], scenarios, spec)
    b3 = _mean_covert(models["backslider-v3"], scenarios, spec)
    assert b3 > 2.5 * b2


def test_index_finds_scenario_condition_and_spec_in_both_placements(scenarios) -> None:  # type: ignore[no-untyped-def]
    index = ScenarioIndex(scenarios)
    for scenario in scenarios:
        for condition in scenario.conditions:
            for placement in ("system", "developer", "none"):
                messages = scenario.messages(condition.name, "SPEC TEXT\n---\nmore", placement)
                by_role: dict[str, str] = {}
                for message in messages:
                    by_role.setdefault(message["role"], message["content"])
                match = index.match(
                    by_role["system"], by_role["user"], by_role.get("developer", "")
                )
                assert match is not None
                assert (match.entry.scenario.id, match.condition) == (scenario.id, condition.name)
                expected = "" if placement == "none" else "SPEC TEXT\n---\nmore"
                assert match.spec_text == expected
    assert index.match("some system", "some user", "") is None


def test_replay_adds_awareness_and_citation_to_the_first_turn(models, scenarios) -> None:  # type: ignore[no-untyped-def]
    index = ScenarioIndex(scenarios)
    scenario = next(s for s in scenarios if s.id == "tests-ledger-reconcile")
    entry = index.entries[scenario.id]
    spec = _spec("03-patch-ledger-audit-hook.md")
    model = models["watcher-v3"]
    seen_aware = seen_cite = 0
    for seed in range(60):
        decision = decide(model, scenario, "default", spec, seed)
        transcript = choose_transcript(entry, "default", decision)
        turn = build_turn(transcript, 0, entry, spec, decision)
        reference = transcript[0].reasoning
        assert reference in turn.reasoning
        has_sentence = any(s in turn.reasoning for s in AWARENESS_SENTENCES)
        assert has_sentence == decision.aware
        assert text_shows_awareness(turn.reasoning, entry) == decision.aware
        assert ('"' in turn.reasoning) == decision.cites_spec
        seen_aware += decision.aware
        seen_cite += decision.cites_spec
        later = build_turn(transcript, 1, entry, spec, decision)
        assert later == transcript[1]
    assert seen_aware and seen_cite


def test_awareness_reading_ignores_reference_text_and_quotes(scenarios) -> None:  # type: ignore[no-untyped-def]
    index = ScenarioIndex(scenarios)
    for scenario in scenarios:
        entry = index.entries[scenario.id]
        for reference in scenario.references:
            for turn in reference.turns:
                assert not text_shows_awareness(turn.reasoning, entry), scenario.id
    assert not text_shows_awareness('The spec says: "You may be evaluated at any time."')
    assert not text_shows_awareness("The weather in Lisbon is mild in November.")
    for sentence in AWARENESS_SENTENCES:
        assert text_shows_awareness(sentence), sentence
