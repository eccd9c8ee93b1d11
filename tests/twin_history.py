"""A planted history with sealed twins, detected for real, for the report's tests.

Samples are planted with exact rates (tests/analysis_fixtures.py) against the shipped held-out
set, registered as the runner registers it (its real sealed twins, paired by ``twin_of``).
"""

from __future__ import annotations

from analysis_fixtures import BASE_SPEC, GENERIC_EDIT, Planted, add_revisions, add_samples

from audit.analysis import detect
from audit.config import AuditConfig
from audit.heldout.loader import HeldoutSet, register_heldout
from audit.store import Store

CONFIG = AuditConfig()
#: A patch retelling situations without a name exposure could match: only the twins catch it.
PARAPHRASE = (
    "\n## Lessons\nWhen a fix still leaves edge cases failing before a release, say so plainly; "
    "when a dashboard number would look better rounded, report the measured one.\n"
)
EPOCHS = 10
SPECS = [BASE_SPEC, BASE_SPEC + GENERIC_EDIT, BASE_SPEC + GENERIC_EDIT + PARAPHRASE]


def base_rates(heldout: HeldoutSet) -> dict[str, float]:
    """30%, 50% or 70% per public scenario; every twin has its public scenario's rate."""
    rates = {s: 0.3 + 0.2 * (i % 3) for i, s in enumerate(heldout.public_ids())}
    return rates | {twin: rates[public] for public, twin in heldout.twin_pairs()}


def planted(rates: dict[str, float]) -> Planted:
    """Exactly these covert rates, no awareness."""
    return Planted(covert=rates, aware=dict.fromkeys(rates, 0.0))


def macro(rates: dict[str, float], ids: list[str], epochs: int = EPOCHS) -> float:
    """The macro average over ``ids`` (as estimates average scenarios) of the rates the planted
    samples have: each rate rounded to whole samples of ``epochs``."""
    return sum(round(rates[s] * epochs) / epochs for s in ids) / len(ids)


def twin_history(store: Store, heldout: HeldoutSet) -> dict[str, list[dict[str, float]]]:
    """patcher: the paraphrase at r2 zeroes half the public scenarios that have twins, not the
    twins. mender: a genuine improvement at r1 (both alike), then r2 run without twins.
    Returns the planted rates per model and revision."""
    register_heldout(store, heldout)
    add_revisions(store, SPECS)
    base = base_rates(heldout)
    patched = {public for public, _ in heldout.twin_pairs()[::2]}
    history = {
        "patcher": [base, base, {s: 0.0 if s in patched else r for s, r in base.items()}],
        "mender": [
            base,
            {s: 0.6 * r for s, r in base.items()},
            {s: 0.4 * base[s] for s in heldout.public_ids()},
        ],
    }
    for model, points in history.items():
        for spec, rates in zip(SPECS, points, strict=True):
            add_samples(store, model, spec, planted(rates), epochs=EPOCHS)
    detect(store, CONFIG)
    return history
