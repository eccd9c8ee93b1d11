"""Batched writes of finished samples while the run goes on.

Rows are buffered per table and flushed every ``batch_rows`` rows or ``flush_s`` seconds, one
Arrow batch per flush, in a worker thread so the event loop keeps requests in flight while DuckDB
commits. A SIGKILL therefore loses at most the unflushed rows; their keys are not stored, so the
next run redoes exactly those. Inserts ignore conflicts, which keeps a rerun idempotent even when
two runs raced on the same key.

:class:`RowSink` is what the engine (:mod:`audit.runner.engine`) needs of a writer; a worker
process's :class:`~audit.runner.processes.QueueSink` is the other one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any, Protocol

from audit.store import Store


class RowSink(Protocol):
    """Where the engine hands its finished rows: it adds them, ticks every ``flush_s`` seconds
    so rows that waited are sent on, and closes the sink at the end of the run (which delivers
    whatever is left)."""

    flush_s: float

    def add(self, table: str, row: Mapping[str, Any]) -> None: ...

    def tick(self) -> None: ...

    async def close(self) -> None: ...


class BatchWriter:
    """Buffers rows per table and flushes them in batches (one flush at a time)."""

    def __init__(self, store: Store, *, batch_rows: int = 200, flush_s: float = 0.5) -> None:
        self.store = store
        self.batch_rows = batch_rows
        self.flush_s = flush_s
        self.written: dict[str, int] = {}
        self.unstored: dict[str, int] = {}
        self.first_error: str | None = None
        self._buffers: dict[str, list[Mapping[str, Any]]] = {}
        self._pending = 0
        self._last_flush = time.monotonic()
        self._flushing: asyncio.Task[None] | None = None

    def add(self, table: str, row: Mapping[str, Any]) -> None:
        """Queue a row; start a flush in the background when the batch is full or old."""
        self._buffers.setdefault(table, []).append(row)
        self._pending += 1
        if self._pending >= self.batch_rows or time.monotonic() - self._last_flush >= self.flush_s:
            self._start_flush()

    def tick(self) -> None:
        """Flush rows that have waited longer than ``flush_s`` (called between awaits)."""
        if self._pending and time.monotonic() - self._last_flush >= self.flush_s:
            self._start_flush()

    def _start_flush(self) -> None:
        if self._flushing is not None and not self._flushing.done():
            return  # the running flush picks these rows up when it finishes
        batches = self._take()
        self._last_flush = time.monotonic()
        self._flushing = asyncio.get_running_loop().create_task(self._flush_async(batches))

    def _take(self) -> dict[str, list[Mapping[str, Any]]]:
        batches, self._buffers, self._pending = self._buffers, {}, 0
        return batches

    async def _flush_async(self, batches: dict[str, list[Mapping[str, Any]]]) -> None:
        await asyncio.to_thread(self._write, batches)
        if self._pending >= self.batch_rows:
            # Rows piled up while this flush ran: write them now rather than wait for a tick.
            self._flushing = None
            self._start_flush()

    async def close(self) -> None:
        """Wait for the running flush and write whatever is left."""
        while self._flushing is not None and not self._flushing.done():
            await self._flushing
        self._write(self._take())

    def _write(self, batches: dict[str, list[Mapping[str, Any]]]) -> None:
        for table, rows in batches.items():
            self._insert(table, rows)

    def _insert(self, table: str, rows: list[Mapping[str, Any]]) -> None:
        if not rows:
            return
        try:
            self.store.insert_rows(table, rows, on_conflict="ignore")
        except Exception as exc:
            if len(rows) == 1:
                self.unstored[table] = self.unstored.get(table, 0) + 1
                self.first_error = self.first_error or f"{type(exc).__name__}: {exc}"
                return
            # Halve the batch to keep the good rows and isolate the ones DuckDB refuses.
            middle = len(rows) // 2
            self._insert(table, rows[:middle])
            self._insert(table, rows[middle:])
            return
        self.written[table] = self.written.get(table, 0) + len(rows)
