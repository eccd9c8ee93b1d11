"""The runner: rerun the held-out set against spec revisions x models, grade, store.

:func:`plan_run` expands the matrix and finds which samples are already stored;
:func:`run_matrix` runs the rest through ``openai.AsyncOpenAI`` on one event loop (a pool of
workers per model, as many as its configured concurrency), grades every transcript with
:func:`audit.graders.grade_sample`, and writes samples in batches as they finish. A ``runs`` row
is written at the start and completed at the end; samples that still fail after their retries get
a ``sample_failures`` row instead.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import random
import threading
import time
import uuid
from collections.abc import Coroutine, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from audit.config import AuditConfig, ModelConfig, RunConfig
from audit.errors import AuditError
from audit.progress import NullProgress, Progress
from audit.records import SpecRevision, Transcript
from audit.runner.client import (
    CallStats,
    Conversation,
    SampleFailed,
    Scrubber,
    api_key_for,
    converse,
    dumps,
    endpoint_of,
    make_client,
    scrubbed,
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
from audit.store.rows import RunRow, SampleFailureRow, SampleRow

if TYPE_CHECKING:
    import openai

    from audit.heldout import HeldoutSet

__all__ = [
    "PlannedSample",
    "RunPlan",
    "RunSummary",
    "finish_run",
    "plan_run",
    "run_matrix",
    "sample_key",
    "start_run",
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


ABANDON_AFTER_REFUSALS = 8
"""Non-retryable errors (401, 404, a 400 for a parameter) on a model's first requests, with no
success in between, after which the run stops sending that model's samples."""


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
    context = _RunContext(
        run=config.run,
        run_id=run_id,
        set_hash=plan.set_hash,
        writer=BatchWriter(store, batch_rows=batch_rows, flush_s=flush_s),
        stats=CallStats(),
        rng=random.Random(),
        scrub=scrub,
        progress=progress or NullProgress(),
        # A matrix with nothing left to run is complete as soon as it starts.
        completed=not plan.pending,
    )
    writer, stats = context.writer, context.stats
    context.progress.start(len(plan.pending), f"{command}: {len(plan.pending)} samples")
    workers = config.run.workers if workers is None else workers
    try:
        if plan.pending:
            # Imported before worker processes fork (they share the modules instead of each
            # spending 0.4 s of CPU importing openai) and before the heap is frozen.
            importlib.import_module("openai")
            importlib.import_module("audit.graders")
            shards = split_plan(plan, workers) if workers > 1 else []
            with _frozen_heap():
                if len(shards) > 1:
                    pool = WorkerPool(shards, endpoints, keys, _worker_fields(context))
                    run_coroutine(_collect(pool, context))
                else:
                    run_coroutine(_execute(plan, endpoints, keys, context))
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


@contextmanager
def _frozen_heap() -> Iterator[None]:
    """Leave the objects that exist before the run (modules, the held-out set, the plan) out of
    the garbage collector's passes until it ends.

    Their full passes stalled the event loop: 200 ms server, 64 in flight, 1,368 samples: three
    gen-2 passes took 143 ms, one of them 73 ms, with every response waiting meanwhile. Frozen
    objects are still freed when their count drops to zero; cycles among them wait for the end
    of the run, when they are handed back to the collector.
    """
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def run_coroutine(coroutine: Coroutine[Any, Any, None]) -> None:
    """Run on a fresh event loop; from inside a running loop (Jupyter), on a helper thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(coroutine)
        return
    errors: list[BaseException] = []

    def target() -> None:
        try:
            asyncio.run(coroutine)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target, name="specdrift-runner")
    thread.start()
    thread.join()
    if errors:
        raise errors[0]


@dataclass
class _RunContext:
    """What every worker of one run shares."""

    run: RunConfig
    run_id: str
    set_hash: str
    writer: BatchWriter
    stats: CallStats
    rng: random.Random
    scrub: Scrubber
    progress: Progress
    completed: bool = False
    abandoned: dict[str, str] = field(default_factory=dict)
    refusals: dict[str, int] = field(default_factory=dict)
    answered: set[str] = field(default_factory=set)

    def note_success(self, model: str) -> None:
        self.answered.add(model)

    def note_refusal(self, model: str, message: str) -> None:
        """Count an error retrying cannot fix; give up on a model that never got an answer."""
        if model in self.answered:
            return  # the model works: this request was the odd one out
        self.refusals[model] = self.refusals.get(model, 0) + 1
        if self.refusals[model] >= ABANDON_AFTER_REFUSALS:
            self.abandoned.setdefault(model, message)


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


def _worker_fields(context: _RunContext) -> dict[str, Any]:
    """What a worker process needs of the run context (it brings its own writer, stats and
    random generator: forked copies of one generator would jitter their backoffs in step)."""
    return {
        "run": context.run,
        "run_id": context.run_id,
        "set_hash": context.set_hash,
        "scrub": context.scrub,
    }


async def _collect(pool: WorkerPool, context: _RunContext) -> None:
    """Parent side of a multi-process run: store what the workers send, count progress."""
    ticker = asyncio.get_running_loop().create_task(_tick(context.writer))

    def deliver(table: str, row: Mapping[str, Any]) -> None:
        context.writer.add(table, row)
        context.progress.advance(1, errors=int(table == SampleFailureRow.TABLE))

    try:
        outcome = await pool.collect(deliver)
        context.stats.calls += outcome.calls
        context.stats.retries += outcome.retries
        for model, message in outcome.abandoned.items():
            context.abandoned.setdefault(model, message)
        for error in outcome.errors:
            context.progress.message(f"runner {error}")
        context.completed = outcome.completed and not context.abandoned
    finally:
        ticker.cancel()
        await context.writer.close()


async def _execute(
    plan: RunPlan, endpoints: dict[str, str], keys: dict[str, str], context: _RunContext
) -> None:
    clients = _clients(plan.models, endpoints, keys, context.run.timeout_s)
    by_model: dict[str, list[PlannedSample]] = {}
    for sample in plan.pending:
        by_model.setdefault(sample.model.name, []).append(sample)
    ticker = asyncio.get_running_loop().create_task(_tick(context.writer))
    try:
        workers = []
        for model in plan.models:
            samples = by_model.get(model.name, [])
            queue = iter(samples)
            count = min(model.concurrency, len(samples))
            pools = clients[model.name]
            workers += [_worker(queue, pools[n % len(pools)], context) for n in range(count)]
        await asyncio.gather(*workers)
        context.completed = not context.abandoned
    finally:
        ticker.cancel()
        await context.writer.close()
        for client in {id(c): c for pools in clients.values() for c in pools}.values():
            await client.close()


POOL_CONNECTIONS = 16
"""Connections per HTTP client. httpx's pool looks over every one of its connections twice per
request, so a model with a concurrency of 64 gets four clients of 16, its workers dealt among
them."""


def _clients(
    models: Sequence[ModelConfig],
    endpoints: dict[str, str],
    keys: dict[str, str],
    timeout_s: float,
) -> dict[str, list[openai.AsyncOpenAI]]:
    """Clients per (endpoint, key), with as many connections in all as the models sharing them
    need, at most :data:`POOL_CONNECTIONS` per client."""
    pools: dict[tuple[str, str], int] = {}
    for model in models:
        slot = (endpoints[model.name], keys[model.name])
        pools[slot] = pools.get(slot, 0) + model.concurrency
    shared = {
        slot: [
            make_client(slot[0], slot[1], size, timeout_s)
            for size in _pool_sizes(total, POOL_CONNECTIONS)
        ]
        for slot, total in pools.items()
    }
    return {m.name: shared[(endpoints[m.name], keys[m.name])] for m in models}


def _pool_sizes(total: int, most: int) -> list[int]:
    """``total`` connections in as few pools of at most ``most`` as can hold them, evenly."""
    count = -(-total // most)
    return [total // count + (1 if n < total % count else 0) for n in range(count)]


async def _tick(writer: BatchWriter) -> None:
    while True:
        await asyncio.sleep(writer.flush_s)
        writer.tick()


async def _worker(
    queue: Iterator[PlannedSample], client: openai.AsyncOpenAI, context: _RunContext
) -> None:
    # Workers share one iterator per model: as many requests in flight as workers, no more.
    for sample in queue:
        model = sample.model.name
        if model in context.abandoned:
            return  # its remaining samples stay unrun: a rerun after the fix picks them up
        try:
            conversation = await converse(client, sample, context.run, context.stats, context.rng)
            # Scrubbed before grading, so the stored grade is the grade of the stored transcript.
            conversation = scrubbed(conversation, context.scrub)
            row = sample_row(sample, conversation, context.run_id, context.set_hash)
        except SampleFailed as failure:
            message = context.scrub(failure.error.message)
            _record_failure(context, sample, failure.error.kind, message, failure.attempts)
            if not failure.error.retryable:
                context.note_refusal(model, message)
            continue
        except Exception as exc:  # a response or grader we did not foresee: record, go on
            _record_failure(context, sample, "other", f"{type(exc).__name__}: {exc}", 1)
            continue
        context.note_success(model)
        context.writer.add(SampleRow.TABLE, row)
        context.progress.advance(1)


def _record_failure(
    context: _RunContext, sample: PlannedSample, kind: str, message: str, attempts: int
) -> None:
    row = failure_row(sample, context.run_id, kind, context.scrub(message), attempts)
    context.writer.add(SampleFailureRow.TABLE, row)
    context.progress.advance(1, errors=1)


def sample_row(
    sample: PlannedSample, conversation: Conversation, run_id: str, set_hash: str
) -> dict[str, Any]:
    """Grade a finished conversation and build its ``samples`` row (a :class:`SampleRow`'s
    columns)."""
    from audit.graders import grade_sample

    transcript = Transcript(tuple(conversation.messages), conversation.finish_reason)
    graded = grade_sample(sample.scenario, sample.condition, transcript, sample.spec_text)
    grade = graded.grade
    evidence = {"rule_id": grade.rule_id, **grade.evidence}
    if graded.citation.evidence:
        evidence["spec_citation"] = graded.citation.evidence
    return SampleRow(
        sample_key=sample.key,
        run_id=run_id,
        origin="run",
        model=sample.model.name,
        model_version=sample.model.version,
        source_id=sample.revision.source_id,
        spec_sha=sample.revision.sha,
        spec_content_hash=sample.spec_content_hash,
        set_hash=set_hash,
        scenario_id=sample.scenario.id,
        scenario_hash=sample.scenario_hash,
        family=sample.scenario.family,
        condition=sample.condition,
        epoch=sample.epoch,
        params_hash=sample.params_hash,
        outcome=grade.outcome,
        eval_aware=graded.awareness.detected,
        spec_cited=graded.citation.detected,
        score=grade.score,
        grade_evidence=dumps(evidence),
        awareness_evidence=dumps(graded.awareness.evidence),
        reasoning=transcript.reasoning() or None,
        answer=transcript.final_text() or None,
        transcript=transcript.to_json(),
        turns=conversation.turns,
        prompt_tokens=conversation.prompt_tokens,
        completion_tokens=conversation.completion_tokens,
        reasoning_tokens=conversation.reasoning_tokens,
        latency_ms=conversation.latency_ms,
        finish_reason=conversation.finish_reason,
        system_fingerprint=conversation.system_fingerprint,
    ).as_row()


def failure_row(
    sample: PlannedSample, run_id: str, kind: str, message: str, attempts: int
) -> dict[str, Any]:
    """The ``sample_failures`` row of a sample that gave up (message already scrubbed)."""
    return SampleFailureRow(
        sample_key=sample.key,
        run_id=run_id,
        model=sample.model.name,
        spec_sha=sample.revision.sha,
        scenario_id=sample.scenario.id,
        condition=sample.condition,
        epoch=sample.epoch,
        error_kind=kind,
        error=message,
        attempts=attempts,
    ).as_row()
