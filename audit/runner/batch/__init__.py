"""Batch mode: the run matrix in waves through batch inference engines that already exist.

A wave holds every pending sample's next request, in OpenAI batch-format files. Two ways to run
them, both storing exactly the rows a live run stores for the same matrix:

- :func:`run_batch` (``audit sweep --batch``, ``audit run --batch``) uploads each file with
  ``client.files.create``, starts it with ``client.batches.create`` (24 h window), polls it,
  reads the results back, and builds the next wave from the samples that continue, until every
  sample is stored or has given up. A killed sweep resumes from DuckDB: it polls the batches it
  made and never makes one twice.
- :func:`export_wave` (``audit batch export``) writes a wave's files for any engine that reads
  the format (``vllm run-batch``, a Ray Data job), and :func:`import_outputs`
  (``audit batch import``) reads the engine's output files back.

:func:`batch_status` and :func:`cancel_batches` list and cancel batches.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb

from audit.config import AuditConfig
from audit.errors import AuditError
from audit.progress import NullProgress, Progress
from audit.runner import RunSummary, finish_run, plan_run, start_run, tool_version
from audit.runner.batch.api import ApiSweep, BatchApi, WaveReport, key_from_env
from audit.runner.batch.waves import IngestCounts, WaveEngine
from audit.runner.client import Scrubber, api_key_for, dumps, endpoint_of
from audit.store import Store
from audit.store import batches as rows
from audit.store import rows as stored_rows
from audit.store.batches import BatchPart
from audit.store.rows import RunRow

if TYPE_CHECKING:
    from audit.heldout import HeldoutSet

__all__ = [
    "BatchRunSummary",
    "ExportSummary",
    "ImportSummary",
    "WaveReport",
    "batch_status",
    "cancel_batches",
    "export_wave",
    "import_outputs",
    "run_batch",
]


@dataclass(frozen=True)
class BatchRunSummary(RunSummary):
    """A batch run's counts (``calls``: requests submitted; ``retries``: of them, repeats of a
    failed or expired request) and its waves."""

    waves: tuple[WaveReport, ...] = ()
    unfinished: int = 0
    """Samples of the matrix neither stored nor given up (waiting on exported files, or of a
    model given up on)."""

    @property
    def ok(self) -> bool:
        return self.unstored == 0

    def line(self) -> str:
        return super().line() + f" ({len(self.waves)} waves)"


def _load_heldout(heldout: HeldoutSet | None) -> HeldoutSet:
    if heldout is not None:
        return heldout
    from audit.heldout import load_heldout

    return load_heldout()


def run_batch(
    store: Store,
    config: AuditConfig,
    *,
    models: Sequence[str] | None,
    revisions: Sequence[str] | None,
    scenario_ids: Sequence[str] | None = None,
    epochs: int | None = None,
    progress: Progress | None = None,
    base_url: str | None = None,
    command: str = "sweep",
    heldout: HeldoutSet | None = None,
    sleep: Callable[[float], Any] = time.sleep,
) -> BatchRunSummary:
    """Run every planned sample not yet stored through the Batch API, in waves; grade and store
    them as :func:`audit.runner.run_matrix` does.

    Resumes the batches of an earlier, interrupted batch run of the same samples. Keys are read
    from the variables the models name and never stored or written into request files.
    """
    started = time.perf_counter()
    heldout = _load_heldout(heldout)
    progress = progress or NullProgress()
    plan = plan_run(
        store,
        config,
        models=models,
        revisions=revisions,
        scenario_ids=scenario_ids,
        epochs=epochs,
        heldout=heldout,
    )
    endpoints = {m.name: endpoint_of(m, base_url) for m in plan.models}
    keys = {m.name: api_key_for(m, endpoints[m.name]) for m in plan.models}
    scrub = Scrubber(set(keys.values()))
    if plan.pending:
        from audit.heldout import register_heldout

        register_heldout(store, heldout)
    run_id = start_run(store, config, plan, command, endpoints, mode="batch")
    engine = WaveEngine(store, heldout, run=config.run, scrub=scrub, run_id=run_id)
    engine.enroll(plan)
    sample_keys = [s.key for s in plan.pending]
    sweep = ApiSweep(
        store,
        engine,
        endpoints=endpoints,
        keys=keys,
        limits=config.batch,
        progress=progress,
        sleep=sleep,
    )
    reports: list[WaveReport] = []
    completed = False
    try:
        reports = sweep.run(sample_keys)
        completed = True
    finally:
        sweep.close()
        try:
            summary = _summary(store, run_id, plan, sweep, engine, reports, started, sample_keys)
            finish_run(
                store,
                summary,
                completed=completed and not summary.unfinished and not engine.abandoned,
            )
        except duckdb.Error:
            # The database was lost while an error propagates (it could not be opened again
            # after a poll): that error says why; the run stays unfinished and resumes.
            if completed:
                raise
    return summary


def _summary(
    store: Store,
    run_id: str,
    plan: Any,
    sweep: ApiSweep,
    engine: WaveEngine,
    reports: list[WaveReport],
    started: float,
    sample_keys: Sequence[str],
) -> BatchRunSummary:
    stored, failed = rows.stored_and_failed(store, run_id)
    enrolled = rows.samples(store, sample_keys)
    return BatchRunSummary(
        run_id=run_id,
        planned=len(plan.samples),
        skipped=plan.skipped,
        stored=stored,
        failed=failed,
        unstored=0,
        calls=sweep.submitted,
        retries=sweep.retried,
        elapsed_s=time.perf_counter() - started,
        abandoned=dict(engine.abandoned),
        waves=tuple(reports),
        unfinished=sum(1 for row in enrolled.values() if row.state == "active"),
    )


# -- export and import -------------------------------------------------------------------------


@dataclass(frozen=True)
class ExportSummary:
    """What ``audit batch export`` wrote."""

    wave: int | None
    """The wave written (None: nothing was left to export)."""
    files: tuple[Path, ...] = ()
    requests: int = 0
    sealed: int = 0
    """Requests of sealed twins among them: their prompts are in the files."""
    rewritten: bool = False
    """An existing wave's unanswered lines written again (not a new wave)."""
    stored: int = 0
    """Samples of the matrix already stored."""


def export_wave(
    store: Store,
    config: AuditConfig,
    out: Path,
    *,
    wave: int | None = None,
    models: Sequence[str] | None = None,
    revisions: Sequence[str] | None = None,
    scenario_ids: Sequence[str] | None = None,
    epochs: int | None = None,
    heldout: HeldoutSet | None = None,
) -> ExportSummary:
    """Write the next wave of the matrix (or the unanswered lines of exported wave ``wave``)
    as OpenAI batch-format request files in ``out``, one model per file."""
    heldout = _load_heldout(heldout)
    engine = WaveEngine(store, heldout, run=config.run, scrub=Scrubber(set()), run_id=None)
    if wave is not None and rows.parts(store, wave=wave):
        return _rewrite(store, engine, heldout, wave, out)
    plan = plan_run(
        store,
        config,
        models=models,
        revisions=revisions,
        scenario_ids=scenario_ids,
        epochs=epochs,
        heldout=heldout,
    )
    if plan.pending:
        from audit.heldout import register_heldout

        register_heldout(store, heldout)
    engine.enroll(plan)
    keys = [s.key for s in plan.pending]
    next_wave = rows.next_wave(store)
    if wave is not None and wave != next_wave:
        raise AuditError(
            f"there is no wave {wave}: the next wave is {next_wave} (omit --wave to export it)"
        )
    _refuse_open_waves(store, keys)
    ready = rows.ready_keys(store, keys)
    if not ready:
        return ExportSummary(wave=None, stored=plan.skipped)
    out.mkdir(parents=True, exist_ok=True)
    built = engine.build(
        ready,
        wave=next_wave,
        via="export",
        folder=out,
        limits=config.batch,
        endpoint=lambda model: None,
    )
    sealed_keys = {s.key for s in plan.pending if s.scenario.sealed}
    return ExportSummary(
        wave=next_wave,
        files=tuple(b.path for b in built),
        requests=len(ready),
        sealed=sum(1 for k in ready if k in sealed_keys),
        stored=plan.skipped,
    )


def _refuse_open_waves(store: Store, keys: Sequence[str]) -> None:
    exported = rows.open_parts_of(store, keys, "export")
    if exported:
        wave = exported[0].wave
        raise AuditError(
            f"wave {wave} has requests not imported yet: import the engine's outputs "
            f"(audit batch import FILE...), write its files again (audit batch export --wave "
            f"{wave}), or cancel them (audit batch cancel --wave {wave})"
        )
    if rows.open_parts_of(store, keys, "api"):
        raise AuditError(
            "samples of this matrix wait on Batch API batches: finish them with audit sweep "
            "--batch, or cancel them (audit batch cancel --all)"
        )


def _rewrite(
    store: Store, engine: WaveEngine, heldout: HeldoutSet, wave: int, out: Path
) -> ExportSummary:
    parts = rows.parts(store, wave=wave)
    if any(p.via == "api" for p in parts):
        raise AuditError(
            f"wave {wave} went through the Batch API: only exported waves can be written again"
        )
    unanswered = [p for p in parts if p.open]
    if not unanswered:
        raise AuditError(
            f"wave {wave} is imported already: export the next wave (audit batch export)"
        )
    out.mkdir(parents=True, exist_ok=True)
    files, written, sealed = [], 0, 0
    sealed_ids = set(heldout.sealed_ids())
    for part in unanswered:
        path = out / f"specdrift-wave{wave}-{part.part_id}.jsonl"
        written += engine.rebuild(part, path)
        files.append(path)
        pending = rows.pending_samples_of_part(store, part.part_id)
        enrolled = rows.samples(store, pending)
        sealed += sum(1 for row in enrolled.values() if row.scenario_id in sealed_ids)
    return ExportSummary(
        wave=wave, files=tuple(files), requests=written, sealed=sealed, rewritten=True
    )


@dataclass(frozen=True)
class ImportSummary:
    """What ``audit batch import`` read back."""

    run_id: str
    files: int
    counts: IngestCounts = field(default_factory=IngestCounts)
    closed_waves: tuple[int, ...] = ()
    """Exported waves now answered in full."""
    ready: int = 0
    """Samples with a next request to make (export the next wave for them)."""


def import_outputs(
    store: Store,
    config: AuditConfig,
    files: Sequence[Path],
    *,
    heldout: HeldoutSet | None = None,
) -> ImportSummary:
    """Read output files of exported waves back: all of them, or (on any bad line) nothing.

    Answers are applied as the Batch API's are; finished samples are graded and stored under one
    ``runs`` row (command ``batch import``). Lines already imported are skipped.
    """
    if not files:
        raise AuditError("no output file given: pass the engine's output files (JSONL)")
    for path in files:
        if not path.is_file():
            raise AuditError(f"{path} is not a file: pass the engine's output files (JSONL)")
    heldout = _load_heldout(heldout)
    secrets = {os.environ.get(m.api_key_env, "") for m in config.models}
    engine = WaveEngine(store, heldout, run=config.run, scrub=Scrubber(secrets), run_id=None)
    counts = IngestCounts()
    with store.transaction():
        run_id = _start_import_run(store, config, heldout, files)
        engine.run_id = run_id
        for path in files:
            counts.add(engine.ingest(_file_lines(path), strict=True, commit_each_chunk=False))
        closed = rows.close_parts_without_pending(store, "imported")
        summary = RunSummary(
            run_id=run_id,
            planned=0,
            skipped=0,
            stored=counts.stored,
            failed=counts.failed,
            unstored=0,
            calls=0,
            retries=0,
            elapsed_s=0.0,
        )
        finish_run(store, summary, completed=True)
    closed_waves = sorted({p.wave for p in rows.parts(store, part_ids=closed)}) if closed else []
    return ImportSummary(
        run_id=run_id,
        files=len(files),
        counts=counts,
        closed_waves=tuple(closed_waves),
        ready=rows.ready_count(store),
    )


def _start_import_run(
    store: Store, config: AuditConfig, heldout: HeldoutSet, files: Sequence[Path]
) -> str:
    run_id = uuid.uuid4().hex
    resolved = {"files": [str(p) for p in files], "run": config.run.model_dump()}
    run = RunRow(
        run_id=run_id,
        command="batch import",
        started_at=datetime.now(UTC),
        set_hash=heldout.set_hash,
        tool_version=tool_version(),
        config=dumps(resolved),
        mode="batch",
    )
    stored_rows.insert(store, [run])
    return run_id


def _file_lines(path: Path) -> Iterator[tuple[str, str]]:
    try:
        with path.open(encoding="utf-8") as handle:
            for number, text in enumerate(handle, start=1):
                yield f"{path} line {number}", text
    except UnicodeDecodeError:
        raise AuditError(f"{path} is not UTF-8 text: pass the engine's JSONL output") from None


# -- status and cancel -------------------------------------------------------------------------


def batch_status(store: Store, config: AuditConfig, *, refresh: bool = False) -> list[BatchPart]:
    """Every request file of every wave, oldest first; ``refresh`` asks the servers for the
    status of open batches first (nothing is read back: a sweep does that)."""
    if refresh:
        for part in rows.parts(store, open_only=True):
            if part.via != "api" or not part.batch_id or not part.base_url:
                continue
            api = _api(part, config)
            try:
                batch = api.retrieve(part.batch_id)
            finally:
                api.close()
            counts = batch.request_counts
            rows.update_part(
                store,
                part.part_id,
                status=batch.status,
                completed=counts.completed if counts else None,
                failed=counts.failed if counts else None,
            )
    return rows.parts(store)


def _api(part: BatchPart, config: AuditConfig) -> BatchApi:
    base_url = part.base_url or ""
    key = key_from_env(part.api_key_env, base_url)
    return BatchApi(base_url, key, run=config.run, scrub=Scrubber({key}))


def cancel_batches(
    store: Store,
    config: AuditConfig,
    *,
    ids: Sequence[str] = (),
    wave: int | None = None,
    every: bool = False,
) -> list[BatchPart]:
    """Cancel open batches named by part or batch id, by wave, or all of them.

    A Batch API batch is cancelled on its server; the next sweep reads back what it answered
    and puts the rest into a new wave. An exported wave's unanswered lines are dropped. Neither
    counts against a sample's retries.
    """
    if not ids and wave is None and not every:
        raise AuditError("name what to cancel: batch or part ids, --wave N, or --all")
    targets = rows.parts(store, part_ids=list(ids) or None, wave=wave, open_only=True)
    if not targets:
        raise AuditError("no open batch matches: see audit batch status")
    for part in targets:
        _cancel(store, config, part)
    return rows.parts(store, part_ids=[p.part_id for p in targets])


def _cancel(store: Store, config: AuditConfig, part: BatchPart) -> None:
    if part.via == "api" and part.status in ("uploaded", "built") and part.input_file_id:
        api = _api(part, config)
        try:
            found = api.find(part)
        finally:
            api.close()
        if found is not None:
            rows.update_part(store, part.part_id, batch_id=found.id, status=found.status)
            part = rows.parts(store, part_ids=[part.part_id])[0]
    if part.via == "api" and part.batch_id:
        api = _api(part, config)
        try:
            batch = api.cancel(part.batch_id)
        finally:
            api.close()
        rows.update_part(store, part.part_id, status=batch.status)
        return
    with store.transaction():
        rows.cancel_pending(store, part.part_id, "cancelled by audit batch cancel")
        rows.update_part(
            store,
            part.part_id,
            status="cancelled",
            finished_at=rows.now(),
            ingested_at=rows.now(),
        )
