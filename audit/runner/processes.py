"""Running a plan's pending samples in several worker processes.

Against a fast server (the loopback organisms, a local vLLM) one runner process is bound by the
CPU that the ``openai`` client spends per request, about 2 ms. Worker processes each run their
share of the samples on their own event loop and grade them; they send finished rows back over a
queue, and only the parent writes to DuckDB, so the store keeps one writer and the resume
guarantees do not change: a row is stored once the parent has flushed it, and a killed run redoes
exactly the samples whose rows were not flushed.

Each model's concurrency is split across the workers, so the total number of requests in flight
per model stays what the config says. Workers exit on their own when the parent dies.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import queue as queue_module
import random
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from audit.config import ModelConfig
from audit.runner.matrix import PlannedSample, RunPlan

_BATCH_ROWS = 50
_BATCH_S = 0.1
_PARENT_CHECK_S = 0.5


@dataclass(frozen=True)
class Shard:
    """One worker's share: its samples and its models with their share of the concurrency."""

    index: int
    plan: RunPlan


def split_plan(plan: RunPlan, workers: int) -> list[Shard]:
    """Deal the pending samples round-robin per model; split each model's concurrency.

    A model whose concurrency is smaller than ``workers`` runs in that many workers only, so no
    model ever has more requests in flight than configured.
    """
    by_model: dict[str, list[PlannedSample]] = {}
    for sample in plan.pending:
        by_model.setdefault(sample.model.name, []).append(sample)
    shards_samples: list[list[PlannedSample]] = [[] for _ in range(workers)]
    shards_models: list[list[ModelConfig]] = [[] for _ in range(workers)]
    for model in plan.models:
        samples = by_model.get(model.name, [])
        if not samples:
            continue
        used = min(workers, model.concurrency, len(samples))
        for worker in range(used):
            share = model.concurrency // used + (1 if worker < model.concurrency % used else 0)
            shards_models[worker].append(model.model_copy(update={"concurrency": share}))
            shards_samples[worker].extend(samples[worker::used])
    filled = [
        (models, samples)
        for models, samples in zip(shards_models, shards_samples, strict=True)
        if samples
    ]
    return [
        Shard(index, replace(plan, models=tuple(models), pending=tuple(samples)))
        for index, (models, samples) in enumerate(filled)
    ]


class QueueSink:
    """The worker's :class:`~audit.runner.writer.RowSink`, in place of the batch writer: ships
    rows to the parent in small batches."""

    def __init__(self, queue: Any, worker: int) -> None:
        self.flush_s = _BATCH_S
        self._queue = queue
        self._worker = worker
        self._rows: list[tuple[str, Mapping[str, Any]]] = []
        self._last = time.monotonic()

    def add(self, table: str, row: Mapping[str, Any]) -> None:
        self._rows.append((table, row))
        if len(self._rows) >= _BATCH_ROWS or time.monotonic() - self._last >= self.flush_s:
            self._send()

    def tick(self) -> None:
        if self._rows and time.monotonic() - self._last >= self.flush_s:
            self._send()

    async def close(self) -> None:
        self._send()

    def _send(self) -> None:
        if self._rows:
            self._queue.put(("rows", self._worker, self._rows))
        self._rows = []
        self._last = time.monotonic()


def _worker_main(
    shard: Shard,
    endpoints: dict[str, str],
    keys: dict[str, str],
    context_fields: dict[str, Any],
    queue: Any,
    parent_pid: int,
) -> None:
    """Entry point of a worker process: run the shard, report counters, exit."""
    from audit.progress import NullProgress
    from audit.runner.client import CallStats
    from audit.runner.engine import RunContext, execute

    context = RunContext(
        **context_fields,
        writer=QueueSink(queue, shard.index),
        stats=CallStats(),
        rng=random.Random(),
        progress=NullProgress(),
    )

    async def main() -> None:
        watchdog = asyncio.get_running_loop().create_task(_exit_when_orphaned(parent_pid))
        try:
            await execute(shard.plan, endpoints, keys, context)
        finally:
            watchdog.cancel()

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        return  # the parent saw the interrupt too and reports it
    except BaseException as exc:
        queue.put(("error", shard.index, context.scrub(f"{type(exc).__name__}: {exc}")))
        raise SystemExit(1) from None
    counters = (context.stats.calls, context.stats.retries, context.abandoned)
    queue.put(("done", shard.index, counters))


async def _exit_when_orphaned(parent_pid: int) -> None:
    # A SIGKILLed parent cannot stop its workers; they notice and quit, so a rerun never races
    # with requests of a dead run.
    while True:
        await asyncio.sleep(_PARENT_CHECK_S)
        if os.getppid() != parent_pid:
            os._exit(1)


@dataclass
class WorkerOutcome:
    """What the parent learnt from the workers."""

    calls: int = 0
    retries: int = 0
    abandoned: dict[str, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    completed: bool = False


class WorkerPool:
    """Worker processes started for one run, and the queue their rows come back on."""

    def __init__(
        self,
        shards: Sequence[Shard],
        endpoints: dict[str, str],
        keys: dict[str, str],
        context_fields: dict[str, Any],
    ) -> None:
        # Forked outside any event loop (a child must not inherit a running loop); on systems
        # without a safe fork the workers are spawned and import what they need.
        fork = sys.platform == "linux"
        mp = multiprocessing.get_context("fork") if fork else multiprocessing.get_context("spawn")
        self._queue = mp.Queue()
        self._processes = [
            mp.Process(
                target=_worker_main,
                args=(shard, endpoints, keys, context_fields, self._queue, os.getpid()),
                name=f"specdrift-runner-{shard.index}",
                daemon=True,
            )
            for shard in shards
        ]
        for process in self._processes:
            process.start()

    async def collect(self, deliver: Callable[[str, Mapping[str, Any]], None]) -> WorkerOutcome:
        """Hand every row the workers send to ``deliver`` until all have finished or died.

        A worker that died without finishing is reported in ``errors``; its unfinished samples
        are neither stored nor failed, so the next run picks them up.
        """
        outcome = WorkerOutcome()
        finished: set[int] = set()
        try:
            while len(finished) < len(self._processes):
                message = await asyncio.to_thread(_get, self._queue, 0.5)
                if message is None:
                    self._note_dead_workers(finished, outcome)
                else:
                    self._handle(message, deliver, finished, outcome)
            # Rows a crashed worker sent before it died may still be in the pipe.
            while (message := _get(self._queue, 0.05)) is not None:
                self._handle(message, deliver, finished, outcome)
            outcome.completed = not outcome.errors
        finally:
            self.stop()
        return outcome

    def stop(self) -> None:
        """Wait briefly for the workers, then terminate any still running."""
        for process in self._processes:
            process.join(timeout=5)
            if process.is_alive():
                process.terminate()
                process.join(timeout=5)

    @staticmethod
    def _handle(
        message: tuple[str, int, Any],
        deliver: Callable[[str, Mapping[str, Any]], None],
        finished: set[int],
        outcome: WorkerOutcome,
    ) -> None:
        kind, worker, payload = message
        if kind == "rows":
            for table, row in payload:
                deliver(table, row)
        elif kind == "done":
            finished.add(worker)
            calls, retries, abandoned = payload
            outcome.calls += calls
            outcome.retries += retries
            for model, reason in abandoned.items():
                outcome.abandoned.setdefault(model, reason)
        else:
            finished.add(worker)
            outcome.errors.append(f"worker {worker}: {payload}")

    def _note_dead_workers(self, finished: set[int], outcome: WorkerOutcome) -> None:
        for index, process in enumerate(self._processes):
            if index not in finished and not process.is_alive():
                finished.add(index)
                outcome.errors.append(f"worker {index} exited with code {process.exitcode}")


def _get(queue: Any, timeout: float) -> Any:
    try:
        return queue.get(timeout=timeout)
    except queue_module.Empty:
        return None
