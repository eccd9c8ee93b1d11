"""Planning the run matrix: revisions x models x scenarios x conditions x epochs, and its keys.

Every planned sample gets a ``sample_key``: the sha256 of everything that determines what the
model is asked (model, spec content, scenario, condition, epoch, request parameters). Keys are the
cache: a sample whose key is already in ``samples`` is skipped, so rerunning a matrix is a no-op
and revisions with equal spec content share their samples.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from audit.config import AuditConfig, ModelConfig
from audit.errors import AuditError
from audit.heldout.model import Scenario
from audit.records import SpecRevision
from audit.store import Store


def sha256_text(text: str) -> str:
    """The project's hash format, ``sha256:<hex>``, of a UTF-8 text."""
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


EMPTY_SPEC_HASH = sha256_text("")
"""Spec content hash of samples whose model gets no spec text (placement ``none``)."""


def params_hash(model: ModelConfig) -> str:
    """Hash of the request parameters and spec placement: what changes the request itself."""
    # Unset parameters are left out, so adding an optional parameter to RequestParams later
    # does not change the keys (and void the cache) of every stored sample.
    payload = {**model.params.model_dump(exclude_none=True), "spec_placement": model.spec_placement}
    return sha256_text(json.dumps(payload, sort_keys=True, separators=(",", ":")))


def sample_key(
    model: str,
    spec_content_hash: str,
    scenario_hash: str,
    condition: str,
    epoch: int,
    params: str,
) -> str:
    """The cache key of one sample (a ``sha256:`` hash of its identifying fields)."""
    parts = [model, spec_content_hash, scenario_hash, condition, str(epoch), params]
    return sha256_text("\x1f".join(parts))


def seed_from_key(key: str) -> int:
    """A stable 31-bit seed for the request, so seeded servers answer a sample the same way."""
    return int(key.removeprefix("sha256:")[:8], 16) & 0x7FFFFFFF


@dataclass(frozen=True, slots=True)
class PlannedSample:
    """One cell of the matrix: everything needed to run, grade and store a sample."""

    key: str
    model: ModelConfig
    revision: SpecRevision
    scenario: Scenario
    scenario_hash: str
    condition: str
    epoch: int
    params_hash: str

    @property
    def spec_text(self) -> str | None:
        """The spec text given to the model (None when the model gets no spec)."""
        return None if self.model.spec_placement == "none" else self.revision.text

    @property
    def spec_content_hash(self) -> str:
        return (
            EMPTY_SPEC_HASH if self.model.spec_placement == "none" else self.revision.content_hash
        )


@dataclass(frozen=True)
class RunPlan:
    """The expanded matrix: every distinct sample, and which of them still need running."""

    models: tuple[ModelConfig, ...]
    revisions: tuple[SpecRevision, ...]
    scenario_ids: tuple[str, ...]
    epochs: int
    max_turns: int
    set_hash: str
    cells: int
    """Matrix size before revisions with equal content are merged."""
    samples: tuple[PlannedSample, ...]
    """Distinct samples (one per key)."""
    pending: tuple[PlannedSample, ...] = field(default=())
    """Samples whose key is not stored yet."""
    sealed_ids: frozenset[str] = frozenset()
    """The planned scenarios that are sealed twins."""

    @property
    def skipped(self) -> int:
        return len(self.samples) - len(self.pending)

    @property
    def max_calls(self) -> int:
        """Upper bound of chat completions: every pending sample using every turn."""
        return len(self.pending) * self.max_turns

    def describe(self) -> dict[str, Any]:
        """The plan as plain data (for ``--dry-run`` and the ``runs.config`` column)."""
        return {
            "models": [m.name for m in self.models],
            "revisions": [r.sha[:12] for r in self.revisions],
            "scenarios": len(self.scenario_ids),
            "sealed_twins": len(self.sealed_ids),
            "epochs": self.epochs,
            "matrix_cells": self.cells,
            "distinct_samples": len(self.samples),
            "already_stored": self.skipped,
            "to_run": len(self.pending),
            "max_calls": self.max_calls,
        }


def list_revisions(store: Store, source_id: str | None) -> list[SpecRevision]:
    """Every stored revision of the spec source (the only source when ``source_id`` is None),
    with its text."""
    from audit.spec_history import list_revisions as stored_revisions

    return stored_revisions(store, source_id, with_content=True)


def resolve_revisions(
    store: Store, refs: Sequence[str], source_id: str | None
) -> list[SpecRevision]:
    """Resolve revision references (sha prefix, tag, index, or a range ``A..B`` of them,
    both ends included) through the spec-history stage; each revision once, with its text."""
    from audit.spec_history import list_revisions as stored_revisions
    from audit.spec_history import resolve_revision

    revisions = []
    for ref in refs:
        if ".." not in ref:
            revisions.append(resolve_revision(store, ref, source_id=source_id))
            continue
        start_ref, _, end_ref = ref.partition("..")
        if not start_ref or not end_ref:
            raise AuditError(f"revision range {ref!r} needs both ends, e.g. 0..-1 or v1.0..v1.1")
        start = resolve_revision(store, start_ref, source_id=source_id)
        end = resolve_revision(store, end_ref, source_id=source_id)
        if start.seq > end.seq:
            raise AuditError(
                f"revision range {ref!r} runs backwards ({start.seq} > {end.seq}): swap its ends"
            )
        revisions += [
            r
            for r in stored_revisions(store, start.source_id, with_content=True)
            if start.seq <= r.seq <= end.seq
        ]
    unique: dict[str, SpecRevision] = {}
    for revision in revisions:
        unique.setdefault(revision.sha, revision)
    return list(unique.values())


def expand(
    *,
    models: Sequence[ModelConfig],
    revisions: Sequence[SpecRevision],
    scenarios: Sequence[tuple[Scenario, str]],
    epochs: int,
) -> tuple[int, list[PlannedSample]]:
    """All cells of the matrix, merged by key; returns (cells, distinct samples in plan order).

    ``scenarios`` pairs each scenario with its hash. Order is revision-major so that a partial
    run covers whole revisions first.
    """
    seen: set[str] = set()
    planned: list[PlannedSample] = []
    cells = 0
    for revision in revisions:
        for model in models:
            p_hash = params_hash(model)
            spec_hash = EMPTY_SPEC_HASH if model.spec_placement == "none" else revision.content_hash
            for scenario, s_hash in scenarios:
                for condition in scenario.conditions:
                    for epoch in range(epochs):
                        cells += 1
                        key = sample_key(
                            model.name, spec_hash, s_hash, condition.name, epoch, p_hash
                        )
                        if key in seen:
                            continue
                        seen.add(key)
                        planned.append(
                            PlannedSample(
                                key=key,
                                model=model,
                                revision=revision,
                                scenario=scenario,
                                scenario_hash=s_hash,
                                condition=condition.name,
                                epoch=epoch,
                                params_hash=p_hash,
                            )
                        )
    return cells, planned


def stored_keys(store: Store, keys: Sequence[str]) -> set[str]:
    """Which of ``keys`` are already in ``samples`` (one semi-join, not one query per key).

    The keys go to DuckDB as one list parameter: 3 ms for 1,368 keys and 60 ms for 100,000
    here, and no pyarrow (whose ``pa.array`` imports pandas: 0.2-0.3 s, most of a cached
    rerun's time).
    """
    if not keys:
        return set()
    rows = store.con.execute(
        "SELECT s.sample_key FROM samples s "
        "SEMI JOIN (SELECT unnest(?::VARCHAR[]) AS sample_key) k USING (sample_key)",
        [list(keys)],
    ).fetchall()
    return {row[0] for row in rows}


def select_models(config: AuditConfig, names: Sequence[str] | None) -> tuple[ModelConfig, ...]:
    """The configured models named (all of them when ``names`` is None)."""
    if names is None:
        if not config.models:
            raise AuditError("no models configured: add [[models]] entries to audit.toml")
        return tuple(config.models)
    if not names:
        raise AuditError("no model given: pass --model NAME")
    return tuple(config.model(name) for name in dict.fromkeys(names))
