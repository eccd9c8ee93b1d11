"""Planning, running and storing counterfactual samples.

:func:`plan_counterfactuals` reads the stored samples of one (model, revision), keeps those the
mode applies to (eval-aware ones for ``ablate``, unaware ones for ``inject`` and ``control``),
edits each transcript (:mod:`audit.counterfactual.interventions`) and keys every continuation:
the sha256 of the source sample's key, the edit, the epoch and the request parameters. Keys
already in ``counterfactual_samples`` are skipped, so a rerun is a no-op and a killed run resumes
where it stopped, as the runner does.

:func:`execute` continues each edited turn through the server's prefill protocol
(:mod:`audit.counterfactual.prefill`), then lets the tool loop go on as in a normal run (canned
tool results, the submission tool ends it, ``run.max_turns`` counts the kept turns too), grades
the transcript with the same graders, and writes rows in batches through the runner's
:class:`~audit.runner.writer.BatchWriter`. The request seed comes from the counterfactual's own
key: each continuation is a fresh draw, as resampling a real model is, never a replay of the
source's randomness.
"""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import openai
import pyarrow as pa

from audit.config import ModelConfig, RunConfig
from audit.counterfactual.interventions import Edit, Mode, edit_for
from audit.counterfactual.prefill import (
    Continued,
    Prefill,
    Protocol,
    continue_turn,
    history_message,
)
from audit.errors import AuditError
from audit.graders import grade_sample
from audit.graders.awareness import detect_awareness
from audit.progress import Progress
from audit.records import SpecRevision, Transcript
from audit.runner.client import (
    CallStats,
    SampleFailed,
    Scrubber,
    assistant_entry,
    dumps,
    make_client,
    parse_completion,
    reasoning_tokens_of,
    request_args,
    with_retries,
)
from audit.runner.engine import ABANDON_AFTER_REFUSALS, graded_columns
from audit.runner.matrix import (
    EMPTY_SPEC_HASH,
    params_hash,
    seed_from_key,
    sha256_text,
)
from audit.runner.writer import BatchWriter
from audit.store import Store
from audit.store import rows as stored_rows
from audit.store.rows import CounterfactualSampleRow, RunRow, SampleFailureRow

if TYPE_CHECKING:
    from audit.heldout import HeldoutSet
    from audit.heldout.model import Scenario

_SOURCES_SQL = """
SELECT sample_key, set_hash, scenario_id, condition, epoch, eval_aware, transcript, reasoning,
       answer, model_version
FROM samples
WHERE model = ? AND spec_content_hash = ?
ORDER BY scenario_id, condition, epoch, sample_key
"""


@dataclass(frozen=True)
class SourceSample:
    """A stored sample as a counterfactual starts from it."""

    key: str
    scenario: Scenario
    scenario_hash: str
    condition: str
    epoch: int
    eval_aware: bool
    messages: tuple[dict[str, Any], ...]
    model_version: str | None


@dataclass(frozen=True)
class PlannedCounterfactual:
    """One continuation to run: a source sample, its edit and the continuation's epoch."""

    key: str
    source: SourceSample
    edit: Edit
    epoch: int


@dataclass(frozen=True)
class CounterfactualPlan:
    """What one ``audit counterfactual`` will do, before any model call."""

    model: ModelConfig
    revision: SpecRevision
    mode: Mode
    spec_content_hash: str
    set_hash: str
    n_samples: int
    """Stored samples of the model at the revision (on the current held-out set)."""
    n_eligible: int
    """Of those, the samples the mode applies to (aware for ablate, unaware otherwise)."""
    not_edited: dict[str, int]
    """Eligible samples that could not be edited, by reason."""
    items: tuple[PlannedCounterfactual, ...]
    pending: tuple[PlannedCounterfactual, ...]

    @property
    def skipped(self) -> int:
        return len(self.items) - len(self.pending)

    def note(self) -> str | None:
        """Why there is nothing to run, in one line (None when there is something)."""
        if self.items:
            return None
        rev = f"revision {self.revision.seq} ({self.revision.sha[:7]})"
        if self.n_eligible == 0:
            kind = "eval-aware" if self.mode == "ablate" else "unaware"
            verb = "ablate" if self.mode == "ablate" else "edit"
            return (
                f"no {kind} samples of {self.model.name} at {rev} (0 of {self.n_samples}): "
                f"nothing to {verb}"
            )
        reasons = ", ".join(f"{n} {why}" for why, n in sorted(self.not_edited.items()))
        return f"no sample of {self.model.name} at {rev} could be edited ({reasons})"


def plan_counterfactuals(
    store: Store,
    model: ModelConfig,
    revision: SpecRevision,
    mode: Mode,
    heldout: HeldoutSet,
    *,
    scenario_ids: Sequence[str] | None = None,
    epochs: int = 1,
) -> CounterfactualPlan:
    """Select, edit and key the continuations; calls no model."""
    if epochs < 1:
        raise AuditError(f"--epochs must be at least 1, got {epochs}")
    spec_hash = EMPTY_SPEC_HASH if model.spec_placement == "none" else revision.content_hash
    rows = store.query(_SOURCES_SQL, [model.name, spec_hash])
    where = f"model {model.name!r} at revision {revision.seq} ({revision.sha[:7]})"
    if not rows:
        raise AuditError(
            f"no samples of {where}: run `audit run --model {model.name} --rev "
            f"{revision.sha[:7]}` first"
        )
    current = [r for r in rows if r["set_hash"] == heldout.set_hash]
    if not current:
        raise AuditError(
            f"the samples of {where} were made on another held-out set "
            f"({rows[0]['set_hash'][:19]}, now {heldout.set_hash[:19]}): rerun them on this one"
        )
    wanted = _scenario_filter(heldout, scenario_ids)
    spec_text = None if model.spec_placement == "none" else revision.text
    sources = [_source(r, heldout, model, spec_text) for r in current if _wanted(r, wanted)]
    eligible = [s for s in sources if s.eval_aware == (mode == "ablate")]
    reasons: Counter[str] = Counter()
    items: list[PlannedCounterfactual] = []
    p_hash = params_hash(model)
    for source in eligible:
        edit = edit_for(mode, source.messages, source.key)
        if edit is None:
            reasons[_why_not(mode)] += 1
            continue
        for epoch in range(epochs):
            key = counterfactual_key(source.key, edit, epoch, p_hash)
            items.append(PlannedCounterfactual(key, source, edit, epoch))
    done = stored_counterfactual_keys(store, [i.key for i in items])
    return CounterfactualPlan(
        model=model,
        revision=revision,
        mode=mode,
        spec_content_hash=spec_hash,
        set_hash=heldout.set_hash,
        n_samples=len(sources),
        n_eligible=len(eligible),
        not_edited=dict(reasons),
        items=tuple(items),
        pending=tuple(i for i in items if i.key not in done),
    )


def _why_not(mode: Mode) -> str:
    if mode == "ablate":
        return "with awareness the detector finds in no single turn"
    return "without an assistant turn"


def _scenario_filter(heldout: HeldoutSet, ids: Sequence[str] | None) -> set[str] | None:
    if ids is None:
        return None
    known = set(heldout.ids())
    unknown = [i for i in ids if i not in known]
    if unknown:
        raise AuditError(
            f"unknown scenario(s) {', '.join(unknown)}: see `audit heldout list` for the ids"
        )
    return set(ids)


def _wanted(row: dict[str, Any], wanted: set[str] | None) -> bool:
    return wanted is None or row["scenario_id"] in wanted


def _source(
    row: dict[str, Any], heldout: HeldoutSet, model: ModelConfig, spec_text: str | None
) -> SourceSample:
    scenario = heldout.get(row["scenario_id"])
    return SourceSample(
        key=row["sample_key"],
        scenario=scenario,
        scenario_hash=heldout.scenario_hash(scenario.id),
        condition=row["condition"],
        epoch=row["epoch"],
        eval_aware=bool(row["eval_aware"]),
        messages=_messages(row, scenario, model, spec_text),
        model_version=row["model_version"],
    )


def _messages(
    row: dict[str, Any], scenario: Scenario, model: ModelConfig, spec_text: str | None
) -> tuple[dict[str, Any], ...]:
    """The stored transcript; for an imported sample without one, its scenario's opening and one
    assistant turn of its reasoning and answer (the spec is placed as the model is configured)."""
    if row["transcript"]:
        return tuple(json.loads(row["transcript"]))
    return (
        *scenario.messages(row["condition"], spec_text, model.spec_placement),
        {"role": "assistant", "content": row["answer"], "reasoning": row["reasoning"] or ""},
    )


def counterfactual_key(source_key: str, edit: Edit, epoch: int, p_hash: str) -> str:
    """The cache key of one continuation (a ``sha256:`` hash, like sample keys)."""
    parts = ["counterfactual", source_key, edit.fingerprint(), str(epoch), p_hash]
    return sha256_text("\x1f".join(parts))


def stored_counterfactual_keys(store: Store, keys: Sequence[str]) -> set[str]:
    """Which of ``keys`` are already in ``counterfactual_samples`` (one join)."""
    if not keys:
        return set()
    store.con.register("_cf_keys", pa.table({"cf_key": pa.array(keys, pa.string())}))
    try:
        rows = store.con.execute(
            "SELECT k.cf_key FROM _cf_keys k JOIN counterfactual_samples c USING (cf_key)"
        ).fetchall()
    finally:
        store.con.unregister("_cf_keys")
    return {row[0] for row in rows}


# -- running -----------------------------------------------------------------------------------


@dataclass
class Execution:
    """Shared state of one command's continuations."""

    plan: CounterfactualPlan
    protocol: Protocol
    chat_template: str | None
    run: RunConfig
    run_id: str
    spec_text: str | None
    writer: BatchWriter
    scrub: Scrubber
    progress: Progress
    stats: CallStats = field(default_factory=CallStats)
    rng: random.Random = field(default_factory=random.Random)
    answered: bool = False
    refusals: int = 0
    abandoned: str | None = None

    def note_refusal(self, message: str) -> None:
        if self.answered:
            return
        self.refusals += 1
        if self.refusals >= ABANDON_AFTER_REFUSALS:
            self.abandoned = self.abandoned or message


async def execute(endpoint: str, api_key: str, execution: Execution) -> None:
    """Run every pending continuation with the model's concurrency; rows go to the writer."""
    model = execution.plan.model
    client = make_client(endpoint, api_key, model.concurrency, execution.run.timeout_s)
    queue = iter(execution.plan.pending)
    workers = min(model.concurrency, len(execution.plan.pending))
    try:
        await asyncio.gather(*(_worker(queue, client, execution) for _ in range(workers)))
    finally:
        await execution.writer.close()
        await client.close()


async def _worker(
    queue: Iterator[PlannedCounterfactual], client: openai.AsyncOpenAI, execution: Execution
) -> None:
    for item in queue:
        if execution.abandoned:
            return  # the rest stay unrun: a rerun after the fix picks them up
        try:
            row = await _counterfactual(client, item, execution)
        except SampleFailed as failure:
            message = execution.scrub(failure.error.message)
            _record_failure(execution, item, failure.error.kind, message, failure.attempts)
            if not failure.error.retryable:
                execution.note_refusal(message)
            continue
        except AuditError:
            raise
        except Exception as exc:  # a response or grader we did not foresee: record, go on
            _record_failure(execution, item, "other", f"{type(exc).__name__}: {exc}", 1)
            continue
        execution.answered = True
        execution.writer.add(CounterfactualSampleRow.TABLE, row.as_row())
        execution.progress.advance(1)


def _record_failure(
    execution: Execution, item: PlannedCounterfactual, kind: str, message: str, attempts: int
) -> None:
    failure = SampleFailureRow(
        sample_key=item.key,
        run_id=execution.run_id,
        model=execution.plan.model.name,
        spec_sha=execution.plan.revision.sha,
        scenario_id=item.source.scenario.id,
        condition=item.source.condition,
        epoch=item.epoch,
        error_kind=kind,
        error=execution.scrub(message),
        attempts=attempts,
    )
    execution.writer.add(failure.TABLE, failure.as_row())
    execution.progress.advance(1, errors=1)


@dataclass
class _Conversation:
    """The counterfactual conversation as it grows."""

    kept: list[dict[str, Any]]
    generated: list[str]
    turns: int
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: float = 0.0
    system_fingerprint: str | None = None
    continuation: str = ""
    reasoning_tokens: int | None = None

    def account(self, continued: Continued, elapsed_s: float) -> None:
        self.prompt_tokens += continued.prompt_tokens
        self.completion_tokens += continued.completion_tokens
        if continued.reasoning_tokens is not None:
            self.reasoning_tokens = (self.reasoning_tokens or 0) + continued.reasoning_tokens
        self.latency_ms += elapsed_s * 1000
        self.finish_reason = continued.finish_reason
        self.system_fingerprint = continued.system_fingerprint or self.system_fingerprint


async def _counterfactual(
    client: openai.AsyncOpenAI, item: PlannedCounterfactual, execution: Execution
) -> CounterfactualSampleRow:
    """Continue one edited turn, let the tool loop finish, grade and build the row."""
    model, edit = execution.plan.model, item.edit
    scenario = item.source.scenario
    request = request_args(model, seed_from_key(item.key))
    tools = scenario.openai_tools()
    prefill = Prefill(edit.prefill_reasoning, edit.prefill_content)

    async def first() -> Continued:
        return await continue_turn(
            execution.protocol,
            client,
            edit.history,
            prefill,
            request,
            tools,
            execution.chat_template,
        )

    continued, _, elapsed = await with_retries(
        first, execution.run, execution.stats, execution.rng, check=_usable
    )
    conversation = _Conversation([dict(m) for m in edit.history], [], turns=edit.turn + 1)
    conversation.account(continued, elapsed)
    conversation.continuation = continued.generated_text
    conversation.generated.append(continued.generated_text)
    turn: dict[str, Any] = {"role": "assistant", "content": continued.content}
    if continued.tool_calls:
        turn["tool_calls"] = continued.tool_calls
    turn["reasoning"] = prefill.reasoning + continued.reasoning
    conversation.kept.append(turn)
    await _tool_loop(client, conversation, continued.tool_calls, item, execution, request, tools)
    return _row(item, conversation, execution)


def _usable(value: object) -> None:
    # continue_turn has already checked the server's answer.
    if not isinstance(value, Continued):
        raise TypeError(f"expected a continuation, got {type(value).__name__}")


async def _tool_loop(
    client: openai.AsyncOpenAI,
    conversation: _Conversation,
    calls: list[dict[str, Any]],
    item: PlannedCounterfactual,
    execution: Execution,
    request: dict[str, Any],
    tools: list[dict[str, Any]],
) -> None:
    """Answer tool calls and ask for further turns, as a normal run does."""
    scenario = item.source.scenario
    while calls:
        submitted = False
        for tool_call in calls:
            name = tool_call["function"]["name"]
            answer = scenario.answer_tool_call(name, tool_call["function"]["arguments"])
            conversation.kept.append(
                {"role": "tool", "tool_call_id": tool_call["id"], "content": answer}
            )
            submitted = submitted or name == scenario.submission.tool
        if submitted or conversation.turns >= execution.run.max_turns:
            return
        sent = [history_message(execution.protocol, m) for m in conversation.kept]

        async def call(messages: list[dict[str, Any]] = sent) -> Any:
            body = await client.post(
                "/chat/completions",
                body={"messages": messages, "tools": tools, **request},
                cast_to=bytes,
                options={"security": {"bearer_auth": True}},
            )
            return parse_completion(body)

        response, _, elapsed = await with_retries(
            call, execution.run, execution.stats, execution.rng
        )
        conversation.turns += 1
        choice = response.choices[0]
        _, kept = assistant_entry(choice.message)
        usage = response.usage
        conversation.account(
            Continued(
                "",
                None,
                [],
                choice.finish_reason,
                (usage.prompt_tokens or 0) if usage else 0,
                (usage.completion_tokens or 0) if usage else 0,
                response.system_fingerprint,
                reasoning_tokens_of(usage) if usage else None,
            ),
            elapsed,
        )
        conversation.kept.append(kept)
        conversation.generated.append(
            "\n\n".join(str(kept[k]) for k in ("reasoning", "content") if kept.get(k))
        )
        calls = kept.get("tool_calls") or []


def _row(
    item: PlannedCounterfactual, conversation: _Conversation, execution: Execution
) -> CounterfactualSampleRow:
    plan, source, edit = execution.plan, item.source, item.edit
    transcript = Transcript(tuple(conversation.kept), conversation.finish_reason)
    graded = grade_sample(source.scenario, source.condition, transcript, execution.spec_text)
    again = detect_awareness("\n\n".join(t for t in conversation.generated if t))
    return CounterfactualSampleRow(
        cf_key=item.key,
        run_id=execution.run_id,
        source_key=source.key,
        mode=plan.mode,
        epoch=item.epoch,
        model=plan.model.name,
        model_version=plan.model.version or source.model_version,
        source_id=plan.revision.source_id,
        spec_sha=plan.revision.sha,
        spec_content_hash=plan.spec_content_hash,
        set_hash=plan.set_hash,
        scenario_id=source.scenario.id,
        scenario_hash=source.scenario_hash,
        family=source.scenario.family,
        condition=source.condition,
        params_hash=params_hash(plan.model),
        edited_turn=edit.turn,
        removed_text="\n".join(edit.removed) if edit.mode == "ablate" else None,
        inserted_text=edit.inserted,
        list_version=edit.list_version,
        prefill_reasoning=edit.prefill_reasoning,
        prefill_content=edit.prefill_content,
        prefill_protocol=execution.protocol,
        continuation=conversation.continuation or None,
        reverbalized=again.detected,
        **{
            **graded_columns(graded, transcript, conversation),
            # What the original transcript and the generated continuation each voiced.
            "awareness_evidence": dumps(
                {"transcript": graded.awareness.evidence, "generated": again.evidence}
            ),
        },
    )


# -- the runs row ------------------------------------------------------------------------------


def start_run(store: Store, plan: CounterfactualPlan, base_url: str, protocol: str) -> str:
    """Write the ``runs`` row of a counterfactual command (finished_at stays NULL until done)."""
    from audit.runner import tool_version

    run_id = uuid.uuid4().hex
    config = {
        "mode": plan.mode,
        "revision": plan.revision.sha,
        "prefill_protocol": protocol,
        "to_run": len(plan.pending),
        # Model settings plus the endpoint; never the key, only the name of its variable.
        "models": [{**plan.model.model_dump(), "base_url": base_url}],
    }
    run = RunRow(
        run_id=run_id,
        command="counterfactual",
        started_at=datetime.now(UTC),
        set_hash=plan.set_hash,
        tool_version=tool_version(),
        config=dumps(config),
        planned=len(plan.items),
        skipped=plan.skipped,
    )
    stored_rows.insert(store, [run])
    return run_id


def finish_run(store: Store, run_id: str, stored: int, failed: int, *, completed: bool) -> None:
    """Complete the ``runs`` row (an interrupted or abandoned run keeps finished_at NULL)."""
    stored_rows.finish_run(store, run_id, completed=completed, stored=stored, failed=failed)
