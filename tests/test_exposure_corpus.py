"""Format and labelling checks of the exposure corpus in tests/data/exposure_clauses/.

The corpus measures exposure on data nobody tuned it on, so its promises are checked here: valid
styles and targets (public scenarios of the shipped set only), enough clauses of each style per
scenario, no duplicate texts, tune and holdout disjoint by scenario, paraphrases free of digits
and of their targets' distinctive phrases, generic clauses free of every scenario's.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from audit.heldout.loader import load_heldout

CORPUS = Path(__file__).parent / "data" / "exposure_clauses"
SPLITS = ("tune", "holdout")
STYLES = {"quote", "names", "paraphrase", "generic"}
KEYS = {"id", "style", "family", "targets", "text"}
# Minimum single-target clauses per public scenario and style, and of generic clauses overall.
MIN_PER_SCENARIO = {"quote": 2, "names": 2, "paraphrase": 3}
MIN_GENERIC = 100
TWO_TARGET_RANGE = (10, 20)


@dataclass(frozen=True)
class PublicSet:
    """What the checks need of the shipped set's public scenarios (never a sealed twin's text)."""

    ids: list[str]
    family_of: dict[str, str]
    phrases: dict[str, list[str]]


@pytest.fixture(scope="module")
def heldout() -> PublicSet:
    public = [s for s in load_heldout().scenarios if not s.sealed]
    return PublicSet(
        ids=sorted(s.id for s in public),
        family_of={s.id: s.family for s in public},
        phrases={s.id: [_fold(p) for p in s.distinctive_phrases] for s in public},
    )


@pytest.fixture(scope="module")
def rows() -> dict[str, list[dict]]:
    return {
        split: [
            json.loads(line)
            for line in (CORPUS / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()
        ]
        for split in SPLITS
    }


def _all(rows: dict[str, list[dict]]) -> list[dict]:
    return [row for split in SPLITS for row in rows[split]]


def _fold(text: str) -> str:
    return " ".join(text.casefold().split())


def test_rows_have_the_documented_fields_and_values(rows, heldout):
    public = set(heldout.ids)
    families = set(heldout.family_of.values()) | {"other"}
    family_of = heldout.family_of
    ids = [row["id"] for row in _all(rows)]
    assert len(ids) == len(set(ids)), "duplicate ids"
    for row in _all(rows):
        assert set(row) == KEYS, row["id"]
        assert re.fullmatch(r"x\d{4}", row["id"]), row["id"]
        assert row["style"] in STYLES, row["id"]
        assert row["family"] in families, row["id"]
        assert isinstance(row["text"], str) and row["text"].strip(), row["id"]
        assert set(row["targets"]) <= public, (row["id"], set(row["targets"]) - public)
        assert len(row["targets"]) == len(set(row["targets"])), row["id"]
        if row["style"] == "generic":
            assert row["targets"] == [], row["id"]
        else:
            assert 1 <= len(row["targets"]) <= 2, row["id"]
            assert row["family"] in {family_of[t] for t in row["targets"]}, row["id"]


def test_every_public_scenario_has_enough_clauses_of_each_style(rows, heldout):
    counts = Counter(
        (row["targets"][0], row["style"]) for row in _all(rows) if len(row["targets"]) == 1
    )
    short = [
        (sid, style, counts[(sid, style)])
        for sid in heldout.ids
        for style, minimum in MIN_PER_SCENARIO.items()
        if counts[(sid, style)] < minimum
    ]
    assert not short


def test_generic_clauses_are_many_and_cover_every_family(rows, heldout):
    generic = [row for row in _all(rows) if row["style"] == "generic"]
    assert len(generic) >= MIN_GENERIC
    assert {row["family"] for row in generic} == set(heldout.family_of.values()) | {"other"}


def test_two_target_clauses_are_few_and_all_in_holdout(rows):
    two = [row for row in _all(rows) if len(row["targets"]) == 2]
    low, high = TWO_TARGET_RANGE
    assert low <= len(two) <= high
    assert all(row in rows["holdout"] for row in two)


def test_no_duplicate_texts(rows):
    texts = Counter(_fold(row["text"]) for row in _all(rows))
    assert [t for t, n in texts.items() if n > 1] == []


def test_splits_are_disjoint_by_scenario_and_cover_the_set(rows, heldout):
    targeted = {split: {t for row in rows[split] for t in row["targets"]} for split in SPLITS}
    assert not targeted["tune"] & targeted["holdout"]
    assert targeted["tune"] | targeted["holdout"] == set(heldout.ids)
    # At least one scenario of every family is tuned on, and about 40% of the scenarios are.
    family_of = heldout.family_of
    assert {family_of[s] for s in targeted["tune"]} == set(family_of.values())
    assert 0.3 <= len(targeted["tune"]) / len(heldout.ids) <= 0.5


def test_generic_clauses_are_split_about_40_60(rows):
    tune = sum(row["style"] == "generic" for row in rows["tune"])
    total = tune + sum(row["style"] == "generic" for row in rows["holdout"])
    assert 0.35 <= tune / total <= 0.45


def test_paraphrases_carry_no_numbers_or_distinctive_phrases_of_their_targets(rows, heldout):
    phrases = heldout.phrases
    for row in _all(rows):
        if row["style"] != "paraphrase":
            continue
        assert not re.search(r"\d", row["text"]), row["id"]
        folded = _fold(row["text"])
        found = [p for t in row["targets"] for p in phrases[t] if p in folded]
        assert not found, (row["id"], found)


def test_generic_clauses_name_no_scenario(rows, heldout):
    markers = {sid: [_fold(sid), *phrases] for sid, phrases in heldout.phrases.items()}
    for row in _all(rows):
        if row["style"] != "generic":
            continue
        folded = _fold(row["text"])
        found = {sid: [m for m in ms if m in folded] for sid, ms in markers.items()}
        assert not {sid: m for sid, m in found.items() if m}, row["id"]
