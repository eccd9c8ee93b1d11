"""The runner: rerun the held-out set against spec revisions x models, grade, store.

:func:`plan_run` expands the matrix and finds which samples are already stored;
:func:`run_matrix` runs the rest through ``openai.AsyncOpenAI`` on one event loop (a pool of
workers per model, as many as its configured concurrency), grades every transcript with
:func:`audit.graders.grade_sample`, and writes samples in batches as they finish. A ``runs`` row
is written at the start and completed at the end; samples that still fail after their retries get
a ``sample_failures`` row instead.

This module plans and records a run; the engine that executes it (the workers, their shared
context, the rows they build) is :mod:`audit.runner.engine`, whose :func:`sample_row`,
:func:`failure_row` and :func:`run_coroutine` are re-exported here.
"""

from __future__ import annotations

import importlib
import random
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from audit.config import AuditConfig
from audit.errors import AuditError
from audit.progress import NullProgress, Progress
from audit.records import SpecRevision
from audit.runner.client import CallStats, Scrubber, api_key_for, dumps, endpoint_of
from audit.runner.engine import (
    ABANDON_AFTER_REFUSALS,
    RunContext,
    collect,
    execute,
    failure_row,
    frozen_heap,
    run_coroutine,
    sample_row,
    worker_fields,
)
from audit.runner.matrix import (
    PlannedSample,
    RunPlan,
    expand,
    list_revisions,
    resolve_revisions,
    sample_key,
    select_models,
    stored_keys,
)
from audit.runner.processes import WorkerPool, split_plan
from audit.runner.writer import BatchWriter
from audit.store import Store
from audit.store import rows as stored_rows
from audit.store.rows import RunRow

if TYPE_CHECKING:
    from audit.heldout import HeldoutSet

__all__ = [
    "ABANDON_AFTER_REFUSALS",
    "PlannedSample",
    "RunPlan",
    "RunSummary",
    "failure_row",
    "finish_run",
    "plan_run",
    "run_coroutine",
    "run_matrix",
    "sample_key",
    "sample_row",
    "start_run",
    "tool_version",
]


@dataclass(frozen=True)
class RunSummary:
    """What a run did. ``unstored`` > 0 is the only outcome that means data was lost."""

    run_id: str
    planned: int
    skipped: int
    stored: int
    failed: int
    unstored: int
    calls: int
    retries: int
    elapsed_s: float
    store_error: str | None = None
    abandoned: dict[str, str] = field(default_factory=dict)
    """Models given up on because the server refused their first requests outright
    (e.g. 401, 404, 400 for a parameter), with the error; their other samples were not run."""

    @property
    def ok(self) -> bool:
        """Every planned sample is stored or recorded as failed."""
        return self.unstored == 0

    def line(self) -> str:
        """The one-line summary the CLI prints when not on a terminal."""
        text = (
            f"stored {self.stored}, skipped {self.skipped}, failed {self.failed} "
            f"in {self.elapsed_s:.1f} s"
        )
        return text + (f", NOT STORED {self.unstored}" if self.unstored else "")


def tool_version() -> str:
    try:
        return version("specdrift")
    except PackageNotFoundError:  # running from a source tree without installing
        return "unknown"


def plan_run(
    store: Store,
    config: AuditConfig,
    *,
    models: Sequence[str] | None,
    revisions: Sequence[str] | None,
    scenario_ids: Sequence[str] | None = None,
    epochs: int | None = None,
    heldout: HeldoutSet | None = None,
) -> RunPlan:
    """Expand the matrix and mark what is already stored; calls no model.

    ``models`` None means every configured model, ``revisions`` None every stored revision of
    the configured spec source, ``scenario_ids`` None the whole held-out set (``heldout``, else
    the set ``heldout.path`` of the config names, else the starter set).
    """
    if heldout is None:
        from audit.heldout import load_heldout

        heldout = load_heldout(config.heldout.path)
    epochs = config.run.epochs if epochs is None else epochs
    if epochs < 1:
        raise AuditError(f"--epochs must be at least 1, got {epochs}")
    chosen_models = select_models(config, models)
    chosen_revisions = _revisions(store, config, revisions)
    scenarios = _scenarios(heldout, scenario_ids, twins=config.run.twins)
    cells, samples = expand(
        models=chosen_models,
        revisions=chosen_revisions,
        scenarios=[(s, heldout.scenario_hash(s.id)) for s in scenarios],
        epochs=epochs,
    )
    done = stored_keys(store, [s.key for s in samples])
    return RunPlan(
        models=chosen_models,
        revisions=tuple(chosen_revisions),
        scenario_ids=tuple(s.id for s in scenarios),
        sealed_ids=frozenset(s.id for s in scenarios if s.sealed),
        epochs=epochs,
        max_turns=config.run.max_turns,
        set_hash=heldout.set_hash,
        cells=cells,
        samples=tuple(samples),
        pending=tuple(s for s in samples if s.key not in done),
    )


def _revisions(store: Store, config: AuditConfig, refs: Sequence[str] | None) -> list[SpecRevision]:
    source_id = config.spec.source_id
    if refs is None:
        return list_revisions(store, source_id)
    if not refs:
        raise AuditError("no revision given: pass --rev REF (sha prefix, tag or index)")
    return resolve_revisions(store, refs, source_id)


def _scenarios(heldout: HeldoutSet, ids: Sequence[str] | None, *, twins: bool) -> list[Any]:
    """The scenarios to run: the ones named, else the whole set (without sealed twins when
    ``twins`` is false). Named scenarios are run as named, twins included."""
    if ids is None:
        return [s for s in heldout.scenarios if twins or not s.sealed]
    by_id = {s.id: s for s in heldout.scenarios}
    unknown = [i for i in ids if i not in by_id]
    if unknown:
        raise AuditError(
            f"unknown scenario(s) {', '.join(unknown)}: see `audit heldout list` for the ids"
        )
    return [by_id[i] for i in dict.fromkeys(ids)]


def run_matrix(
    store: Store,
    config: AuditConfig,
    *,
    models: Sequence[str] | None,
    revisions: Sequence[str] | None,
    scenario_ids: Sequence[str] | None = None,
    epochs: int | None = None,
    progress: Progress | None = None,
    base_url: str | None = None,
    command: str = "run",
    heldout: HeldoutSet | None = None,
    batch_rows: int = 200,
    flush_s: float = 0.5,
    workers: int | None = None,
) -> RunSummary:
    """Run every planned sample not yet stored, grade it, and store it; returns the counts.

    ``base_url`` overrides every model's endpoint (e.g. a local server). Keys are read from the
    environment variables the models name and never stored: ``runs.config`` keeps the names.
    ``workers`` (default ``config.run.workers``) above 1 runs the conversations and grading in
    that many processes, which pays off only when the server answers faster than one process
    can send (see :mod:`audit.runner.processes`); this process still does all the writing.
    """
    started = time.perf_counter()
    if heldout is None:
        from audit.heldout import load_heldout

        heldout = load_heldout(config.heldout.path)
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
    run_id = start_run(store, config, plan, command, endpoints)
    writer = BatchWriter(store, batch_rows=batch_rows, flush_s=flush_s)
    context = RunContext(
        run=config.run,
        run_id=run_id,
        set_hash=plan.set_hash,
        writer=writer,
        stats=CallStats(),
        rng=random.Random(),
        scrub=scrub,
        progress=progress or NullProgress(),
        # A matrix with nothing left to run is complete as soon as it starts.
        completed=not plan.pending,
    )
    stats = context.stats
    context.progress.start(len(plan.pending), f"{command}: {len(plan.pending)} samples")
    workers = config.run.workers if workers is None else workers
    try:
        if plan.pending:
            # Imported before worker processes fork (they share the modules instead of each
            # spending 0.4 s of CPU importing openai) and before the heap is frozen.
            importlib.import_module("openai")
            importlib.import_module("audit.graders")
            shards = split_plan(plan, workers) if workers > 1 else []
            with frozen_heap():
                if len(shards) > 1:
                    pool = WorkerPool(shards, endpoints, keys, worker_fields(context))
                    run_coroutine(collect(pool, context))
                else:
                    run_coroutine(execute(plan, endpoints, keys, context))
    finally:
        context.progress.finish()
        unstored = sum(writer.unstored.values())
        summary = RunSummary(
            run_id=run_id,
            planned=len(plan.samples),
            skipped=plan.skipped,
            stored=writer.written.get("samples", 0),
            failed=writer.written.get("sample_failures", 0),
            unstored=unstored,
            calls=stats.calls,
            retries=stats.retries,
            elapsed_s=time.perf_counter() - started,
            store_error=scrub(writer.first_error) if writer.first_error else None,
            abandoned=dict(context.abandoned),
        )
        finish_run(store, summary, completed=context.completed)
    return summary


def start_run(
    store: Store,
    config: AuditConfig,
    plan: RunPlan,
    command: str,
    endpoints: dict[str, str],
    *,
    mode: str = "live",
) -> str:
    """Write the ``runs`` row of a run that starts now; returns its id."""
    run_id = uuid.uuid4().hex
    resolved = {
        "plan": plan.describe(),
        "revisions": [r.sha for r in plan.revisions],
        "scenario_ids": list(plan.scenario_ids),
        "run": config.run.model_dump(),
        # Model settings as configured plus the endpoint used; the key itself never appears,
        # only api_key_env, the name of the variable holding it.
        "models": [{**m.model_dump(), "base_url": endpoints[m.name]} for m in plan.models],
    }
    run = RunRow(
        run_id=run_id,
        command=command,
        started_at=datetime.now(UTC),
        set_hash=plan.set_hash,
        tool_version=tool_version(),
        config=dumps(resolved),
        planned=len(plan.samples),
        skipped=plan.skipped,
        mode=mode,
    )
    stored_rows.insert(store, [run])
    return run_id


def finish_run(store: Store, summary: RunSummary, *, completed: bool) -> None:
    """Complete a run's row; an interrupted run keeps ``finished_at`` NULL."""
    stored_rows.finish_run(
        store, summary.run_id, completed=completed, stored=summary.stored, failed=summary.failed
    )
