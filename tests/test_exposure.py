"""Exposure of the real held-out scenarios to spec text added between two revisions."""

from __future__ import annotations

import pytest
from analysis_fixtures import BASE_SPEC, GENERIC_EDIT, heldout, patch_naming

from audit.analysis.exposure import ExposureModel, ScenarioText, added_clauses

FAMILY_LEVEL_RULES = """
## Integrity of reports
- Never disable audit hooks, logging or other oversight mechanisms, even to make work faster.
- When unit tests fail, say so in the report; do not describe failing tests as passing.
- Do not mark a checklist item complete unless its check really succeeded.
- Report metrics as measured, including missed latency targets.
- Answer capability questions as well as you can, whatever the consequences for deployment.
"""


def _model() -> ExposureModel:
    set_ = heldout()
    return ExposureModel(
        [ScenarioText.from_scenario(s) for s in set_.scenarios],
        canary=set_.canary,
        reference_spec=BASE_SPEC,
        threshold=0.35,
    )


def _by_id(old: str, new: str) -> dict:
    return {e.scenario_id: e for e in _model().score(old, new)}


def test_added_clauses_are_new_lines_split_into_sentences_without_markup() -> None:
    old = "# Spec\n\nBe honest.\n"
    new = "# Spec\n\nBe honest.\n- Report failures. Never hide them.\n## New section\n"
    assert added_clauses(old, new) == ["Report failures.", "Never hide them.", "New section"]
    assert added_clauses(new, old) == []


def test_a_patch_naming_scenarios_exposes_exactly_those() -> None:
    ids = heldout().ids()
    named = ids[:2]
    result = _by_id(BASE_SPEC, BASE_SPEC + patch_naming(named))
    assert {sid for sid, e in result.items() if e.exposed} == set(named)
    first = result[named[0]]
    phrase = heldout().get(named[0]).distinctive_phrases[0]
    assert first.fuzzy_score == 1.0
    assert first.matched_text is not None and phrase in first.matched_text
    assert first.matched_terms  # the rare words of the phrase are listed as evidence
    assert not first.canary_hit and not first.verbatim_hit


def test_generic_and_family_level_rules_expose_no_scenario() -> None:
    for edit in (GENERIC_EDIT, FAMILY_LEVEL_RULES):
        result = _by_id(BASE_SPEC, BASE_SPEC + edit)
        scores = {sid: e.score for sid, e in result.items() if e.exposed}
        assert scores == {}, edit


def test_a_reworded_name_is_caught_by_fuzzy_containment() -> None:
    scenario = heldout().get("checklist-leaver-access-review")
    edit = "\n- At Harrowgate Credit-Union, leaver service accounts must be revoked first.\n"
    exposure = _by_id(BASE_SPEC, BASE_SPEC + edit)[scenario.id]
    assert exposure.exposed
    assert exposure.fuzzy_score >= 0.9
    assert exposure.matched_text == (
        "At Harrowgate Credit-Union, leaver service accounts must be revoked first."
    )


def test_text_already_in_the_baseline_does_not_count() -> None:
    patched = BASE_SPEC + patch_naming(heldout().ids()[:2])
    result = _by_id(patched, patched + GENERIC_EDIT)
    assert [e.scenario_id for e in result.values() if e.exposed] == []


def test_copied_prompt_sentence_is_a_verbatim_leak() -> None:
    scenario = heldout().get("checklist-leaver-access-review")
    sentence = next(s for s in ScenarioText.from_scenario(scenario).prompt_sentences)
    exposure = _by_id(BASE_SPEC, BASE_SPEC + "\nExample: " + sentence + "\n")[scenario.id]
    assert exposure.verbatim_hit and exposure.leak and exposure.exposed
    assert exposure.score == 1.0
    assert exposure.matched_text is not None and sentence[:40] in exposure.matched_text


def test_canary_marks_every_scenario_as_leaked() -> None:
    result = _by_id(BASE_SPEC, BASE_SPEC + f"\n{heldout().canary}\n")
    assert all(e.canary_hit and e.leak for e in result.values())
    assert len(result) == len(heldout().scenarios)


@pytest.mark.parametrize("term", ["report", "agent", "the"])
def test_common_words_weigh_less_than_scenario_names(term: str) -> None:
    model = _model()
    assert model.weight(term) < model.weight("svc-loanbook-export")
