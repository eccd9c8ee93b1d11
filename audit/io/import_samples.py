"""Import graded samples made elsewhere (one JSON object a line) into the history.

A line is either a *graded sample*: a model, a synced spec revision (sha, unique prefix, tag or
index), a scenario of the held-out set and an epoch, with its outcome and eval-awareness flag;
or a *samples row* exactly as ``audit export --format jsonl`` writes it (it has a
``sample_key``), which is stored unchanged after its revision, scenario and key are checked.

Files are streamed: lines are validated and staged in batches of :data:`IMPORT_BATCH_ROWS` in a
temporary table, and only when the whole file is valid do the rows reach ``samples``, in one
transaction with the registration of the held-out set. A bad line is reported with its number
and field and nothing of the file is stored; a crash or a ``kill -9`` part-way stores nothing
either. Graded samples are keyed like the runner's (:func:`audit.runner.matrix.sample_key`) with
an import-specific parameters hash, so importing the same file twice adds nothing, and detection
and reports treat the rows like run ones.

Memory stays flat in the length of the file: DuckDB reads and stages within
:data:`IMPORT_MEMORY_LIMIT` (the staging table spills to DuckDB's temporary folder beside the
database), and new rows are found by an anti-join rather than ``INSERT OR IGNORE``, whose per-row
key checks held every staged row in memory (2,000,000 lines peaked at 4.8 GB). What still grows
is DuckDB's primary-key index, which must sit in memory while new rows are committed: about 150
bytes per row of ``samples``, stored and new (:data:`KEY_INDEX_BYTES_PER_ROW`).
``tests/bench/bench_import.py`` prints the figures.

Lines are read strictly: duplicate keys in an object, ``NaN`` and ``Infinity``, lone UTF-16
surrogates, nesting too deep for the parser, integers outside DuckDB's column types and control
characters in model names are refused with the line number and the field.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import duckdb
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
)

from audit.errors import AuditError
from audit.heldout import HeldoutSet, load_heldout, register_heldout
from audit.progress import NullProgress, Progress
from audit.records import Outcome
from audit.runner.matrix import sample_key, sha256_text
from audit.store import Store
from audit.store.rows import SampleRow
from audit.terminal import has_control_characters

IMPORT_PARAMS_HASH = sha256_text('{"origin":"import"}')
"""Parameters hash of imported samples: the request parameters are unknown, and a fixed value
keeps imported keys apart from run keys for the same (model, spec, scenario, epoch)."""

IMPORT_BATCH_ROWS = 5_000
"""Lines validated and staged at a time: memory stays flat however long the file is."""

IMPORT_MEMORY_LIMIT = "400MB"
"""DuckDB's memory limit while lines are read and staged (the previous limit is restored
afterwards): past it, staged rows spill to disk instead of growing the process."""

KEY_INDEX_BYTES_PER_ROW = 256
"""Memory allowed per row of ``samples`` (stored and new) while new rows are committed, on top
of :data:`COMMIT_MEMORY_BYTES`. DuckDB checks the primary key with an in-memory index that
cannot spill: measured here at more than 150 bytes per sha256 key (2,000,000 keys failed to
commit under a 300 MB limit, 4,000,000 under 600 MB; a limit that is too low is a fatal error
that invalidates the connection). The rest is a margin for longer keys."""

COMMIT_MEMORY_BYTES = 128e6
"""Memory allowed for the commit besides the key index."""

INT32_MAX = 2**31 - 1
"""Largest value of DuckDB's INTEGER columns (epoch, turns, token counts)."""

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


def _plain_name(value: str) -> str:
    if has_control_characters(value):
        raise ValueError(
            "holds a control character (tab, newline, escape or a bidi override): names are "
            "shown in tables, reports and folder names; remove it"
        )
    return value


Name = Annotated[str, AfterValidator(_plain_name)]
"""A model name or version label: no control characters."""
Int32 = Annotated[int, Field(ge=-INT32_MAX - 1, le=INT32_MAX)]
Finite = Annotated[float, Field(strict=False, allow_inf_nan=False)]


class ImportedSample(BaseModel):
    """One graded sample line (unknown fields are refused, so typos do not pass silently)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    model: Name = Field(min_length=1)
    spec_rev: str = Field(min_length=1)
    scenario_id: str = Field(min_length=1)
    epoch: int = Field(ge=0, le=INT32_MAX)
    outcome: Outcome
    eval_aware: bool
    reasoning: str | None = None
    answer: str | None = None
    model_version: Name | None = None
    created_at: Timestamp | None = Field(default=None, strict=False)
    condition: str | None = None
    spec_cited: bool | None = None
    score: Finite | None = None


class ExportedSample(BaseModel):
    """One ``samples`` row as ``audit export --format jsonl`` writes it.

    Further fields are accepted when they are columns of ``samples`` (a newer schema's export).
    """

    model_config = ConfigDict(extra="allow", strict=True)

    sample_key: str = Field(min_length=1)
    run_id: str | None = None
    origin: Literal["run", "import"]
    model: Name = Field(min_length=1)
    model_version: Name | None = None
    source_id: str | None = None
    spec_sha: str = Field(min_length=1)
    spec_content_hash: str = Field(min_length=1)
    set_hash: str = Field(min_length=1)
    scenario_id: str = Field(min_length=1)
    scenario_hash: str | None = None
    family: str | None = None
    condition: str = "default"
    epoch: int = Field(ge=0, le=INT32_MAX)
    params_hash: str | None = None
    outcome: Outcome
    eval_aware: bool
    spec_cited: bool | None = None
    score: Finite | None = None
    grade_evidence: Any = None
    awareness_evidence: Any = None
    reasoning: str | None = None
    answer: str | None = None
    transcript: Any = None
    turns: Int32 | None = None
    prompt_tokens: Int32 | None = None
    completion_tokens: Int32 | None = None
    reasoning_tokens: Int32 | None = None
    latency_ms: Finite | None = None
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


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


class _NonFinite:
    """Stands for a NaN or Infinity literal until the line's check names its field."""

    def __init__(self, literal: str) -> None:
        self.literal = literal


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # JSON readers disagree on a repeated key (Python keeps the last, others the first).
    data = dict(pairs)
    if len(data) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return data


def unusable_value(value: Any, path: str) -> tuple[str, str] | None:
    """(field path, problem) of the first value no column can hold: NaN/Infinity, a lone
    surrogate (JSON's \\udXXX escapes can spell one; UTF-8 cannot encode it)."""
    if isinstance(value, _NonFinite):
        return path, f"{value.literal} is not a number JSON allows; use null"
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            char = f"U+{ord(value[exc.start]):04X}"
            return path, f"holds a lone surrogate {char}, which is not text; re-export as UTF-8"
        return None
    if isinstance(value, dict):
        items: Iterable[tuple[Any, Any]] = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return None
    for key, item in items:
        found = unusable_value(key, path) if isinstance(key, str) else None
        found = found or unusable_value(item, f"{path}.{key}" if path else str(key))
        if found:
            return found
    return None


# One decoder for every line: json.loads with hooks would build a new one per call (+80% time).
_DECODER = json.JSONDecoder(object_pairs_hook=_unique_keys, parse_constant=_NonFinite)


def _load_json(raw: str, where: str) -> Any:
    try:
        data = _DECODER.decode(raw)
    except json.JSONDecodeError as exc:
        raise AuditError(f"{where}: not valid JSON ({exc.msg}); nothing was imported") from None
    except RecursionError:
        raise AuditError(f"{where}: JSON nested too deeply to read; nothing was imported") from None
    except _DuplicateKey as exc:
        raise AuditError(
            f"{where}: {exc.key}: the key appears twice in one object (readers disagree on "
            "which one counts); nothing was imported"
        ) from None
    # Only lines that could hold such a value are walked: the walk costs more than the parse.
    if "NaN" in raw or "Infinity" in raw or "\\ud" in raw or "\\uD" in raw:
        found = unusable_value(data, "")
        if found:
            field, problem = found
            raise AuditError(f"{where}: {field or 'line'}: {problem}; nothing was imported")
    return data


def _parse_line(raw: str, where: str) -> ImportedSample | ExportedSample:
    data = _load_json(raw, where)
    if not isinstance(data, dict):
        raise AuditError(f"{where}: expected a JSON object; nothing was imported")
    kind = ExportedSample if "sample_key" in data else ImportedSample
    try:
        return kind.model_validate(data)
    except ValidationError as exc:
        raise AuditError(f"{where}: {_validation_message(exc)}; nothing was imported") from None
    except RecursionError:
        raise AuditError(
            f"{where}: JSON nested too deeply to store; nothing was imported"
        ) from None


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
        self.scenarios: dict[str, Any] = {}
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
        scenario = self._scenario(item)
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
        scenario_id = item.sample.scenario_id
        if scenario_id not in self.scenarios:  # a dict: the held-out set looks ids up in a list
            try:
                self.scenarios[scenario_id] = self.heldout.get(scenario_id)
            except AuditError as exc:
                raise AuditError(
                    f"{item.where}: scenario_id: {exc}; nothing was imported"
                ) from None
        return self.scenarios[scenario_id]

    def _graded_row(self, item: SourcedSample, sample: ImportedSample) -> dict[str, Any]:
        scenario = self._scenario(item)
        revision = self._revision(sample.spec_rev, item.where)
        condition = self._condition(item, sample.condition)
        scenario_hash = self.heldout.scenario_hashes[scenario.id]
        created_at = sample.created_at
        if created_at is not None and created_at.tzinfo is None:
            # A timestamp without a zone is read as UTC, so stored times do not depend on the
            # importer's machine.
            created_at = created_at.replace(tzinfo=dt.UTC)
        return SampleRow(
            sample_key=sample_key(
                sample.model,
                revision.content_hash,
                scenario_hash,
                condition,
                sample.epoch,
                IMPORT_PARAMS_HASH,
            ),
            run_id=None,
            origin="import",
            model=sample.model,
            model_version=sample.model_version,
            source_id=revision.source_id,
            spec_sha=revision.sha,
            spec_content_hash=revision.content_hash,
            set_hash=self.heldout.set_hash,
            scenario_id=scenario.id,
            scenario_hash=scenario_hash,
            family=scenario.family,
            condition=condition,
            epoch=sample.epoch,
            params_hash=IMPORT_PARAMS_HASH,
            outcome=sample.outcome,
            eval_aware=sample.eval_aware,
            spec_cited=sample.spec_cited,
            score=sample.score,
            grade_evidence=json.dumps(
                {"rule_id": "import", **item.evidence}, separators=(",", ":")
            ),
            reasoning=sample.reasoning,
            answer=sample.answer,
            created_at=created_at or self.imported_at,
        ).as_row()

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
        expected = self.heldout.scenario_hashes[scenario.id]
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

    def store_new(self, heldout: HeldoutSet, budget: _MemoryBudget) -> int:
        """Register the held-out set and move the staged rows that are not stored yet to
        ``samples``, in one transaction; returns how many were new.

        An anti-join finds the new rows: ``INSERT OR IGNORE`` checked each row against the key
        index one at a time and held all of them in memory (4.8 GB for 2,000,000 lines). The
        commit needs DuckDB's key index of the whole table in memory, so the memory limit is
        raised to what that index needs (:data:`KEY_INDEX_BYTES_PER_ROW`) for this step only.
        """
        new_rows = f"FROM {_STAGING} staged WHERE NOT EXISTS " + (
            "(SELECT 1 FROM samples stored WHERE stored.sample_key = staged.sample_key)"
        )
        counted = self.store.con.execute(f"SELECT count(*) {new_rows}").fetchone()
        new = int(counted[0]) if counted else 0
        if new:
            total = _count(self.store) + new
            budget.allow(max(budget.base, COMMIT_MEMORY_BYTES + KEY_INDEX_BYTES_PER_ROW * total))
        with self.store.transaction():
            register_heldout(self.store, heldout)
            if new:
                self.store.con.execute(
                    f"INSERT INTO samples BY NAME SELECT * EXCLUDE (_where, _ordinal) {new_rows}"
                )
        return new

    def drop(self) -> None:
        self.store.con.execute(f"DROP TABLE IF EXISTS {_STAGING}")


_SIZE_UNITS = {"bytes": 1, "kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12}
_SIZE_UNITS |= {"kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def _size_bytes(text: str) -> float:
    """Bytes of a DuckDB size setting such as ``18.3 GiB`` or ``400MB`` (unreadable: infinite)."""
    found = re.fullmatch(r"\s*([\d.]+)\s*([A-Za-z]*)\s*", text)
    if found is None or found.group(2).lower() not in (*_SIZE_UNITS, ""):
        return float("inf")
    return float(found.group(1)) * _SIZE_UNITS.get(found.group(2).lower(), 1)


class _MemoryBudget:
    """DuckDB's memory limit during an import: lowered for staging, raised for the commit, never
    above the limit the connection had, and restored afterwards."""

    def __init__(self, store: Store) -> None:
        self.store = store
        row = store.con.execute("SELECT current_setting('memory_limit')").fetchone()
        self.previous = str(row[0]) if row else ""
        self.ceiling = _size_bytes(self.previous) if self.previous else float("inf")
        self.base = _size_bytes(IMPORT_MEMORY_LIMIT)
        self.changed = False

    def allow(self, nbytes: float) -> None:
        """Set the limit to ``nbytes`` (at most the connection's own limit)."""
        if nbytes < self.ceiling:
            self.store.con.execute(f"SET memory_limit = '{math.ceil(nbytes / 1e6)}MB'")
            self.changed = True
        else:
            self.restore()

    def restore(self) -> None:
        """Put back the limit the connection had."""
        if not self.changed:
            return
        self.changed = False
        # DuckDB shows the limit rounded (18.8 GiB): the default comes back exactly by RESET,
        # a limit the caller had set by its rounded value.
        self.store.con.execute("RESET memory_limit")
        now = self.store.con.execute("SELECT current_setting('memory_limit')").fetchone()
        if self.previous and (not now or str(now[0]) != self.previous):
            self.store.con.execute(f"SET memory_limit = '{self.previous}'")


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
    budget = _MemoryBudget(store)
    budget.allow(budget.base)
    try:
        staging = _Staging(store)
        try:
            iterator = iter(items)
            while batch := list(itertools.islice(iterator, batch_rows)):
                staging.add([builder.row(item) for item in batch])
            duplicate = staging.first_duplicate()
            if duplicate is not None:
                raise AuditError(
                    f"{duplicate[0]}: same model, spec content, scenario, condition and epoch "
                    f"as {duplicate[1]}; nothing was imported"
                )
            stored = staging.store_new(heldout, budget)
        except duckdb.OutOfMemoryException as exc:
            # Spilling needs DuckDB's temporary folder (beside the database file by default).
            raise AuditError(
                f"the import ran out of memory ({str(exc).splitlines()[0]}); nothing was "
                "imported: make the folder beside the database writable, or set DuckDB's "
                "temp_directory to one that is"
            ) from None
        finally:
            staging.drop()
    finally:
        budget.restore()
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
