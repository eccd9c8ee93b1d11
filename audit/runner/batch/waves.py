"""Waves: every pending sample's next request, written to batch files and read back.

:class:`WaveEngine` is the engine-independent half of batch mode. It enrolls the pending samples
of a plan, builds a wave (each ready sample's next chat-completion request, exactly the body the
live runner would post, cut into files), and ingests output lines: an answer is applied to the
sample's conversation through :class:`~audit.runner.client.ConversationState`, the tool calls
are answered, and a finished conversation is graded and stored as a live run stores it (same
key, same columns; ``latency_ms`` is NULL: a batch has no per-request latency). Error lines and
requests a batch never answered are retried in the next wave, up to ``run.max_retries``, then
recorded in ``sample_failures`` with their reason.

Nothing is kept in memory between waves: a sample's conversation is rebuilt from its enrolled
row and its stored answers each time it is needed, so a process killed at any point resumes
from DuckDB alone, and memory stays bounded by one chunk of samples however large the sweep.
Every text that came back from a server passes through the runner's :class:`Scrubber` before
it is parsed or stored.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pydantic

from audit.config import BatchConfig, ModelConfig, RunConfig
from audit.errors import AuditError
from audit.heldout.model import Scenario
from audit.records import SpecRevision
from audit.runner.batch.files import (
    FileCutter,
    OutputLine,
    WrittenFile,
    custom_id,
    dumps_compact,
    parse_output_line,
    request_line,
)
from audit.runner.client import (
    CallError,
    ConversationState,
    MalformedResponse,
    Scrubber,
    check_completion,
    parse_completion,
    status_error,
)
from audit.runner.engine import ABANDON_AFTER_REFUSALS
from audit.runner.matrix import PlannedSample, RunPlan, params_hash
from audit.store import Store
from audit.store import batches as rows
from audit.store.batches import BatchPart, BatchRequest, BatchSample, RequestOutcome, SampleProgress
from audit.store.rows import SampleFailureRow

if TYPE_CHECKING:
    from audit.heldout import HeldoutSet

CHUNK = 2000
"""Samples handled at once: bounds memory (their conversations) and the size of a write."""


@dataclass
class IngestCounts:
    """What reading output lines back did."""

    lines: int = 0
    answered: int = 0
    errors: int = 0
    """Error lines and requests a batch ended without answering."""
    skipped: int = 0
    """Lines of requests already read back (importing a file twice changes nothing)."""
    unknown: int = 0
    stored: int = 0
    """Samples finished, graded and stored."""
    failed: int = 0
    """Samples that gave up (recorded in sample_failures)."""
    continuing: int = 0
    """Samples with turns still to run (they go into the next wave)."""

    def add(self, other: IngestCounts) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass
class BuiltPart:
    """A request file of a wave, written and recorded."""

    part: BatchPart
    path: Path


@dataclass
class _Batch:
    """The writes of one chunk of output lines, done together."""

    outcomes: list[RequestOutcome] = field(default_factory=list)
    progress: list[SampleProgress] = field(default_factory=list)
    samples: list[dict[str, Any]] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)


def chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def enrolled_row(sample: PlannedSample, max_turns: int, set_hash: str) -> BatchSample:
    """The ``batch_samples`` row of a planned sample."""
    return BatchSample(
        sample_key=sample.key,
        model=sample.model.name,
        model_config=sample.model.model_dump_json(),
        source_id=sample.revision.source_id,
        spec_sha=sample.revision.sha,
        set_hash=set_hash,
        scenario_id=sample.scenario.id,
        scenario_hash=sample.scenario_hash,
        condition=sample.condition,
        epoch=sample.epoch,
        max_turns=max_turns,
    )


class WaveEngine:
    """Builds waves and reads their answers back, for one run (or one import)."""

    def __init__(
        self,
        store: Store,
        heldout: HeldoutSet,
        *,
        run: RunConfig,
        scrub: Scrubber,
        run_id: str | None,
    ) -> None:
        self.store = store
        self.heldout = heldout
        self.run = run
        self.scrub = scrub
        self.run_id = run_id
        self.abandoned: dict[str, str] = {}
        self._answered_models: set[str] = set()
        self._refusals: dict[str, int] = {}
        self._models: dict[str, ModelConfig] = {}
        self._revisions: dict[tuple[str, str], SpecRevision] = {}
        self._scenarios: dict[str, Scenario] = {s.id: s for s in heldout.scenarios}

    # -- enrolling and rebuilding samples -------------------------------------------------------

    def enroll(self, plan: RunPlan) -> None:
        """Enroll the plan's pending samples (idempotent; see :func:`rows.enroll`)."""
        for chunk in chunks(plan.pending, 20_000):
            with self.store.transaction():
                rows.enroll(
                    self.store, [enrolled_row(s, plan.max_turns, plan.set_hash) for s in chunk]
                )

    def planned(self, row: BatchSample) -> PlannedSample:
        """The planned sample an enrolled row stands for."""
        model = self._models.get(row.model_config)
        if model is None:
            model = ModelConfig.model_validate_json(row.model_config)
            self._models[row.model_config] = model
        return PlannedSample(
            key=row.sample_key,
            model=model,
            revision=self._revision(row.source_id, row.spec_sha),
            scenario=self._scenario(row.scenario_id, row.scenario_hash),
            scenario_hash=row.scenario_hash,
            condition=row.condition,
            epoch=row.epoch,
            params_hash=params_hash(model),
        )

    def _revision(self, source_id: str, sha: str) -> SpecRevision:
        found = self._revisions.get((source_id, sha))
        if found is None:
            from audit.spec_history import revision_at

            found = revision_at(self.store, source_id, sha)
            if found is None:
                raise AuditError(
                    f"spec revision {sha[:12]} of source {source_id!r}, which batch samples were "
                    "enrolled for, is no longer in the database: sync the spec source again"
                )
            self._revisions[(source_id, sha)] = found
        return found

    def _scenario(self, scenario_id: str, scenario_hash: str) -> Scenario:
        scenario = self._scenarios.get(scenario_id)
        if scenario is None or self.heldout.scenario_hashes[scenario_id] != scenario_hash:
            raise AuditError(
                f"scenario {scenario_id!r} is not in the held-out set as it was when its batch "
                "samples were enrolled: finish the sweep with that set, or cancel its batches "
                "(audit batch cancel --all) and run the new set"
            )
        return scenario

    def conversations(self, enrolled: Mapping[str, BatchSample]) -> dict[str, ConversationState]:
        """Each sample's conversation, rebuilt from its stored answers."""
        answers = rows.answers(self.store, list(enrolled))
        states: dict[str, ConversationState] = {}
        for key, row in enrolled.items():
            state = ConversationState.open(self.planned(row))
            for text in answers.get(key, ()):
                state.apply(parse_completion(text.encode("utf-8")), row.max_turns)
            states[key] = state
        return states

    # -- building waves -------------------------------------------------------------------------

    def build(
        self,
        keys: Sequence[str],
        *,
        wave: int,
        via: str,
        folder: Path,
        limits: BatchConfig,
        endpoint: Callable[[ModelConfig], str | None],
    ) -> list[BuiltPart]:
        """Write the next request of every sample in ``keys`` (ready samples) and record them.

        Files hold one model and endpoint each; lines are in sample-key order, so a file can be
        rebuilt byte for byte from the database (:meth:`rebuild`).
        """
        cutter = FileCutter(folder, f"specdrift-wave{wave}", limits.max_requests, limits.max_bytes)
        key_envs: dict[str, str] = {}
        try:
            for chunk in chunks(sorted(keys), CHUNK):
                enrolled = rows.samples(self.store, chunk)
                states = self.conversations(enrolled)
                for key in chunk:
                    state = states[key]
                    turn = state.result.turns
                    model = state.sample.model
                    key_envs[model.name] = model.api_key_env
                    cutter.add(
                        model.name,
                        endpoint(model),
                        custom_id(key, turn, wave),
                        key,
                        turn,
                        state.body(),
                    )
        finally:
            files = cutter.close()
        status = "built" if via == "api" else "exported"
        built = [
            BuiltPart(self._part(file, wave, via, status, key_envs[file.model]), file.path)
            for file in files
        ]
        requests = [
            BatchRequest(request_id, file.part_id, wave, sample_key, turn)
            for file in files
            for request_id, sample_key, turn in zip(
                file.request_ids, file.sample_keys, file.turns, strict=True
            )
        ]
        with self.store.transaction():
            rows.add_parts(self.store, [b.part for b in built], requests)
        return built

    def _part(self, file: WrittenFile, wave: int, via: str, status: str, key_env: str) -> BatchPart:
        return BatchPart(
            part_id=file.part_id,
            wave=wave,
            via=via,
            model=file.model,
            requests=len(file.request_ids),
            bytes=file.n_bytes,
            input_hash=file.input_hash,
            status=status,
            base_url=file.endpoint,
            api_key_env=key_env if via == "api" else None,
            run_id=self.run_id,
            submitted_at=rows.now() if via == "export" else None,
        )

    def rebuild(self, part: BatchPart, path: Path) -> int:
        """Write a part's unanswered lines again from the database; returns how many.

        A part none of whose lines is answered yet (one built but never submitted) must hash as
        the file did when it was built: otherwise the requests would silently differ from the
        ones recorded (the spec text or the held-out set changed in between).
        """
        pending = rows.requests_of_part(self.store, part.part_id, state="pending")
        digest = hashlib.sha256()
        with path.open("wb") as handle:
            for chunk in chunks(pending, CHUNK):
                enrolled = rows.samples(self.store, [r.sample_key for r in chunk])
                states = self.conversations(enrolled)
                for request in chunk:
                    state = states[request.sample_key]
                    if state.result.turns != request.turn:
                        raise AuditError(
                            f"request {request.custom_id} asks for turn {request.turn} but its "
                            f"sample has {state.result.turns} answered: cancel part "
                            f"{part.part_id} (audit batch cancel {part.part_id})"
                        )
                    line = request_line(request.custom_id, state.body())
                    handle.write(line)
                    digest.update(line)
        complete = len(pending) == part.requests
        if complete and "sha256:" + digest.hexdigest() != part.input_hash:
            raise AuditError(
                f"the rebuilt request file of part {part.part_id} differs from the one built "
                "(the spec text or the held-out set changed since): cancel it "
                f"(audit batch cancel {part.part_id}) and run the sweep again"
            )
        return len(pending)

    # -- reading answers back -------------------------------------------------------------------

    def ingest(
        self,
        lines: Iterable[tuple[str, str]],
        *,
        strict: bool,
        commit_each_chunk: bool,
    ) -> IngestCounts:
        """Apply output lines, given as (where, text); returns the counts.

        ``strict`` refuses a line whose custom_id this database never sent (an import of the
        wrong file); otherwise such lines are counted and left alone. ``commit_each_chunk``
        commits every chunk (a sweep, which re-reads the rest after a crash); without it the
        caller holds one transaction for everything (an import: all of a file, or nothing).
        """
        counts = IngestCounts()
        for chunk in chunks(lines, CHUNK):
            parsed = [
                parse_output_line(self.scrub(text), where) for where, text in chunk if text.strip()
            ]
            if commit_each_chunk:
                with self.store.transaction():
                    counts.add(self._ingest_chunk(parsed, chunk, strict))
            else:
                counts.add(self._ingest_chunk(parsed, chunk, strict))
        return counts

    def _ingest_chunk(
        self, parsed: list[OutputLine], raw: list[tuple[str, str]], strict: bool
    ) -> IngestCounts:
        counts = IngestCounts(lines=len(parsed))
        known = rows.requests(self.store, [line.custom_id for line in parsed])
        fresh: dict[str, tuple[OutputLine, BatchRequest]] = {}
        wheres = [where for where, text in raw if text.strip()]
        for where, line in zip(wheres, parsed, strict=True):
            request = known.get(line.custom_id)
            if request is None:
                if strict:
                    raise AuditError(
                        f"{where}: custom_id {line.custom_id!r} is not a request this database "
                        "sent: import the outputs of files exported from this database"
                    )
                counts.unknown += 1
            elif request.state != "pending" or line.custom_id in fresh:
                counts.skipped += 1
            else:
                fresh[line.custom_id] = (line, request)
        enrolled = rows.samples(self.store, [r.sample_key for _, r in fresh.values()])
        states = self.conversations(enrolled)
        writes = _Batch()
        for line, request in fresh.values():
            row = enrolled[request.sample_key]
            state = states[request.sample_key]
            if state.result.turns != request.turn:
                writes.outcomes.append(RequestOutcome(request.custom_id, "superseded"))
                counts.skipped += 1
                continue
            self._apply(line, request, row, state, writes, counts)
        self._write(writes)
        return counts

    def _apply(
        self,
        line: OutputLine,
        request: BatchRequest,
        row: BatchSample,
        state: ConversationState,
        writes: _Batch,
        counts: IngestCounts,
    ) -> None:
        error: CallError | None = None
        if line.ok:
            assert line.body is not None
            text = dumps_compact(line.body)
            try:
                response = parse_completion(text.encode("utf-8"))
                check_completion(response)
            except (MalformedResponse, pydantic.ValidationError, json.JSONDecodeError) as exc:
                error = CallError("malformed_response", f"malformed response: {exc}", True)
            else:
                counts.answered += 1
                self._answered_models.add(row.model)
                state.apply(response, row.max_turns)
                if state.finished:
                    writes.samples.append(self._sample_row(state, row))
                    writes.outcomes.append(RequestOutcome(request.custom_id, "answered"))
                    writes.progress.append(SampleProgress(row.sample_key, "stored", 0))
                    counts.stored += 1
                else:
                    writes.outcomes.append(
                        RequestOutcome(request.custom_id, "answered", response=text)
                    )
                    writes.progress.append(SampleProgress(row.sample_key, "active", 0))
                    counts.continuing += 1
                return
        self._fail(request, row, error or line_error(line), writes, counts)

    def _fail(
        self,
        request: BatchRequest,
        row: BatchSample,
        error: CallError,
        writes: _Batch,
        counts: IngestCounts,
    ) -> None:
        """Count a failed request against its sample; give the sample up when it is spent."""
        counts.errors += 1
        message = self.scrub(error.message)
        state = {"cancelled": "cancelled", "expired": "expired"}.get(error.kind, "failed")
        writes.outcomes.append(
            RequestOutcome(request.custom_id, state, error_kind=error.kind, error=message)
        )
        # A cancellation is the user's doing, not the engine's: it costs no retry.
        failures = row.failures + (0 if error.kind == "cancelled" else 1)
        if error.retryable and failures <= self.run.max_retries:
            writes.progress.append(SampleProgress(row.sample_key, "active", failures))
            counts.continuing += 1
            return
        if not error.retryable:
            self._note_refusal(row.model, message)
        writes.progress.append(SampleProgress(row.sample_key, "failed", failures))
        writes.failures.append(self._failure_row(row, error.kind, message, max(failures, 1)))
        counts.failed += 1

    def _note_refusal(self, model: str, message: str) -> None:
        if model in self._answered_models:
            return
        self._refusals[model] = self._refusals.get(model, 0) + 1
        if self._refusals[model] >= ABANDON_AFTER_REFUSALS:
            self.abandoned.setdefault(model, message)

    def close_part(self, part: BatchPart, error: CallError) -> IngestCounts:
        """Fail every request of a finished part that got no line back (the batch expired,
        failed or was cancelled, or its output left lines out); the caller holds the
        transaction."""
        counts = IngestCounts()
        pending = rows.requests_of_part(self.store, part.part_id, state="pending")
        for chunk in chunks(pending, CHUNK):
            enrolled = rows.samples(self.store, [r.sample_key for r in chunk])
            writes = _Batch()
            for request in chunk:
                self._fail(request, enrolled[request.sample_key], error, writes, counts)
            self._write(writes)
        return counts

    def _write(self, writes: _Batch) -> None:
        rows.write_outcomes(self.store, writes.outcomes)
        rows.write_progress(self.store, writes.progress)
        if writes.samples:
            self.store.insert_rows("samples", writes.samples, on_conflict="ignore")
            rows.drop_answers(self.store, [s["sample_key"] for s in writes.samples])
        if writes.failures:
            self.store.insert_rows("sample_failures", writes.failures, on_conflict="ignore")

    def _sample_row(self, state: ConversationState, row: BatchSample) -> dict[str, Any]:
        from audit.runner import sample_row

        stored = sample_row(state.sample, state.result, self._run_id(), row.set_hash)
        stored["latency_ms"] = None  # a batch has no per-request latency
        return stored

    def _failure_row(
        self, row: BatchSample, kind: str, message: str, attempts: int
    ) -> dict[str, Any]:
        return SampleFailureRow(
            sample_key=row.sample_key,
            run_id=self._run_id(),
            model=row.model,
            spec_sha=row.spec_sha,
            scenario_id=row.scenario_id,
            condition=row.condition,
            epoch=row.epoch,
            error_kind=kind,
            error=message,
            attempts=attempts,
        ).as_row()

    def _run_id(self) -> str:
        if self.run_id is None:
            raise RuntimeError("reading answers back needs a run id")
        return self.run_id


def line_error(line: OutputLine) -> CallError:
    """How the retry rules treat an error line."""
    message = line.error_message or "no answer and no error message"
    if line.status_code is not None and line.status_code != 200:
        return status_error(line.status_code, message)
    if line.error_code == "batch_expired":
        return CallError("expired", f"batch expired before answering: {message}", True)
    if line.error_code == "batch_cancelled":
        return CallError("cancelled", f"batch cancelled: {message}", True)
    if line.status_code == 200:
        return CallError("malformed_response", f"malformed response: {message}", True)
    return CallError("other", message, True)
