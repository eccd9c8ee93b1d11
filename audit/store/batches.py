"""Rows of the batch tables (``batch_samples``, ``batch_parts``, ``batch_requests``) and the SQL
that reads and changes them.

Batch mode keeps its whole state here, so a killed ``audit sweep --batch`` resumes from the
database alone: which samples are enrolled and how far each got, which request files were built,
uploaded and submitted (file and batch ids), and what every request line got back. Every write
goes through one function of this module; callers choose the transaction.

Key lists are handed to DuckDB as Arrow tables and joined, never spliced into SQL: a sweep can
hold hundreds of thousands of keys.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from audit.store import Store

TERMINAL_API_STATUSES = frozenset({"completed", "expired", "failed", "cancelled"})
"""Batch statuses after which nothing more changes on the server."""


@dataclass(frozen=True)
class BatchSample:
    """A ``batch_samples`` row: one enrolled sample."""

    sample_key: str
    model: str
    model_config: str
    source_id: str
    spec_sha: str
    set_hash: str
    scenario_id: str
    scenario_hash: str
    condition: str
    epoch: int
    max_turns: int
    state: str = "active"
    failures: int = 0
    enrolled_at: datetime | None = None
    finished_at: datetime | None = None


@dataclass(frozen=True)
class BatchPart:
    """A ``batch_parts`` row: one request file of a wave."""

    part_id: str
    wave: int
    via: str
    model: str
    requests: int
    bytes: int
    input_hash: str
    status: str
    base_url: str | None = None
    api_key_env: str | None = None
    input_file_id: str | None = None
    batch_id: str | None = None
    completed: int | None = None
    failed: int | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    error: str | None = None
    run_id: str | None = None
    created_at: datetime | None = None
    submitted_at: datetime | None = None
    finished_at: datetime | None = None
    ingested_at: datetime | None = None

    @property
    def open(self) -> bool:
        """Results are still to be read back."""
        return self.ingested_at is None


@dataclass(frozen=True)
class BatchRequest:
    """A ``batch_requests`` row: one request line."""

    custom_id: str
    part_id: str
    wave: int
    sample_key: str
    turn: int
    state: str = "pending"
    error_kind: str | None = None
    error: str | None = None
    response: str | None = None
    finished_at: datetime | None = None


@dataclass(frozen=True)
class RequestOutcome:
    """What came back for one request line (written by :func:`write_outcomes`)."""

    custom_id: str
    state: str
    error_kind: str | None = None
    error: str | None = None
    response: str | None = None


@dataclass(frozen=True)
class SampleProgress:
    """A sample's new standing after an answer or an error."""

    sample_key: str
    state: str
    failures: int


def now() -> datetime:
    return datetime.now(UTC)


def _names(record: type) -> list[str]:
    return [f.name for f in fields(record)]


@contextmanager
def _keys_table(store: Store, keys: Sequence[str], name: str = "_batch_keys") -> Iterator[str]:
    store.con.register(name, pa.table({"sample_key": pa.array(list(keys), pa.string())}))
    try:
        yield name
    finally:
        store.con.unregister(name)


def scalar(store: Store, sql: str, params: Sequence[Any] = ()) -> Any:
    """The one value of a one-row query (fetched to the end: DuckDB refuses other work on a
    connection with a result left unread)."""
    found = store.con.execute(sql, list(params)).fetchall()
    return found[0][0] if found else None


def _rows(store: Store, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
    cursor = store.con.execute(sql, list(params))
    columns = [d[0] for d in cursor.description or []]
    return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]


# -- samples -----------------------------------------------------------------------------------


def enroll(store: Store, samples: Sequence[BatchSample]) -> int:
    """Enroll samples; ones enrolled before and no longer active start again.

    A sample that gave up keeps its answered turns and gets a fresh retry budget. A sample that
    was stored and is enrolled again (its stored row was deleted) starts its conversation over:
    its old answers were dropped when it was stored. Returns how many were new.
    """
    if not samples:
        return 0
    keys = [s.sample_key for s in samples]
    with _keys_table(store, keys) as table:
        known = {
            row[0]: row[1]
            for row in store.con.execute(
                f"SELECT b.sample_key, b.state FROM batch_samples b JOIN {table} USING (sample_key)"
            ).fetchall()
        }
    fresh = [_stamped(asdict(s)) for s in samples if s.sample_key not in known]
    store.insert_rows("batch_samples", fresh)
    restored = [k for k, state in known.items() if state == "stored"]
    restart = [k for k, state in known.items() if state != "active"]
    if restored:
        with _keys_table(store, restored) as table:
            store.con.execute(
                f"UPDATE batch_requests SET state = 'superseded' FROM {table} t "
                "WHERE batch_requests.sample_key = t.sample_key AND state = 'answered'"
            )
    if restart:
        with _keys_table(store, restart) as table:
            store.con.execute(
                f"UPDATE batch_samples SET state = 'active', failures = 0, finished_at = NULL "
                f"FROM {table} t WHERE batch_samples.sample_key = t.sample_key"
            )
    return len(fresh)


def samples(store: Store, keys: Sequence[str]) -> dict[str, BatchSample]:
    """The enrolled samples among ``keys``."""
    if not keys:
        return {}
    columns = ", ".join(f"b.{n}" for n in _names(BatchSample))
    with _keys_table(store, keys) as table:
        rows = _rows(
            store, f"SELECT {columns} FROM batch_samples b JOIN {table} USING (sample_key)"
        )
    return {row["sample_key"]: BatchSample(**row) for row in rows}


def ready_keys(store: Store, keys: Sequence[str]) -> list[str]:
    """Active samples among ``keys`` with no request waiting for an answer, sorted."""
    if not keys:
        return []
    with _keys_table(store, keys) as table:
        rows = store.con.execute(
            f"SELECT b.sample_key FROM batch_samples b JOIN {table} USING (sample_key) "
            "WHERE b.state = 'active' AND NOT EXISTS (SELECT 1 FROM batch_requests r "
            "WHERE r.sample_key = b.sample_key AND r.state = 'pending') ORDER BY b.sample_key"
        ).fetchall()
    return [row[0] for row in rows]


def answers(store: Store, keys: Sequence[str]) -> dict[str, list[str]]:
    """The answered turns (chat completion JSON) of each sample, in turn order."""
    if not keys:
        return {}
    with _keys_table(store, keys) as table:
        rows = store.con.execute(
            f"SELECT r.sample_key, r.response::VARCHAR FROM batch_requests r "
            f"JOIN {table} USING (sample_key) WHERE r.state = 'answered' "
            "ORDER BY r.sample_key, r.turn"
        ).fetchall()
    found: dict[str, list[str]] = {}
    for key, response in rows:
        found.setdefault(key, []).append(response)
    return found


def write_progress(store: Store, progress: Sequence[SampleProgress]) -> None:
    """New states and failure counts of samples; stored and failed ones get a finish time."""
    if not progress:
        return
    table = pa.table(
        {
            "sample_key": [p.sample_key for p in progress],
            "state": [p.state for p in progress],
            "failures": pa.array([p.failures for p in progress], pa.int32()),
        }
    )
    store.con.register("_batch_progress", table)
    try:
        store.con.execute(
            "UPDATE batch_samples SET state = p.state, failures = p.failures, "
            "finished_at = CASE WHEN p.state = 'active' THEN NULL ELSE now() END "
            "FROM _batch_progress p WHERE batch_samples.sample_key = p.sample_key"
        )
    finally:
        store.con.unregister("_batch_progress")


def drop_answers(store: Store, keys: Sequence[str]) -> None:
    """Forget the stored answers of samples now in ``samples``: their transcripts keep them."""
    if not keys:
        return
    with _keys_table(store, keys) as table:
        store.con.execute(
            f"UPDATE batch_requests SET response = NULL FROM {table} t "
            "WHERE batch_requests.sample_key = t.sample_key AND response IS NOT NULL"
        )


# -- parts and requests ------------------------------------------------------------------------


def next_wave(store: Store) -> int:
    """The number the next wave gets (waves are numbered across the database)."""
    return int(scalar(store, "SELECT coalesce(max(wave), -1) + 1 FROM batch_parts"))


def add_parts(store: Store, parts: Sequence[BatchPart], requests: Sequence[BatchRequest]) -> None:
    """Record built request files and their lines (the caller holds the transaction)."""
    store.insert_rows("batch_parts", [_part_row(p) for p in parts])
    if requests:
        columns = {
            name: [getattr(r, name) for r in requests]
            for name in ("custom_id", "part_id", "wave", "sample_key", "turn", "state")
        }
        table = pa.table(
            {
                **columns,
                "wave": pa.array(columns["wave"], pa.int32()),
                "turn": pa.array(columns["turn"], pa.int32()),
            }
        )
        store.insert_rows("batch_requests", table)


def _part_row(part: BatchPart) -> dict[str, Any]:
    return _stamped(asdict(part))


_STAMPS = ("created_at", "enrolled_at", "submitted_at", "finished_at", "ingested_at")


def _stamped(row: dict[str, Any]) -> dict[str, Any]:
    """A row without its unset timestamps, which the database fills in (or leaves NULL)."""
    for stamp in _STAMPS:
        if stamp in row and row[stamp] is None:
            del row[stamp]
    return row


_PART_FIELDS = frozenset(_names(BatchPart)) - {"part_id"}


def update_part(store: Store, part_id: str, **values: Any) -> None:
    """Set columns of one part (names checked against the record)."""
    unknown = set(values) - _PART_FIELDS
    if unknown:
        raise ValueError(f"batch_parts has no column(s) {sorted(unknown)}")
    assignments = ", ".join(f"{name} = ?" for name in values)
    store.con.execute(
        f"UPDATE batch_parts SET {assignments} WHERE part_id = ?", [*values.values(), part_id]
    )


def parts(
    store: Store,
    *,
    part_ids: Sequence[str] | None = None,
    wave: int | None = None,
    open_only: bool = False,
) -> list[BatchPart]:
    """Parts in wave then creation order, filtered by id (part or batch id), wave, openness."""
    where: list[str] = []
    params: list[Any] = []
    if part_ids is not None:
        where.append("(list_contains(?, part_id) OR list_contains(?, batch_id))")
        params += [list(part_ids), list(part_ids)]
    if wave is not None:
        where.append("wave = ?")
        params.append(wave)
    if open_only:
        where.append("ingested_at IS NULL")
    clause = f"WHERE {' AND '.join(where)}" if where else ""
    rows = _rows(
        store,
        f"SELECT {', '.join(_names(BatchPart))} FROM batch_parts {clause} "
        "ORDER BY wave, created_at, part_id",
        params,
    )
    return [BatchPart(**row) for row in rows]


def open_parts_of(store: Store, keys: Sequence[str], via: str) -> list[BatchPart]:
    """Open parts holding a pending request of one of ``keys``."""
    if not keys:
        return []
    with _keys_table(store, keys) as table:
        ids = [
            row[0]
            for row in store.con.execute(
                f"SELECT DISTINCT r.part_id FROM batch_requests r JOIN {table} USING (sample_key) "
                "JOIN batch_parts p USING (part_id) "
                "WHERE r.state = 'pending' AND p.via = ? AND p.ingested_at IS NULL",
                [via],
            ).fetchall()
        ]
    return parts(store, part_ids=ids) if ids else []


def requests(store: Store, custom_ids: Sequence[str]) -> dict[str, BatchRequest]:
    """The request rows of ``custom_ids`` (unknown ids are left out)."""
    if not custom_ids:
        return {}
    store.con.register("_batch_ids", pa.table({"custom_id": pa.array(list(custom_ids))}))
    try:
        rows = _rows(
            store,
            f"SELECT {', '.join('r.' + n for n in _names(BatchRequest))} "
            "FROM batch_requests r JOIN _batch_ids USING (custom_id)",
        )
    finally:
        store.con.unregister("_batch_ids")
    return {row["custom_id"]: BatchRequest(**row) for row in rows}


def requests_of_part(store: Store, part_id: str, state: str | None = None) -> list[BatchRequest]:
    """A part's request rows in file order (custom ids sort like the file's lines)."""
    clause, params = "WHERE part_id = ?", [part_id]
    if state is not None:
        clause += " AND state = ?"
        params.append(state)
    rows = _rows(
        store,
        f"SELECT {', '.join(_names(BatchRequest))} FROM batch_requests {clause} ORDER BY custom_id",
        params,
    )
    return [BatchRequest(**row) for row in rows]


def write_outcomes(store: Store, outcomes: Sequence[RequestOutcome]) -> None:
    """Store what came back for request lines."""
    if not outcomes:
        return
    table = pa.table(
        {
            name: pa.array([getattr(o, name) for o in outcomes], pa.string())
            for name in _names(RequestOutcome)
        }
    )
    store.con.register("_batch_outcomes", table)
    try:
        store.con.execute(
            "UPDATE batch_requests SET state = o.state, error_kind = o.error_kind, "
            "error = o.error, response = o.response, finished_at = now() "
            "FROM _batch_outcomes o WHERE batch_requests.custom_id = o.custom_id"
        )
    finally:
        store.con.unregister("_batch_outcomes")


def pending_samples_of_part(store: Store, part_id: str) -> list[str]:
    """Samples whose request in ``part_id`` is still pending."""
    rows = store.con.execute(
        "SELECT sample_key FROM batch_requests WHERE part_id = ? AND state = 'pending' "
        "ORDER BY custom_id",
        [part_id],
    ).fetchall()
    return [row[0] for row in rows]


def close_parts_without_pending(store: Store, status: str) -> list[str]:
    """Mark open export parts whose every line is answered as ``status``; returns their ids."""
    rows = store.con.execute(
        "UPDATE batch_parts SET status = ?, ingested_at = now(), finished_at = now() "
        "WHERE via = 'export' AND ingested_at IS NULL AND NOT EXISTS (SELECT 1 FROM "
        "batch_requests r WHERE r.part_id = batch_parts.part_id AND r.state = 'pending') "
        "RETURNING part_id",
        [status],
    ).fetchall()
    return [row[0] for row in rows]


def stored_and_failed(store: Store, run_id: str) -> tuple[int, int]:
    """Samples a run stored, and samples it recorded as failed."""
    stored = scalar(store, "SELECT count(*) FROM samples WHERE run_id = ?", [run_id])
    failed = scalar(store, "SELECT count(*) FROM sample_failures WHERE run_id = ?", [run_id])
    return int(stored), int(failed)


def ready_count(store: Store) -> int:
    """Enrolled samples with a next request to make (none of theirs is waiting)."""
    return int(
        scalar(
            store,
            "SELECT count(*) FROM batch_samples b WHERE state = 'active' AND NOT EXISTS "
            "(SELECT 1 FROM batch_requests r WHERE r.sample_key = b.sample_key "
            "AND r.state = 'pending')",
        )
    )


def counts_by_state(store: Store, part_id: str) -> Mapping[str, int]:
    """How many of a part's lines are in each state."""
    rows = store.con.execute(
        "SELECT state, count(*) FROM batch_requests WHERE part_id = ? GROUP BY state", [part_id]
    ).fetchall()
    return {state: int(n) for state, n in rows}


def cancel_pending(store: Store, part_id: str, message: str) -> int:
    """Cancel a part's unanswered lines (their samples go into the next wave at no retry cost)."""
    row = store.con.execute(
        "UPDATE batch_requests SET state = 'cancelled', error_kind = 'cancelled', error = ?, "
        "finished_at = now() WHERE part_id = ? AND state = 'pending' RETURNING custom_id",
        [message, part_id],
    ).fetchall()
    return len(row)
