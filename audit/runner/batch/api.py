"""The OpenAI Files and Batches API through the real ``openai`` client.

:class:`BatchApi` uploads a request file (``files.create``, purpose ``batch``), creates its batch
(``batches.create``, 24 h window, the part id in the batch's metadata), polls it
(``batches.retrieve``), streams its output and error files (``files.content``) and cancels it.
Calls that can be repeated safely are retried with the runner's backoff; creating a batch is not
retried blindly: after an error, and on resume, the batches already on the server are searched
for the part's file or id first, so a batch is never submitted twice.

:class:`ApiSweep` runs waves through it until every sample is stored or has given up.
"""

from __future__ import annotations

import os
import random
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import openai
from openai.types import Batch

from audit.config import BatchConfig, ModelConfig, RunConfig
from audit.errors import AuditError
from audit.progress import Progress
from audit.runner.batch.waves import BuiltPart, IngestCounts, WaveEngine
from audit.runner.client import (
    LOCAL_PLACEHOLDER_KEY,
    CallError,
    Scrubber,
    backoff_s,
    classify,
    is_loopback,
)
from audit.store import Store
from audit.store import batches as rows
from audit.store.batches import TERMINAL_API_STATUSES, BatchPart

T = TypeVar("T")

TRANSFER_TIMEOUT_S = 900.0
"""Uploading or downloading a 200 MB file takes longer than one chat completion."""

LIST_PAGE = 100
CREATED_SLACK_S = 3600
"""How far back (before the part was built) to look for a batch made just before a crash."""


def key_from_env(api_key_env: str | None, base_url: str) -> str:
    """The key for a part's endpoint, read again from the variable the model named."""
    key = os.environ.get(api_key_env or "", "")
    if key:
        return key
    if is_loopback(base_url):
        return LOCAL_PLACEHOLDER_KEY
    raise AuditError(
        f"environment variable {api_key_env} is not set: export the API key of {base_url} "
        "there to reach its batches"
    )


class BatchApi:
    """One endpoint's Files and Batches API."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        run: RunConfig,
        scrub: Scrubber,
        sleep: Callable[[float], Any] = time.sleep,
    ) -> None:
        self.base_url = base_url
        self.run = run
        self.scrub = scrub
        self.sleep = sleep
        self.client = openai.OpenAI(
            base_url=base_url, api_key=api_key, max_retries=0, timeout=run.timeout_s
        )
        self._rng = random.Random()

    def close(self) -> None:
        self.client.close()

    def _call(self, what: str, call: Callable[[], T]) -> T:
        attempt = 0
        while True:
            attempt += 1
            try:
                return call()
            except Exception as exc:
                error = classify(exc)
                if error is None:
                    raise
                if not error.retryable or attempt > self.run.max_retries:
                    raise self._refused(what, error) from None
                self.sleep(backoff_s(attempt - 1, self.run, error.retry_after_s, self._rng))

    def _refused(self, what: str, error: CallError) -> AuditError:
        message = self.scrub(error.message)
        if message.startswith("HTTP 404") and what in ("upload", "create batch"):
            return AuditError(
                f"{self.base_url} has no Files and Batches API ({message}): vLLM and llama.cpp "
                "servers have none; write request files with audit batch export for their batch "
                "runners, or run without --batch"
            )
        return AuditError(f"{what} at {self.base_url} failed: {message}")

    def upload(self, path: Path) -> str:
        """Upload a request file; returns its file id."""

        def call() -> str:
            with path.open("rb") as handle:
                uploaded = self.client.files.create(
                    file=(path.name, handle, "application/jsonl"),
                    purpose="batch",
                    timeout=max(TRANSFER_TIMEOUT_S, self.run.timeout_s),
                )
            return uploaded.id

        return self._call("upload", call)

    def find(self, part: BatchPart) -> Batch | None:
        """A batch already made from this part (by file id or by the part id in its metadata)."""
        cutoff = part.created_at - timedelta(seconds=CREATED_SLACK_S) if part.created_at else None
        page = self._call("list batches", lambda: self.client.batches.list(limit=LIST_PAGE))
        while True:
            for batch in page.data:
                metadata = batch.metadata or {}
                if (
                    batch.input_file_id == part.input_file_id
                    or metadata.get("specdrift_part") == part.part_id
                ):
                    return batch
                if cutoff is not None and batch.created_at < cutoff.timestamp():
                    return None  # listed newest first: older ones predate the part
            if not page.has_next_page():
                return None
            page = self._call("list batches", page.get_next_page)

    def create(self, part: BatchPart, *, look_first: bool) -> Batch:
        """The part's batch: found on the server when ``look_first`` (a resumed part), else
        created. A failed create is looked for before it is tried again."""
        if look_first and (found := self.find(part)) is not None:
            return found
        attempt = 0
        while True:
            attempt += 1
            try:
                return self.client.batches.create(
                    input_file_id=part.input_file_id or "",
                    endpoint="/v1/chat/completions",
                    completion_window="24h",
                    metadata={"specdrift_part": part.part_id, "specdrift_wave": str(part.wave)},
                )
            except Exception as exc:
                error = classify(exc)
                if error is None:
                    raise
                if not error.retryable or attempt > self.run.max_retries:
                    raise self._refused("create batch", error) from None
                self.sleep(backoff_s(attempt - 1, self.run, error.retry_after_s, self._rng))
                # The request may have reached the server before the error: never make two.
                if (found := self.find(part)) is not None:
                    return found

    def retrieve(self, batch_id: str) -> Batch:
        return self._call("poll batch", lambda: self.client.batches.retrieve(batch_id))

    def cancel(self, batch_id: str) -> Batch:
        return self._call("cancel batch", lambda: self.client.batches.cancel(batch_id))

    def lines(self, file_id: str) -> Iterator[tuple[str, str]]:
        """(where, text) of every line of a result file, streamed."""

        def fetch() -> list[str]:
            with self.client.files.with_streaming_response.content(
                file_id, timeout=max(TRANSFER_TIMEOUT_S, self.run.timeout_s)
            ) as response:
                return list(response.iter_lines())

        for number, text in enumerate(self._call("download results", fetch), start=1):
            yield f"file {file_id} line {number}", text


@dataclass
class WaveReport:
    """What one wave did and how long each step took (seconds of wall time)."""

    wave: int
    batches: int = 0
    requests: int = 0
    build_s: float = 0.0
    submit_s: float = 0.0
    wait_s: float = 0.0
    ingest_s: float = 0.0
    answered: int = 0
    errors: int = 0
    stored: int = 0
    failed: int = 0

    @property
    def wall_s(self) -> float:
        return self.build_s + self.submit_s + self.wait_s + self.ingest_s


class ApiSweep:
    """Runs waves through the Batch API until no sample of the sweep has a request to make."""

    def __init__(
        self,
        store: Store,
        engine: WaveEngine,
        *,
        endpoints: dict[str, str],
        keys: dict[str, str],
        limits: BatchConfig,
        progress: Progress,
        sleep: Callable[[float], Any] = time.sleep,
    ) -> None:
        self.store = store
        self.engine = engine
        self.endpoints = endpoints
        self.keys = keys
        self.limits = limits
        self.progress = progress
        self.sleep = sleep
        self.submitted = 0
        self.retried = 0
        self._apis: dict[tuple[str, str], BatchApi] = {}

    def close(self) -> None:
        for api in self._apis.values():
            api.close()

    def api_for(self, part: BatchPart) -> BatchApi:
        base_url = part.base_url or ""
        key = self.keys.get(part.model) or key_from_env(part.api_key_env, base_url)
        slot = (base_url, key)
        if slot not in self._apis:
            self._apis[slot] = BatchApi(
                base_url, key, run=self.engine.run, scrub=self.engine.scrub, sleep=self.sleep
            )
        return self._apis[slot]

    def run(self, sample_keys: Sequence[str]) -> list[WaveReport]:
        reports: list[WaveReport] = []
        while True:
            waiting = rows.open_parts_of(self.store, sample_keys, "api")
            if waiting:
                report = WaveReport(wave=min(p.wave for p in waiting))
                waiting = self._submit(waiting, {}, report)
            else:
                ready = self._ready(sample_keys)
                if not ready:
                    return reports
                report = WaveReport(wave=rows.next_wave(self.store))
                with tempfile.TemporaryDirectory(prefix="specdrift-batch-") as folder:
                    started = time.perf_counter()
                    built = self.engine.build(
                        ready,
                        wave=report.wave,
                        via="api",
                        folder=Path(folder),
                        limits=self.limits,
                        endpoint=self._endpoint,
                    )
                    report.build_s = time.perf_counter() - started
                    self._count_retries(built)
                    waiting = self._submit(
                        [b.part for b in built], {b.part.part_id: b.path for b in built}, report
                    )
            self._wait(waiting, report)
            reports.append(report)

    def _endpoint(self, model: ModelConfig) -> str:
        return self.endpoints[model.name]

    def _ready(self, sample_keys: Sequence[str]) -> list[str]:
        ready = rows.ready_keys(self.store, sample_keys)
        if not self.engine.abandoned or not ready:
            return ready
        enrolled = rows.samples(self.store, ready)
        return [k for k in ready if enrolled[k].model not in self.engine.abandoned]

    def _count_retries(self, built: list[BuiltPart]) -> None:
        """Count the requests that repeat one that failed or expired."""
        requests = [r for b in built for r in rows.requests_of_part(self.store, b.part.part_id)]
        enrolled = rows.samples(self.store, [r.sample_key for r in requests])
        self.retried += sum(1 for r in requests if enrolled[r.sample_key].failures > 0)

    def _submit(
        self, parts: list[BatchPart], paths: dict[str, Path], report: WaveReport
    ) -> list[BatchPart]:
        """Upload and create what is not submitted yet; returns the parts as now stored."""
        started = time.perf_counter()
        submitted = []
        for part in parts:
            if part.status in ("built", "uploaded"):
                part = self._submit_one(part, paths.get(part.part_id))
            submitted.append(part)
        report.submit_s += time.perf_counter() - started
        report.batches = len(submitted)
        report.requests = sum(p.requests for p in submitted)
        return submitted

    def _submit_one(self, part: BatchPart, path: Path | None) -> BatchPart:
        api = self.api_for(part)
        resumed = path is None
        if part.status == "built":
            with tempfile.TemporaryDirectory(prefix="specdrift-batch-") as folder:
                if path is None:
                    path = Path(folder) / f"specdrift-wave{part.wave}-{part.part_id}.jsonl"
                    self.engine.rebuild(part, path)
                file_id = api.upload(path)
            rows.update_part(self.store, part.part_id, status="uploaded", input_file_id=file_id)
            part = replace(part, status="uploaded", input_file_id=file_id)
            resumed = False  # the file is new: no batch can have been made from it yet
        batch = api.create(part, look_first=resumed)
        rows.update_part(
            self.store,
            part.part_id,
            batch_id=batch.id,
            status=batch.status,
            submitted_at=rows.now(),
        )
        self.submitted += part.requests
        self.progress.message(
            f"wave {part.wave}: batch {batch.id} of {part.requests} requests ({part.model}) "
            f"{batch.status}"
        )
        return replace(part, batch_id=batch.id, status=batch.status)

    def _wait(self, parts: list[BatchPart], report: WaveReport) -> None:
        """Poll until every part is final, reading each one back as soon as it is."""
        started = time.perf_counter()
        waiting = {p.part_id: p for p in parts}
        done: dict[str, tuple[int, int]] = {}
        self.progress.start(
            report.requests, f"wave {report.wave}: {len(parts)} batches, {report.requests} requests"
        )
        try:
            while waiting:
                for part in list(waiting.values()):
                    batch = self.api_for(part).retrieve(part.batch_id or "")
                    part = waiting[part.part_id] = self._note(part, batch, done)
                    if batch.status in TERMINAL_API_STATUSES:
                        ingest_started = time.perf_counter()
                        counts = self._read_back(part, batch)
                        report.ingest_s += time.perf_counter() - ingest_started
                        _tally(report, counts)
                        del waiting[part.part_id]
                if waiting:
                    # Nothing is written while waiting: let other commands open the database.
                    with self.store.released():
                        self.sleep(self.limits.poll_s)
        finally:
            self.progress.finish()
        report.wait_s += time.perf_counter() - started - report.ingest_s

    def _note(self, part: BatchPart, batch: Batch, done: dict[str, tuple[int, int]]) -> BatchPart:
        """Record a polled status; advance the progress by the requests newly done."""
        counts = batch.request_counts
        completed, failed = (counts.completed, counts.failed) if counts else (0, 0)
        before = done.get(part.part_id, (0, 0))
        if (completed, failed) != before:
            self.progress.advance(
                max(0, completed + failed - sum(before)), errors=max(0, failed - before[1])
            )
            done[part.part_id] = (completed, failed)
        if batch.status != part.status or (completed, failed) != before:
            rows.update_part(
                self.store, part.part_id, status=batch.status, completed=completed, failed=failed
            )
        if batch.status != part.status:
            self.progress.message(f"wave {part.wave}: batch {batch.id} {batch.status}")
        return replace(part, status=batch.status, completed=completed, failed=failed)

    def _read_back(self, part: BatchPart, batch: Batch) -> IngestCounts:
        """Apply a final batch's output and error files; fail what they left out."""
        api = self.api_for(part)
        counts = IngestCounts()
        for file_id in (batch.output_file_id, batch.error_file_id):
            if file_id:
                counts.add(
                    self.engine.ingest(api.lines(file_id), strict=False, commit_each_chunk=True)
                )
        error = _leftover_error(batch, self.engine.scrub)
        with self.store.transaction():
            counts.add(self.engine.close_part(part, error))
            rows.update_part(
                self.store,
                part.part_id,
                status=batch.status,
                output_file_id=batch.output_file_id,
                error_file_id=batch.error_file_id,
                error=error.message if batch.status == "failed" else None,
                finished_at=rows.now(),
                ingested_at=rows.now(),
            )
        return counts


def _tally(report: WaveReport, counts: IngestCounts) -> None:
    report.answered += counts.answered
    report.errors += counts.errors
    report.stored += counts.stored
    report.failed += counts.failed


def _leftover_error(batch: Batch, scrub: Scrubber) -> CallError:
    """The error of requests a final batch did not answer at all."""
    if batch.status == "failed":
        reasons = "; ".join(
            f"{e.code or 'error'}: {e.message or ''}".strip()
            for e in (batch.errors.data if batch.errors and batch.errors.data else [])
        )
        return CallError(
            "other", scrub(f"batch {batch.id} failed: {reasons or 'no reason given'}"), True
        )
    if batch.status == "cancelled":
        return CallError("cancelled", f"batch {batch.id} was cancelled", True)
    if batch.status == "expired":
        return CallError("expired", f"batch {batch.id} expired before answering", True)
    return CallError("expired", f"batch {batch.id} completed without answering this request", True)
