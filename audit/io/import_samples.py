"""Import graded samples made elsewhere (one JSON object a line) into the history.

A line is either a *graded sample*: a model, a synced spec revision (sha, unique prefix, tag or
index), a scenario of the held-out set and an epoch, with its outcome and eval-awareness flag;
or a *samples row* exactly as ``audit export --format jsonl`` writes it (it has a
``sample_key``), which is stored unchanged after its revision, scenario and key are checked.

Files are streamed: lines are validated and staged in batches of :data:`IMPORT_BATCH_ROWS` in a
temporary table, and only when the whole file is valid do the rows reach ``samples``, in one
statement of one transaction. A bad line is reported with its number and nothing of the file is
stored; a crash part-way stores nothing either. Graded samples are keyed like the runner's
(:func:`audit.runner.matrix.sample_key`) with an import-specific parameters hash, so importing
the same file twice adds nothing, and detection and reports treat the rows like run ones.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from audit.errors import AuditError
from audit.heldout import HeldoutSet, load_heldout, register_heldout
from audit.progress import NullProgress, Progress
from audit.records import Outcome
from audit.runner.matrix import sample_key, sha256_text
from audit.store import Store

IMPORT_PARAMS_HASH = sha256_text('{"origin":"import"}')
"""Parameters hash of imported samples: the request parameters are unknown, and a fixed value
keeps imported keys apart from run keys for the same (model, spec, scenario, epoch)."""

IMPORT_BATCH_ROWS = 5_000
"""Lines validated and staged at a time: memory stays flat however long the file is."""

_STAGING = "_specdrift_import"
_JSON_COLUMNS = ("grade_evidence", "awareness_evidence", "transcript")


def _timestamp(value: Any) -> Any:
    # DuckDB writes offsets as "+01"; Python's ISO parser reads that, pydantic's does not.
    if isinstance(value, str):
        try:
            return dt.datetime.fromisoformat(value)
        except ValueError:
            return value
    return value


Timestamp = Annotated[dt.datetime, BeforeValidator(_timestamp)]


class ImportedSample(BaseModel):
    """One graded sample line (unknown fields are refused, so typos do not pass silently)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    model: str = Field(min_length=1)
    spec_rev: str = Field(min_length=1)
    scenario_id: str = Field(min_length=1)
    epoch: int = Field(ge=0)
    outcome: Outcome
    eval_aware: bool
    reasoning: str | None = None
    answer: str | None = None
    model_version: str | None = None
    created_at: Timestamp | None = Field(default=None, strict=False)
    condition: str | None = None
    spec_cited: bool | None = None
    score: float | None = Field(default=None, strict=False)


class ExportedSample(BaseModel):
    """One ``samples`` row as ``audit export --format jsonl`` writes it.

    Further fields are accepted when they are columns of ``samples`` (a newer schema's export).
    """

    model_config = ConfigDict(extra="allow", strict=True)

    sample_key: str = Field(min_length=1)
    run_id: str | None = None
    origin: Literal["run", "import"]
    model: str = Field(min_length=1)
    model_version: str | None = None
    source_id: str | None = None
    spec_sha: str = Field(min_length=1)
    spec_content_hash: str = Field(min_length=1)
    set_hash: str = Field(min_length=1)
    scenario_id: str = Field(min_length=1)
    scenario_hash: str | None = None
    family: str | None = None
    condition: str = "default"
    epoch: int = Field(ge=0)
    params_hash: str | None = None
    outcome: Outcome
    eval_aware: bool
    spec_cited: bool | None = None
    score: float | None = Field(default=None, strict=False)
    grade_evidence: Any = None
    awareness_evidence: Any = None
    reasoning: str | None = None
    answer: str | None = None
    transcript: Any = None
    turns: int | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    reasoning_tokens: int | None = None
    latency_ms: float | None = Field(default=None, strict=False)
    finish_reason: str | None = None
    system_fingerprint: str | None = None
    created_at: Timestamp = Field(strict=False)


@dataclass(frozen=True)
class SourcedSample:
    """A validated line with where it came from (for error messages and evidence)."""

    where: str
    sample: ImportedSample | ExportedSample
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


def _parse_line(raw: str, where: str) -> ImportedSample | ExportedSample:
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise AuditError(f"{where}: not valid JSON ({exc.msg}); nothing was imported") from None
    if not isinstance(data, dict):
        raise AuditError(f"{where}: expected a JSON object; nothing was imported")
    kind = ExportedSample if "sample_key" in data else ImportedSample
    try:
        return kind.model_validate(data)
    except ValidationError as exc:
        raise AuditError(f"{where}: {_validation_message(exc)}; nothing was imported") from None


def read_samples_jsonl(
    path: str | Path, progress: Progress | None = None
) -> Iterator[SourcedSample]:
    """Parse and validate a JSONL file line by line; the first bad line raises AuditError.

    ``progress.advance`` is called with the bytes of each line read.
    """
    file = Path(path)
    progress = progress or NullProgress()
    try:
        handle = file.open("rb")
    except OSError as exc:
        raise AuditError(f"cannot read {file}: {exc}") from None
    found = 0
    with handle:
        # Bytes, decoded line by line, so a bad byte is reported at its own line.
        for number, data in enumerate(handle, start=1):
            progress.advance(len(data))
            where = f"{file.name} line {number}"
            try:
                raw = data.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError:
                raise AuditError(f"{where}: not UTF-8 text; nothing was imported") from None
            if not raw.strip():
                continue
            sample = _parse_line(raw, where)
            found += 1
            yield SourcedSample(where, sample, {"imported_from": file.name, "line": number})
    if not found:
        raise AuditError(f"{file} holds no samples: expected one JSON object a line")


class _RowBuilder:
    """Turns validated lines into ``samples`` rows, checking them against the store."""

    def __init__(self, store: Store, heldout: HeldoutSet, source_id: str | None) -> None:
        self.store = store
        self.heldout = heldout
        self.source_id = source_id
        self.columns = [
            r["column_name"]
            for r in store.query(
                "SELECT column_name FROM duckdb_columns() WHERE schema_name = 'main' "
                "AND database_name = current_database() AND table_name = 'samples' "
                "ORDER BY column_index"
            )
        ]
        self.revisions: dict[str, Any] = {}
        self.content_hashes: dict[str, set[str]] = {}
        self.registered_sets = {
            r["set_hash"] for r in store.query("SELECT set_hash FROM heldout_sets")
        } | {heldout.set_hash}
        self.imported_at = dt.datetime.now(dt.UTC)

    def row(self, item: SourcedSample) -> dict[str, Any]:
        if isinstance(item.sample, ExportedSample):
            row = self._exported_row(item, item.sample)
        else:
            row = self._graded_row(item, item.sample)
        full = dict.fromkeys(self.columns)
        full.update(row)
        full["_where"] = item.where
        return full

    def _revision(self, ref: str, where: str) -> Any:
        from audit.spec_history import resolve_revision

        if ref not in self.revisions:
            try:
                self.revisions[ref] = resolve_revision(self.store, ref, self.source_id)
            except AuditError as exc:
                raise AuditError(f"{where}: spec_rev: {exc}; nothing was imported") from None
        return self.revisions[ref]

    def _condition(self, item: SourcedSample, given: str | None) -> str:
        scenario = self.heldout.get(item.sample.scenario_id)
        names = [c.name for c in scenario.conditions]
        if given is None:
            if len(names) > 1:
                raise AuditError(
                    f"{item.where}: scenario {scenario.id} is run under conditions "
                    f"{', '.join(names)}: give a condition; nothing was imported"
                )
            return names[0]
        if given not in names:
            raise AuditError(
                f"{item.where}: scenario {scenario.id} has no condition "
                f"{given!r} (it has {', '.join(names)}); nothing was imported"
            )
        return given

    def _scenario(self, item: SourcedSample) -> Any:
        try:
            return self.heldout.get(item.sample.scenario_id)
        except AuditError as exc:
            raise AuditError(f"{item.where}: scenario_id: {exc}; nothing was imported") from None

    def _graded_row(self, item: SourcedSample, sample: ImportedSample) -> dict[str, Any]:
        scenario = self._scenario(item)
        revision = self._revision(sample.spec_rev, item.where)
        condition = self._condition(item, sample.condition)
        scenario_hash = self.heldout.scenario_hash(scenario.id)
        created_at = sample.created_at
        if created_at is not None and created_at.tzinfo is None:
            # A timestamp without a zone is read as UTC, so stored times do not depend on the
            # importer's machine.
            created_at = created_at.replace(tzinfo=dt.UTC)
        return {
            "sample_key": sample_key(
                sample.model,
                revision.content_hash,
                scenario_hash,
                condition,
                sample.epoch,
                IMPORT_PARAMS_HASH,
            ),
            "run_id": None,
            "origin": "import",
            "model": sample.model,
            "model_version": sample.model_version,
            "source_id": revision.source_id,
            "spec_sha": revision.sha,
            "spec_content_hash": revision.content_hash,
            "set_hash": self.heldout.set_hash,
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
            "created_at": created_at or self.imported_at,
        }

    def _synced_hashes(self, sha: str) -> set[str]:
        if sha not in self.content_hashes:
            rows = self.store.query("SELECT content_hash FROM spec_revisions WHERE sha = ?", [sha])
            self.content_hashes[sha] = {r["content_hash"] for r in rows}
        return self.content_hashes[sha]

    def _exported_row(self, item: SourcedSample, sample: ExportedSample) -> dict[str, Any]:
        where = item.where
        unknown = sorted(set(sample.model_extra or {}) - set(self.columns))
        if unknown:
            raise AuditError(
                f"{where}: {unknown[0]}: not a column of samples; nothing was imported"
            )
        hashes = self._synced_hashes(sample.spec_sha)
        if not hashes:
            raise AuditError(
                f"{where}: spec_sha: revision {sample.spec_sha[:12]} is not synced here: "
                "run audit specs sync on the same spec history first; nothing was imported"
            )
        if sample.spec_content_hash not in hashes:
            raise AuditError(
                f"{where}: spec_content_hash differs from the synced revision "
                f"{sample.spec_sha[:12]}; nothing was imported"
            )
        if sample.set_hash not in self.registered_sets:
            raise AuditError(
                f"{where}: set_hash: held-out set {sample.set_hash} is not registered here "
                f"(this specdrift's is {self.heldout.set_hash}); nothing was imported"
            )
        if sample.set_hash == self.heldout.set_hash:
            self._check_scenario(item, sample)
        row = sample.model_dump()
        for column in _JSON_COLUMNS:  # DuckDB's own compact form, as its JSON export writes it
            if row[column] is not None:
                row[column] = json.dumps(row[column], ensure_ascii=False, separators=(",", ":"))
        return row

    def _check_scenario(self, item: SourcedSample, sample: ExportedSample) -> None:
        scenario = self._scenario(item)
        self._condition(item, sample.condition)
        expected = self.heldout.scenario_hash(scenario.id)
        if sample.scenario_hash is not None and sample.scenario_hash != expected:
            raise AuditError(
                f"{item.where}: scenario_hash differs from scenario {scenario.id} of the "
                "held-out set; nothing was imported"
            )
        if sample.scenario_hash is not None and sample.params_hash is not None:
            key = sample_key(
                sample.model,
                sample.spec_content_hash,
                sample.scenario_hash,
                sample.condition,
                sample.epoch,
                sample.params_hash,
            )
            if key != sample.sample_key:
                raise AuditError(
                    f"{item.where}: sample_key does not match the line's model, spec, scenario, "
                    "condition, epoch and params_hash (was the line edited?); nothing was imported"
                )


class _Staging:
    """A temporary table holding validated rows until the whole file has been read."""

    def __init__(self, store: Store) -> None:
        self.store = store
        store.con.execute(
            f"CREATE OR REPLACE TEMP TABLE {_STAGING} AS "
            "SELECT *, ''::VARCHAR AS _where, 0::BIGINT AS _ordinal FROM samples LIMIT 0"
        )
        self.rows = 0

    def add(self, rows: list[dict[str, Any]]) -> None:
        for offset, row in enumerate(rows):
            row["_ordinal"] = self.rows + offset
        self.store.insert_rows(_STAGING, rows)
        self.rows += len(rows)

    def first_duplicate(self) -> tuple[str, str] | None:
        """(line, earlier line) of the first line whose key an earlier line already had."""
        found = self.store.con.execute(
            "SELECT _where, first_where FROM ("
            "  SELECT _where, _ordinal,"
            "         first_value(_where) OVER (PARTITION BY sample_key ORDER BY _ordinal)"
            "           AS first_where,"
            "         row_number() OVER (PARTITION BY sample_key ORDER BY _ordinal) AS k"
            f"  FROM {_STAGING}) WHERE k = 2 ORDER BY _ordinal LIMIT 1"
        ).fetchone()
        return (found[0], found[1]) if found else None

    def store_new(self) -> int:
        """Move the staged rows to ``samples`` in one transaction; returns how many were new."""
        before = _count(self.store)
        with self.store.transaction():
            self.store.con.execute(
                "INSERT OR IGNORE INTO samples BY NAME "
                f"SELECT * EXCLUDE (_where, _ordinal) FROM {_STAGING}"
            )
        return _count(self.store) - before

    def drop(self) -> None:
        self.store.con.execute(f"DROP TABLE IF EXISTS {_STAGING}")


def _count(store: Store) -> int:
    return int(store.query("SELECT count(*) AS n FROM samples")[0]["n"])


def import_records(
    store: Store,
    items: Iterable[SourcedSample],
    *,
    label: str,
    heldout: HeldoutSet | None = None,
    source_id: str | None = None,
    batch_rows: int = IMPORT_BATCH_ROWS,
) -> ImportResult:
    """Validate samples against the store and the held-out set, then store them atomically.

    ``items`` is consumed in batches of ``batch_rows``; nothing reaches ``samples`` until every
    item is valid.
    """
    if store.read_only:
        raise AuditError("the database is open read-only: imports need a writable --db")
    heldout = heldout if heldout is not None else load_heldout()
    builder = _RowBuilder(store, heldout, source_id)
    staging = _Staging(store)
    try:
        iterator = iter(items)
        while batch := list(itertools.islice(iterator, batch_rows)):
            staging.add([builder.row(item) for item in batch])
        duplicate = staging.first_duplicate()
        if duplicate is not None:
            raise AuditError(
                f"{duplicate[0]}: same model, spec content, scenario, condition and epoch as "
                f"{duplicate[1]}; nothing was imported"
            )
        register_heldout(store, heldout)
        stored = staging.store_new()
    finally:
        staging.drop()
    return ImportResult(label, staging.rows, stored)


def import_samples(
    store: Store,
    path: str | Path,
    *,
    heldout: HeldoutSet | None = None,
    source_id: str | None = None,
    progress: Progress | None = None,
    batch_rows: int = IMPORT_BATCH_ROWS,
) -> ImportResult:
    """Import a JSONL file of graded samples or exported sample rows; all or nothing, idempotent.

    ``progress`` counts the bytes read, out of the file's size.
    """
    progress = progress or NullProgress()
    file = Path(path)
    progress.start(file.stat().st_size if file.is_file() else 0, f"importing {file.name}")
    try:
        return import_records(
            store,
            read_samples_jsonl(file, progress),
            label=str(path),
            heldout=heldout,
            source_id=source_id,
            batch_rows=batch_rows,
        )
    finally:
        progress.finish()
