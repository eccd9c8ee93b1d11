"""Attribution on planted histories: awareness standardised within scenarios, patching evidence."""

from __future__ import annotations

import numpy as np
import pytest
from analysis_fixtures import (
    BASE_SPEC,
    GENERIC_EDIT,
    Planted,
    add_revisions,
    add_samples,
    content_hash,
    patch_naming,
    planted,
    scenario_ids,
    uniform,
)

from audit.analysis import detect
from audit.analysis.estimates import load_cells
from audit.config import AuditConfig
from audit.store import Store

CONFIG = AuditConfig()


def _awareness_unrelated_to_behaviour(store: Store) -> None:
    """The reviewer's counterexample, on 32 scenarios and 40 epochs.

    16 scenarios are never covert and 80% of their samples are aware, at both points. In the
    other 16, awareness rises from 0 to 50% while the covert rate falls from 0.5 to 0.4 in aware
    and unaware samples alike: within every scenario awareness changes nothing.
    """
    ids = scenario_ids()[:32]
    quiet, moving = ids[:16], ids[16:]
    before = Planted(
        covert=dict.fromkeys(quiet, 0.0) | dict.fromkeys(moving, 0.5),
        aware=dict.fromkeys(quiet, 0.8) | dict.fromkeys(moving, 0.0),
    )
    after = Planted(
        covert=dict.fromkeys(quiet, 0.0) | dict.fromkeys(moving, 0.4),
        aware=dict.fromkeys(quiet, 0.8) | dict.fromkeys(moving, 0.5),
        covert_aware=dict.fromkeys(moving, 0.4),
    )
    add_revisions(store, [BASE_SPEC, BASE_SPEC + GENERIC_EDIT])
    add_samples(store, "m", BASE_SPEC, before, epochs=40)
    add_samples(store, "m", BASE_SPEC + GENERIC_EDIT, after, epochs=40)


def test_awareness_that_changes_nothing_within_scenarios_explains_nothing(store: Store) -> None:
    _awareness_unrelated_to_behaviour(store)
    (finding,) = detect(store, CONFIG)
    assert finding.kind == "drop"
    assert finding.delta == pytest.approx(-0.05)
    # Pooled over scenarios, aware samples (mostly from never-covert scenarios) look honest and
    # the whole drop was put on awareness; within scenarios there is no awareness effect at all.
    assert finding.share("eval_awareness") == 0.0
    assert finding.primary_cause == "genuine"


def test_the_awareness_part_is_zero_in_every_scenario_of_the_counterexample(store: Store) -> None:
    from audit.analysis.attribution import awareness_decomposition

    _awareness_unrelated_to_behaviour(store)
    cells = {cell.key.content_hash: cell for cell in load_cells(store).values()}
    before = cells[content_hash(BASE_SPEC)]
    after = cells[content_hash(BASE_SPEC + GENERIC_EDIT)]
    part, change = awareness_decomposition(before, after)
    assert np.allclose(part, 0.0)
    # The moving scenarios fall by 10 points, the quiet ones stay: after minus before.
    assert sorted(np.round(change, 6).tolist()) == [-0.1] * 16 + [0.0] * 16


def test_awareness_that_suppresses_covert_actions_gets_its_share_with_an_interval(
    store: Store,
) -> None:
    # Aware samples are honest; unaware ones keep the baseline rate, varying by scenario.
    ids = scenario_ids()
    rates = {s: 0.3 + 0.4 * (i % 3) / 2 for i, s in enumerate(ids)}
    aware = {s: 0.3 + 0.4 * (i % 2) for i, s in enumerate(ids)}
    add_revisions(store, [BASE_SPEC, BASE_SPEC + GENERIC_EDIT])
    add_samples(store, "m", BASE_SPEC, Planted(rates, {}))
    add_samples(
        store,
        "m",
        BASE_SPEC + GENERIC_EDIT,
        Planted(rates, aware, covert_aware=dict.fromkeys(ids, 0.0)),
    )
    (finding,) = detect(store, CONFIG)
    assert (finding.kind, finding.primary_cause) == ("drop", "eval_awareness")
    cause = finding.causes[0]
    assert cause["share"] == pytest.approx(1.0, abs=0.02)
    evidence = cause["evidence"]
    assert evidence["unaware_near_baseline"] is True
    assert evidence["unaware_change"] == pytest.approx(0.0, abs=0.02)
    low, high = evidence["share_ci"]
    assert low <= cause["share"] <= high


def test_awareness_is_not_credited_when_unaware_samples_dropped_as_much(store: Store) -> None:
    # Awareness rises, but the unaware samples fall from 0.5 to 0.2 too: not awareness's doing.
    ids = scenario_ids()
    add_revisions(store, [BASE_SPEC, BASE_SPEC + GENERIC_EDIT])
    add_samples(store, "m", BASE_SPEC, planted(uniform(0.5)))
    add_samples(
        store,
        "m",
        BASE_SPEC + GENERIC_EDIT,
        Planted(uniform(0.2), uniform(0.5), covert_aware=dict.fromkeys(ids, 0.0)),
    )
    (finding,) = detect(store, CONFIG)
    assert finding.share("eval_awareness") == 0.0
    assert finding.primary_cause == "genuine"
    check = finding.evidence["attribution_checks"]["eval_awareness"]
    assert check["awareness_p_value"] < 0.05
    assert check["unaware_change"] == pytest.approx(-0.3)
    assert check["unaware_near_baseline"] is False


def test_an_edit_that_follows_failures_is_evidence_of_patching(store: Store) -> None:
    ids = scenario_ids()
    named = ids[:3]
    # The edit names the three scenarios failing most; they drop (unevenly, so a bootstrap over
    # three scenarios cannot exclude "no extra drop"), while the rest drop a little too.
    before = uniform(0.3) | dict(zip(named, (0.95, 0.9, 0.85), strict=True))
    after = uniform(0.2) | dict(zip(named, (0.05, 0.8, 0.75), strict=True))
    add_revisions(store, [BASE_SPEC, BASE_SPEC + patch_naming(named)])
    add_samples(store, "m", BASE_SPEC, planted(before))
    add_samples(store, "m", BASE_SPEC + patch_naming(named), planted(after))
    (finding,) = detect(store, CONFIG)
    assert finding.kind == "drop"
    patching = next(c for c in finding.causes if c["cause"] == "spec_patching")
    evidence = patching["evidence"]
    assert evidence["did_ci_low"] < 0 < evidence["did_ci_high"]
    assert evidence["unexposed_drop_p_value"] < 0.05
    assert evidence["edit_follows_failures"] is True
    assert evidence["concentrated_by"] == "exact_tests"
    # The excess of the named scenarios' drop over the others' (their earlier rates shrunk
    # toward the set's mean first), over the whole drop: 3 x did of -(0.9 + 0.1 + 0.1 + 3.1).
    assert evidence["did"] > evidence["did_raw"]
    assert patching["share"] == pytest.approx(3 * evidence["did"] / -4.2, abs=1e-3)


def test_a_quiet_control_does_not_inflate_the_awareness_share(store: Store) -> None:
    # 12 scenarios x 20 epochs: 10% of samples become aware (and honest), the unaware ones fall
    # from 30% to 28% (5 of 18): a drop of 5 points, 0.028 of it the awareness part. The
    # scenarios no patch moves (all of them, unexposed) did not fall significantly, so genuine
    # improvement is not established; the rest was once put on awareness too (share 1.0, with
    # an interval of its own unscaled share far below it).
    from audit.analysis.attribution import attribute_drop

    ids = scenario_ids()[:12]
    add_revisions(store, [BASE_SPEC, BASE_SPEC + GENERIC_EDIT])
    add_samples(store, "m", BASE_SPEC, planted(uniform(0.3, ids)))
    after = Planted(uniform(0.3, ids), uniform(0.1, ids), covert_aware=dict.fromkeys(ids, 0.0))
    add_samples(store, "m", BASE_SPEC + GENERIC_EDIT, after)
    cells = {cell.key.content_hash: cell for cell in load_cells(store).values()}
    before_cell = cells[content_hash(BASE_SPEC)]
    after_cell = cells[content_hash(BASE_SPEC + GENERIC_EDIT)]
    exposed = np.zeros(len(before_cell.scenario_ids), dtype=bool)
    attribution = attribute_drop(
        before_cell, after_cell, exposed, alpha=0.05, resamples=400, seed=1
    )
    shares = {cause.cause: cause.share for cause in attribution.causes}
    assert attribution.checks["eval_awareness"]["awareness_p_value"] < 0.05
    assert shares["eval_awareness"] == pytest.approx(0.1 * 5 / 18 / 0.05, abs=1e-6)
    assert shares["genuine"] == pytest.approx(1 - shares["eval_awareness"], abs=1e-6)
    genuine = next(c for c in attribution.causes if c.cause == "genuine")
    assert genuine.evidence["established"] is False
    low, high = attribution.checks["eval_awareness"]["share_ci"]  # rounded to 4 places
    assert low - 1e-4 <= shares["eval_awareness"] <= high + 1e-4
