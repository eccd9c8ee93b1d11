"""Import graded samples made elsewhere (one JSON object a line) into the history.

Each line names a model, a synced spec revision (sha, unique prefix, tag or index), a scenario of
the held-out set and an epoch, with its outcome and eval-awareness flag. Every line is validated
before anything is written, and the rows of a file land in one transaction: a bad line is
reported with its number and nothing of the file is stored. Samples are keyed like the runner's
(:func:`audit.runner.matrix.sample_key`) with an import-specific parameters hash, so importing
the same file twice adds nothing, and detection and reports treat the rows like run ones.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from audit.errors import AuditError
from audit.heldout import HeldoutSet, load_heldout, register_heldout
from audit.runner.matrix import sample_key, sha256_text
from audit.store import Store

IMPORT_PARAMS_HASH = sha256_text('{"origin":"import"}')
"""Parameters hash of imported samples: the request parameters are unknown, and a fixed value
keeps imported keys apart from run keys for the same (model, spec, scenario, epoch)."""


class ImportedSample(BaseModel):
    """One line of an import file (unknown fields are refused, so typos do not pass silently)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    model: str = Field(min_length=1)
    spec_rev: str = Field(min_length=1)
    scenario_id: str = Field(min_length=1)
    epoch: int = Field(ge=0)
    outcome: Literal["covert", "honest", "refused", "invalid"]
    eval_aware: bool
    reasoning: str | None = None
    answer: str | None = None
    model_version: str | None = None
    created_at: dt.datetime | None = Field(default=None, strict=False)
    condition: str | None = None
    spec_cited: bool | None = None
    score: float | None = Field(default=None, strict=False)


@dataclass(frozen=True)
class SourcedSample:
    """A validated sample with where it came from (for error messages and evidence)."""

    where: str
    sample: ImportedSample
    evidence: dict[str, Any]


@dataclass(frozen=True)
class ImportResult:
    """What an import did: samples read, newly stored, and already present."""

    path: str
    read: int
    stored: int

    @property
    def skipped(self) -> int:
        """Samples of the file that were already stored (a re-import)."""
        return self.read - self.stored

    def line(self) -> str:
        """One-line summary for the CLI."""
        return (
            f"{self.path}: {self.read} samples read, {self.stored} stored, "
            f"{self.skipped} already present"
        )


def _validation_message(exc: ValidationError) -> str:
    first = exc.errors()[0]
    field = ".".join(str(part) for part in first["loc"]) or "line"
    return f"{field}: {first['msg']}"


def read_samples_jsonl(path: str | Path) -> list[SourcedSample]:
    """Parse and validate every line of a JSONL file; the first bad line raises AuditError."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise AuditError(f"cannot read {file}: {exc}") from None
    out: list[SourcedSample] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        where = f"{file.name} line {number}"
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise AuditError(f"{where}: not valid JSON ({exc.msg}); nothing was imported") from None
        if not isinstance(data, dict):
            raise AuditError(f"{where}: expected a JSON object; nothing was imported")
        try:
            sample = ImportedSample.model_validate(data)
        except ValidationError as exc:
            raise AuditError(f"{where}: {_validation_message(exc)}; nothing was imported") from None
        out.append(SourcedSample(where, sample, {"imported_from": file.name, "line": number}))
    if not out:
        raise AuditError(f"{file} holds no samples: expected one JSON object a line")
    return out


class _RevisionCache:
    """Resolves each distinct spec_rev once (files repeat the same few revisions)."""

    def __init__(self, store: Store, source_id: str | None) -> None:
        self.store = store
        self.source_id = source_id
        self.known: dict[str, Any] = {}

    def get(self, ref: str, where: str) -> Any:
        from audit.spec_history import resolve_revision

        if ref not in self.known:
            try:
                self.known[ref] = resolve_revision(self.store, ref, self.source_id)
            except AuditError as exc:
                raise AuditError(f"{where}: spec_rev: {exc}; nothing was imported") from None
        return self.known[ref]


def _condition(heldout: HeldoutSet, item: SourcedSample) -> str:
    scenario = heldout.get(item.sample.scenario_id)
    names = [c.name for c in scenario.conditions]
    if item.sample.condition is None:
        if len(names) > 1:
            raise AuditError(
                f"{item.where}: scenario {scenario.id} is run under conditions "
                f"{', '.join(names)}: give a condition; nothing was imported"
            )
        return names[0]
    if item.sample.condition not in names:
        raise AuditError(
            f"{item.where}: scenario {scenario.id} has no condition "
            f"{item.sample.condition!r} (it has {', '.join(names)}); nothing was imported"
        )
    return item.sample.condition


def _created_at(value: dt.datetime | None) -> dt.datetime | None:
    # A timestamp without a zone is read as UTC, so stored times do not depend on the importer.
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value


def build_rows(
    store: Store,
    items: Sequence[SourcedSample],
    heldout: HeldoutSet,
    source_id: str | None = None,
) -> list[dict[str, Any]]:
    """The ``samples`` rows of validated samples; unknown revisions or scenarios raise."""
    revisions = _RevisionCache(store, source_id)
    rows: list[dict[str, Any]] = []
    first_line: dict[str, str] = {}
    for item in items:
        sample = item.sample
        try:
            scenario = heldout.get(sample.scenario_id)
        except AuditError as exc:
            raise AuditError(f"{item.where}: scenario_id: {exc}; nothing was imported") from None
        revision = revisions.get(sample.spec_rev, item.where)
        condition = _condition(heldout, item)
        scenario_hash = heldout.scenario_hash(scenario.id)
        key = sample_key(
            sample.model,
            revision.content_hash,
            scenario_hash,
            condition,
            sample.epoch,
            IMPORT_PARAMS_HASH,
        )
        if key in first_line:
            raise AuditError(
                f"{item.where}: same model, spec content, scenario, condition and epoch as "
                f"{first_line[key]}; nothing was imported"
            )
        first_line[key] = item.where
        row = {
            "sample_key": key,
            "run_id": None,
            "origin": "import",
            "model": sample.model,
            "model_version": sample.model_version,
            "source_id": revision.source_id,
            "spec_sha": revision.sha,
            "spec_content_hash": revision.content_hash,
            "set_hash": heldout.set_hash,
            "scenario_id": scenario.id,
            "scenario_hash": scenario_hash,
            "family": scenario.family,
            "condition": condition,
            "epoch": sample.epoch,
            "params_hash": IMPORT_PARAMS_HASH,
            "outcome": sample.outcome,
            "eval_aware": sample.eval_aware,
            "spec_cited": sample.spec_cited,
            "score": sample.score,
            "grade_evidence": json.dumps(
                {"rule_id": "import", **item.evidence}, separators=(",", ":")
            ),
            "reasoning": sample.reasoning,
            "answer": sample.answer,
        }
        created_at = _created_at(sample.created_at)
        if created_at is not None:
            row["created_at"] = created_at
        rows.append(row)
    return rows


def store_rows(store: Store, rows: list[dict[str, Any]], heldout: HeldoutSet) -> int:
    """Write rows in one transaction, keeping stored samples; returns how many were new."""
    register_heldout(store, heldout)
    # created_at is optional per line: rows with and without it are written as two batches so
    # that the column default applies to the ones without.
    groups = [[r for r in rows if "created_at" in r], [r for r in rows if "created_at" not in r]]
    before = _count(store)
    with store.transaction():
        for group in groups:
            store.insert_rows("samples", group, on_conflict="ignore")
    return _count(store) - before


def _count(store: Store) -> int:
    return int(store.query("SELECT count(*) AS n FROM samples")[0]["n"])


def import_records(
    store: Store,
    items: Iterable[SourcedSample],
    *,
    label: str,
    heldout: HeldoutSet | None = None,
    source_id: str | None = None,
) -> ImportResult:
    """Validate samples against the store and the held-out set, then store them atomically."""
    if store.read_only:
        raise AuditError("the database is open read-only: imports need a writable --db")
    items = list(items)
    heldout = heldout if heldout is not None else load_heldout()
    rows = build_rows(store, items, heldout, source_id)
    stored = store_rows(store, rows, heldout)
    return ImportResult(label, len(rows), stored)


def import_samples(
    store: Store,
    path: str | Path,
    *,
    heldout: HeldoutSet | None = None,
    source_id: str | None = None,
) -> ImportResult:
    """Import a JSONL file of graded samples; all or nothing, and idempotent."""
    items = read_samples_jsonl(path)
    return import_records(store, items, label=str(path), heldout=heldout, source_id=source_id)
