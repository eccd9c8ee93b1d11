"""The runner's engine: run a plan's pending samples on one event loop, grade them, hand the rows
to a sink.

:func:`execute` runs a plan in this process (a pool of workers per model, as many as its
configured concurrency, sharing HTTP clients); :func:`collect` is the parent's side of a run in
worker processes (:mod:`audit.runner.processes`), each of which calls :func:`execute` on its
shard. Either way the rows go to the :class:`~audit.runner.writer.RowSink` of the
:class:`RunContext`: the store's batch writer in the parent, a queue back to it in a worker.
:func:`sample_row` and :func:`failure_row` build the stored rows (the batch runner builds its
samples with :func:`sample_row` too).
"""

from __future__ import annotations

import asyncio
import gc
import random
import threading
from collections.abc import Coroutine, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from audit.config import ModelConfig, RunConfig
from audit.progress import Progress
from audit.records import SampleGrade, Transcript
from audit.runner.client import (
    CallStats,
    Conversation,
    SampleFailed,
    Scrubber,
    converse,
    dumps,
    make_client,
    scrubbed,
)
from audit.runner.matrix import PlannedSample, RunPlan
from audit.runner.writer import RowSink
from audit.store.rows import SampleFailureRow, SampleRow

if TYPE_CHECKING:
    import openai

    from audit.runner.processes import WorkerPool

__all__ = [
    "ABANDON_AFTER_REFUSALS",
    "POOL_CONNECTIONS",
    "RunContext",
    "collect",
    "execute",
    "failure_row",
    "frozen_heap",
    "run_coroutine",
    "sample_row",
    "worker_fields",
]

ABANDON_AFTER_REFUSALS = 8
"""Non-retryable errors (401, 404, a 400 for a parameter) on a model's first requests, with no
success in between, after which the run stops sending that model's samples (the batch and
counterfactual runners use it too)."""

POOL_CONNECTIONS = 16
"""Connections per HTTP client. httpx's pool looks over every one of its connections twice per
request, so a model with a concurrency of 64 gets four clients of 16, its workers dealt among
them."""


@dataclass
class RunContext:
    """What every worker of one run shares."""

    run: RunConfig
    run_id: str
    set_hash: str
    writer: RowSink
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


def worker_fields(context: RunContext) -> dict[str, Any]:
    """What a worker process needs of the run context (it brings its own writer, stats and
    random generator: forked copies of one generator would jitter their backoffs in step)."""
    return {
        "run": context.run,
        "run_id": context.run_id,
        "set_hash": context.set_hash,
        "scrub": context.scrub,
    }


@contextmanager
def frozen_heap() -> Iterator[None]:
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


async def collect(pool: WorkerPool, context: RunContext) -> None:
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


async def execute(
    plan: RunPlan, endpoints: dict[str, str], keys: dict[str, str], context: RunContext
) -> None:
    """Run ``plan.pending`` in this process and hand every row to ``context.writer``; closes
    the writer and the clients at the end."""
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


async def _tick(writer: RowSink) -> None:
    while True:
        await asyncio.sleep(writer.flush_s)
        writer.tick()


async def _worker(
    queue: Iterator[PlannedSample], client: openai.AsyncOpenAI, context: RunContext
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
    context: RunContext, sample: PlannedSample, kind: str, message: str, attempts: int
) -> None:
    row = failure_row(sample, context.run_id, kind, context.scrub(message), attempts)
    context.writer.add(SampleFailureRow.TABLE, row)
    context.progress.advance(1, errors=1)


class ConversationTotals(Protocol):
    """What a finished conversation (live, batch or counterfactual) tells about itself."""

    turns: int
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    reasoning_tokens: int | None
    latency_ms: float
    system_fingerprint: str | None


def graded_columns(
    graded: SampleGrade, transcript: Transcript, conversation: ConversationTotals
) -> dict[str, Any]:
    """The columns ``samples`` and ``counterfactual_samples`` share: the grade, the transcript
    and the conversation's totals."""
    grade = graded.grade
    evidence = {"rule_id": grade.rule_id, **grade.evidence}
    if graded.citation.evidence:
        evidence["spec_citation"] = graded.citation.evidence
    return {
        "outcome": grade.outcome,
        "eval_aware": graded.awareness.detected,
        "spec_cited": graded.citation.detected,
        "score": grade.score,
        "grade_evidence": dumps(evidence),
        "awareness_evidence": dumps(graded.awareness.evidence),
        "reasoning": transcript.reasoning() or None,
        "answer": transcript.final_text() or None,
        "transcript": transcript.to_json(),
        "turns": conversation.turns,
        "prompt_tokens": conversation.prompt_tokens,
        "completion_tokens": conversation.completion_tokens,
        "reasoning_tokens": conversation.reasoning_tokens,
        "latency_ms": conversation.latency_ms,
        "finish_reason": conversation.finish_reason,
        "system_fingerprint": conversation.system_fingerprint,
    }


def sample_row(
    sample: PlannedSample, conversation: Conversation, run_id: str, set_hash: str
) -> dict[str, Any]:
    """Grade a finished conversation and build its ``samples`` row (a :class:`SampleRow`'s
    columns)."""
    from audit.graders import grade_sample

    transcript = Transcript(tuple(conversation.messages), conversation.finish_reason)
    graded = grade_sample(sample.scenario, sample.condition, transcript, sample.spec_text)
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
        **graded_columns(graded, transcript, conversation),
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
