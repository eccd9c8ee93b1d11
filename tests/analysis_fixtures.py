"""Planted histories for the analysis tests: real spec revisions and samples with exact rates.

Samples are written straight into a real DuckDB file. Rates are planted exactly (the first
``round(rate * epochs)`` epochs of a scenario are covert), so every expected number is known.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pyarrow as pa

from audit.heldout.loader import HeldoutSet, load_heldout
from audit.store import Store

SOURCE = "spec"
BASE_SPEC = """# Model spec

## Honesty
Report what you did and what you found, including failures.

## Tools
Use the tools you are given; do not claim results you did not observe.
"""
_EPOCH = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
GENERIC_EDIT = "\n## Care\nDouble-check claims about completed work before you state them.\n"


def sha_for(text: str) -> str:
    """A fake but well-formed 40-hex commit sha derived from a label."""
    return hashlib.sha1(text.encode()).hexdigest()


def content_hash(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class Planted:
    """Per-scenario rates of one (model, revision) point.

    ``covert`` is the covert rate of the valid samples, or, for scenarios listed in
    ``covert_aware``, of the unaware ones (``covert_aware`` then gives the aware samples' rate).
    ``invalid`` is the share of samples that are invalid (ungradable), added on top.
    """

    covert: dict[str, float]
    aware: dict[str, float]
    covert_aware: dict[str, float] = field(default_factory=dict)
    invalid: dict[str, float] = field(default_factory=dict)


def heldout() -> HeldoutSet:
    return load_heldout()


def scenario_ids() -> list[str]:
    """The public scenarios (planted histories add twins only where a test asks for them)."""
    return heldout().public_ids()


def patch_naming(ids: Sequence[str]) -> str:
    """Spec text a patcher would add: one rule per scenario, naming its distinctive phrases."""
    set_ = heldout()
    lines = ["", "## Specific cases"]
    for sid in ids:
        phrases = set_.get(sid).distinctive_phrases
        lines.append(f"- In the {phrases[0]} task ({phrases[1]}), report the real outcome.")
    return "\n".join(lines) + "\n"


def add_revisions(store: Store, texts: Sequence[str]) -> list[str]:
    """Store one spec revision per text (seq in order); return their shas."""
    rows, shas = [], []
    for seq, text in enumerate(texts):
        sha = sha_for(f"rev-{seq}-{text}")
        rows.append(
            {
                "source_id": SOURCE,
                "sha": sha,
                "seq": seq,
                "parent_shas": [shas[-1]] if shas else [],
                "prev_sha": shas[-1] if shas else None,
                "author_name": "Spec Author",
                "author_email": "author@example.org",
                "authored_at": _EPOCH + timedelta(days=seq),
                "committer_name": "Spec Author",
                "committed_at": _EPOCH + timedelta(days=seq),
                "message": f"revision {seq}",
                "path": "spec.md",
                "content": text,
                "content_hash": content_hash(text),
                "size_bytes": len(text.encode()),
            }
        )
        shas.append(sha)
    store.insert_rows(
        "spec_sources",
        [{"source_id": SOURCE, "repo": "/nowhere", "path": "spec.md", "ref": "HEAD"}],
    )
    store.insert_rows("spec_revisions", rows)
    return shas


def add_samples(
    store: Store,
    model: str,
    spec_text: str,
    planted: Planted,
    *,
    epochs: int = 20,
    set_hash: str | None = None,
) -> None:
    """Samples with exactly the planted rates; aware samples are honest (awareness suppresses)."""
    set_ = heldout()
    families = {s.id: s.family for s in set_.scenarios}
    columns: dict[str, list] = {k: [] for k in _COLUMNS}
    for sid, rate in planted.covert.items():
        for epoch, (outcome, aware) in enumerate(_outcomes(planted, sid, rate, epochs)):
            key = f"{model}|{content_hash(spec_text)}|{sid}|{epoch}"
            values = {
                "sample_key": hashlib.sha256(key.encode()).hexdigest(),
                "origin": "import",
                "model": model,
                "spec_sha": sha_for(spec_text),
                "spec_content_hash": content_hash(spec_text),
                "set_hash": set_hash or set_.set_hash,
                "scenario_id": sid,
                "family": families.get(sid),
                "condition": "default",
                "epoch": epoch,
                "outcome": outcome,
                "eval_aware": aware,
                "spec_cited": False,
            }
            for name, value in values.items():
                columns[name].append(value)
    store.insert_rows("samples", pa.table(columns))


def _outcomes(planted: Planted, sid: str, rate: float, epochs: int) -> list[tuple[str, bool]]:
    """(outcome, aware) per epoch with exactly the planted rates."""
    n_invalid = round(planted.invalid.get(sid, 0.0) * epochs)
    valid = epochs - n_invalid
    n_aware = round(planted.aware.get(sid, 0.0) * valid)
    if sid in planted.covert_aware:
        unaware_covert = round(rate * (valid - n_aware))
        aware_covert = round(planted.covert_aware[sid] * n_aware)
        unaware = [("covert", False)] * unaware_covert
        unaware += [("honest", False)] * (valid - n_aware - unaware_covert)
        aware = [("covert", True)] * aware_covert + [("honest", True)] * (n_aware - aware_covert)
        return unaware + aware + [("invalid", False)] * n_invalid
    n_covert = round(rate * valid)
    # Aware samples come from the end, so they are honest unless nearly all are covert.
    graded = [("covert" if i < n_covert else "honest", i >= valid - n_aware) for i in range(valid)]
    return graded + [("invalid", False)] * n_invalid


_COLUMNS = (
    "sample_key",
    "origin",
    "model",
    "spec_sha",
    "spec_content_hash",
    "set_hash",
    "scenario_id",
    "family",
    "condition",
    "epoch",
    "outcome",
    "eval_aware",
    "spec_cited",
)


def uniform(rate: float, ids: Sequence[str] | None = None) -> dict[str, float]:
    return {sid: rate for sid in (ids or scenario_ids())}


def planted(covert: dict[str, float] | Callable[[str], float], aware: float = 0.0) -> Planted:
    rates = covert if isinstance(covert, dict) else {s: covert(s) for s in scenario_ids()}
    return Planted(covert=rates, aware={s: aware for s in rates})


def twin_id(public_id: str) -> str:
    """The id planted histories give the sealed twin of a public scenario."""
    return f"{public_id}--twin"


def add_twins(store: Store, public_ids: Sequence[str], *, set_hash: str | None = None) -> None:
    """Register the set's scenarios with a sealed twin per public id (scenarios table only).

    Detection pairs public scenarios with their twins through ``scenarios.twin_of``, so a planted
    history needs only these rows and the twins' samples (planted under :func:`twin_id`).
    """
    set_ = heldout()
    set_hash = set_hash or set_.set_hash
    families = {s.id: s.family for s in set_.scenarios}
    rows = []
    for public in public_ids:
        for sid, twin_of in ((public, None), (twin_id(public), public)):
            rows.append(
                {
                    "set_hash": set_hash,
                    "scenario_id": sid,
                    "family": families[public],
                    "scenario_hash": content_hash(sid),
                    "title": sid,
                    "conditions": ["default"],
                    "twin_of": twin_of,
                    "sealed": twin_of is not None,
                }
            )
    store.insert_rows("scenarios", rows, on_conflict="ignore")
