"""Typed rows of the tables specdrift writes, and the writes that change stored rows.

One frozen record per table, its fields the table's columns (a test checks them against a fresh
store's ``information_schema``), so a row is built in one place whichever stage writes it: the
runner, the batch runner, the importer, the counterfactual runner and analysis all make a
:class:`SampleRow` the same way. The batch tables' records live in :mod:`audit.store.batches`.

Statements that change or delete stored rows live here too (finishing a run, replacing a
detection pass's results, a set's registration), so the rules for what a rerun replaces are
in one module. Callers choose the transaction.

A record's columns with a database default (the time a row was written) are left out of the
insert when None, so the database fills them in.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from operator import attrgetter
from typing import TYPE_CHECKING, Any, ClassVar

from audit.records import (
    ALL_SCENARIOS,
    CauseName,
    ComparisonKind,
    Finding,
    FindingKind,
    Outcome,
    TestedOn,
)

if TYPE_CHECKING:
    from audit.store import Store

OnConflict = str  # "error", "ignore" or "replace" (see Store.insert_rows)


class Row:
    """Base of the typed rows: ``TABLE`` is the table; ``DEFAULTED`` the columns the database
    fills in (with the time of the write) when the record leaves them None."""

    __slots__ = ()
    TABLE: ClassVar[str]
    DEFAULTED: ClassVar[tuple[str, ...]] = ()

    def as_row(self) -> dict[str, Any]:
        """The record as a dict of column values (defaulted columns left out when None).

        Tuples (the records' lists, kept immutable) go out as lists: DuckDB reads a Python
        tuple as a STRUCT.
        """
        names, values, listed = _layout(type(self))
        row = dict(zip(names, values(self), strict=True))
        for name in listed:
            value = row[name]
            if value is not None:
                row[name] = list(value)
        for name in self.DEFAULTED:
            if row[name] is None:
                del row[name]
        return row


def column_names(record: type[Row]) -> tuple[str, ...]:
    """The columns a record type has, in its field order."""
    return _layout(record)[0]


_Layout = tuple[tuple[str, ...], Callable[[Row], tuple[Any, ...]], tuple[str, ...]]
_LAYOUTS: dict[type[Row], _Layout] = {}


def _layout(record: type[Row]) -> _Layout:
    """A record type's columns, a getter of all their values at once (a row is built for every
    stored sample: an import of 2,000,000 lines builds 2,000,000), and its list columns."""
    known = _LAYOUTS.get(record)
    if known is not None:
        return known
    record_fields = fields(record)  # type: ignore[arg-type]  # every Row subclass is a dataclass
    names = tuple(f.name for f in record_fields)
    listed = tuple(f.name for f in record_fields if str(f.type).startswith("tuple"))
    layout = _LAYOUTS[record] = (names, attrgetter(*names), listed)
    return layout


def insert(store: Store, rows: Sequence[Row], *, on_conflict: OnConflict = "error") -> int:
    """Insert records of one table; returns how many were given.

    Every row of a batch has the same columns: where some rows leave a defaulted column None
    and others do not, the None ones get the time of this write.
    """
    if not rows:
        return 0
    table = rows[0].TABLE
    if any(table != r.TABLE for r in rows):
        raise ValueError(f"rows of several tables in one insert ({table} and others)")
    dicts = [r.as_row() for r in rows]
    defaulted = [n for n in rows[0].DEFAULTED if any(n in d for d in dicts)]
    if defaulted:
        now = datetime.now(UTC)
        for row in dicts:
            for name in defaulted:
                row.setdefault(name, now)
    return store.insert_rows(table, dicts, on_conflict=on_conflict)


def insert_grouped(store: Store, rows: Iterable[Row], *, on_conflict: OnConflict) -> dict[str, int]:
    """Insert records of any tables, one batch per table; returns rows given per table."""
    by_table: dict[str, list[Row]] = {}
    for row in rows:
        by_table.setdefault(row.TABLE, []).append(row)
    return {t: insert(store, batch, on_conflict=on_conflict) for t, batch in by_table.items()}


# -- spec history --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SpecSourceRow(Row):
    """A ``spec_sources`` row: one tracked spec file."""

    TABLE: ClassVar[str] = "spec_sources"
    DEFAULTED: ClassVar[tuple[str, ...]] = ("created_at",)

    source_id: str
    repo: str
    path: str
    ref: str
    last_synced_at: datetime | None = None
    tip_sha: str | None = None
    created_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class SpecRevisionRow(Row):
    """A ``spec_revisions`` row (read back as :class:`audit.records.SpecRevision`)."""

    TABLE: ClassVar[str] = "spec_revisions"

    source_id: str
    sha: str
    seq: int
    parent_shas: tuple[str, ...]
    prev_sha: str | None
    author_name: str | None
    author_email: str | None
    authored_at: datetime | None
    committer_name: str | None
    committed_at: datetime | None
    message: str | None
    path: str
    content: str
    content_hash: str
    size_bytes: int


@dataclass(frozen=True, slots=True)
class SpecChangeRow(Row):
    """A ``spec_changes`` row: the line-level change of a revision."""

    TABLE: ClassVar[str] = "spec_changes"

    source_id: str
    sha: str
    prev_sha: str | None
    lines_added: int
    lines_removed: int
    unified_diff: str


@dataclass(frozen=True, slots=True)
class SpecClauseChangeRow(Row):
    """A ``spec_clause_changes`` row (an :class:`audit.spec_history.ClauseChange` in place)."""

    TABLE: ClassVar[str] = "spec_clause_changes"

    source_id: str
    sha: str
    prev_sha: str | None
    ordinal: int
    change: str
    clause_kind: str
    section: str | None
    old_text: str | None
    new_text: str | None
    similarity: float | None


@dataclass(frozen=True, slots=True)
class SpecTagRow(Row):
    """A ``spec_tags`` row: a git tag and the spec revision in effect at its commit."""

    TABLE: ClassVar[str] = "spec_tags"

    source_id: str
    tag: str
    commit_sha: str
    sha: str


def save_spec_source(store: Store, source: SpecSourceRow, *, known: bool) -> None:
    """Record a finished sync of ``source`` (insert it, or update a ``known`` one)."""
    if not known:
        insert(store, [source])
        return
    store.con.execute(
        "UPDATE spec_sources SET repo = ?, path = ?, ref = ?, last_synced_at = ?, tip_sha = ? "
        "WHERE source_id = ?",
        [
            source.repo,
            source.path,
            source.ref,
            source.last_synced_at,
            source.tip_sha,
            source.source_id,
        ],
    )


def clear_spec_tags(store: Store, source_id: str) -> None:
    """Forget a source's tags (a sync stores the tags of its tip afresh)."""
    store.con.execute("DELETE FROM spec_tags WHERE source_id = ?", [source_id])


# -- held-out sets -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HeldoutSetRow(Row):
    """A ``heldout_sets`` row: one registered version of a held-out set."""

    TABLE: ClassVar[str] = "heldout_sets"
    DEFAULTED: ClassVar[tuple[str, ...]] = ("registered_at",)

    set_hash: str
    version: str
    canary: str
    n_scenarios: int
    name: str | None = None
    families_hash: str | None = None
    registered_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class ScenarioRow(Row):
    """A ``scenarios`` row: one scenario of a registered set (its text stays in the files)."""

    TABLE: ClassVar[str] = "scenarios"

    set_hash: str
    scenario_id: str
    family: str
    scenario_hash: str
    title: str
    conditions: tuple[str, ...]
    twin_of: str | None = None
    sealed: bool = False


@dataclass(frozen=True, slots=True)
class HeldoutFamilyRow(Row):
    """A ``heldout_families`` row: a family as the set declares it."""

    TABLE: ClassVar[str] = "heldout_families"

    set_hash: str
    family: str
    description: str
    scoring: str
    reference_condition: str | None = None
    incentive_condition: str | None = None


def register_set(
    store: Store,
    held_set: HeldoutSetRow,
    scenarios: Sequence[ScenarioRow],
    families: Sequence[HeldoutFamilyRow],
    *,
    version_wins: bool,
) -> None:
    """Register a held-out set (one transaction). A new one is inserted; one registered before
    keeps its rows (the hash pins its content) and gets the name and family declarations given
    now, and the version too when ``version_wins`` (a frozen version names the content)."""
    with store.transaction():
        insert(store, [held_set], on_conflict="ignore")
        if version_wins:
            store.con.execute(
                "UPDATE heldout_sets SET version = ? WHERE set_hash = ? AND version <> ?",
                [held_set.version, held_set.set_hash, held_set.version],
            )
        store.con.execute(
            "UPDATE heldout_sets SET name = ?, families_hash = ? WHERE set_hash = ?",
            [held_set.name, held_set.families_hash, held_set.set_hash],
        )
        insert(store, scenarios, on_conflict="ignore")
        if families:
            store.con.execute(
                "DELETE FROM heldout_families WHERE set_hash = ?", [held_set.set_hash]
            )
            insert(store, families)


# -- runs and samples ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RunRow(Row):
    """A ``runs`` row: one invocation of the runner (live, batch or counterfactual)."""

    TABLE: ClassVar[str] = "runs"

    run_id: str
    command: str
    started_at: datetime
    set_hash: str
    tool_version: str
    config: str
    planned: int | None = None
    skipped: int | None = None
    stored: int | None = None
    failed: int | None = None
    mode: str = "live"
    finished_at: datetime | None = None


def finish_run(store: Store, run_id: str, *, completed: bool, stored: int, failed: int) -> None:
    """Complete a run's row with its counts; an interrupted run keeps ``finished_at`` NULL, so
    it reads as interrupted."""
    store.con.execute(
        "UPDATE runs SET finished_at = ?, stored = ?, failed = ? WHERE run_id = ?",
        [datetime.now(UTC) if completed else None, stored, failed, run_id],
    )


@dataclass(frozen=True, slots=True)
class SampleRow(Row):
    """A ``samples`` row: one graded sample, from a run, a batch or an import."""

    TABLE: ClassVar[str] = "samples"
    DEFAULTED: ClassVar[tuple[str, ...]] = ("created_at",)

    sample_key: str
    run_id: str | None
    origin: str
    model: str
    model_version: str | None
    source_id: str | None
    spec_sha: str
    spec_content_hash: str
    set_hash: str
    scenario_id: str
    scenario_hash: str | None
    family: str | None
    condition: str
    epoch: int
    params_hash: str | None
    outcome: Outcome
    eval_aware: bool
    spec_cited: bool | None = None
    score: float | None = None
    grade_evidence: str | None = None
    awareness_evidence: str | None = None
    reasoning: str | None = None
    answer: str | None = None
    transcript: str | None = None
    turns: int | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    reasoning_tokens: int | None = None
    latency_ms: float | None = None
    finish_reason: str | None = None
    system_fingerprint: str | None = None
    created_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class SampleFailureRow(Row):
    """A ``sample_failures`` row: a sample that still failed after its retries."""

    TABLE: ClassVar[str] = "sample_failures"
    DEFAULTED: ClassVar[tuple[str, ...]] = ("failed_at",)

    sample_key: str
    run_id: str
    model: str
    spec_sha: str
    scenario_id: str
    condition: str
    epoch: int
    error_kind: str
    error: str
    attempts: int
    failed_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class CounterfactualSampleRow(Row):
    """A ``counterfactual_samples`` row: a stored sample continued from an edited prefix."""

    TABLE: ClassVar[str] = "counterfactual_samples"
    DEFAULTED: ClassVar[tuple[str, ...]] = ("created_at",)

    cf_key: str
    run_id: str | None
    source_key: str
    mode: str
    epoch: int
    model: str
    model_version: str | None
    source_id: str | None
    spec_sha: str
    spec_content_hash: str
    set_hash: str
    scenario_id: str
    scenario_hash: str | None
    family: str | None
    condition: str
    params_hash: str | None
    edited_turn: int
    removed_text: str | None
    inserted_text: str | None
    list_version: str | None
    prefill_reasoning: str
    prefill_content: str
    prefill_protocol: str
    continuation: str | None
    outcome: Outcome
    eval_aware: bool
    reverbalized: bool
    spec_cited: bool | None = None
    score: float | None = None
    grade_evidence: str | None = None
    awareness_evidence: str | None = None
    reasoning: str | None = None
    answer: str | None = None
    transcript: str | None = None
    turns: int | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    reasoning_tokens: int | None = None
    latency_ms: float | None = None
    finish_reason: str | None = None
    system_fingerprint: str | None = None
    created_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class JudgeGradeRow(Row):
    """A ``judge_grades`` row: an LLM judge's grade of a stored sample."""

    TABLE: ClassVar[str] = "judge_grades"
    DEFAULTED: ClassVar[tuple[str, ...]] = ("created_at",)

    sample_key: str
    grader: str
    judge_model: str
    rubric_hash: str
    outcome: str | None = None
    eval_aware: bool | None = None
    rationale: str | None = None
    created_at: datetime | None = None


# -- analysis ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EstimateRow(Row):
    """An ``estimates`` row: one metric of one model at one revision, with its interval."""

    TABLE: ClassVar[str] = "estimates"
    DEFAULTED: ClassVar[tuple[str, ...]] = ("computed_at",)

    model: str
    source_id: str
    sha: str
    metric: str
    scope: str
    scope_id: str
    value: float | None
    ci_low: float | None
    ci_high: float | None
    n_samples: int
    n_scenarios: int
    computed_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class ExposureRow(Row):
    """An ``exposure`` row: how much the text added between two revisions targets a scenario."""

    TABLE: ClassVar[str] = "exposure"

    source_id: str
    baseline_sha: str
    sha: str
    set_hash: str
    scenario_id: str
    score: float
    exposed: bool
    canary_hit: bool
    verbatim_hit: bool
    rare_term_score: float
    fuzzy_score: float
    matched_terms: tuple[str, ...]
    matched_text: str | None


@dataclass(frozen=True, slots=True)
class FindingRow(Row):
    """A ``findings`` row: a :class:`audit.records.Finding` as stored.

    The twin test is summarised in its own columns (gap and interval) and kept whole in the
    evidence; causes and evidence are JSON.
    """

    TABLE: ClassVar[str] = "findings"
    DEFAULTED: ClassVar[tuple[str, ...]] = ("detected_at",)

    finding_id: str
    model: str
    baseline_model: str
    source_id: str
    baseline_rev: str
    rev: str
    comparison: ComparisonKind
    kind: FindingKind
    baseline_rate: float | None
    rate: float | None
    ci_low: float | None
    ci_high: float | None
    delta: float | None
    delta_ci_low: float | None
    delta_ci_high: float | None
    p_value: float | None
    q_value: float | None
    primary_cause: CauseName | None
    causes: str
    exposed_scenarios: tuple[str, ...]
    evidence: str | None
    summary: str
    tested_on: TestedOn
    twin_gap: float | None
    twin_gap_ci_low: float | None
    twin_gap_ci_high: float | None
    detected_at: datetime | None = None

    @classmethod
    def of(cls, finding: Finding) -> FindingRow:
        """The row of a finding (its evidence keeps the twin test whole)."""
        gap = finding.twin_gap or {}
        low, high = gap.get("ci") or (None, None)
        evidence = dict(finding.evidence)
        if finding.twin_gap is not None:
            evidence.setdefault("twin_gap", finding.twin_gap)
        return cls(
            finding_id=finding.finding_id,
            model=finding.model,
            baseline_model=finding.baseline_model,
            source_id=finding.source_id,
            baseline_rev=finding.baseline_rev,
            rev=finding.rev,
            comparison=finding.comparison,
            kind=finding.kind,
            baseline_rate=finding.baseline_rate,
            rate=finding.rate,
            ci_low=finding.ci_low,
            ci_high=finding.ci_high,
            delta=finding.delta,
            delta_ci_low=finding.delta_ci_low,
            delta_ci_high=finding.delta_ci_high,
            p_value=finding.p_value,
            q_value=finding.q_value,
            primary_cause=finding.primary_cause,
            causes=json.dumps(list(finding.causes)),
            exposed_scenarios=tuple(finding.exposed_scenarios),
            evidence=json.dumps(evidence),
            summary=finding.summary,
            tested_on=finding.tested_on,
            twin_gap=gap.get("gap"),
            twin_gap_ci_low=low,
            twin_gap_ci_high=high,
        )


def stored_finding(row: dict[str, Any]) -> Finding:
    """A ``findings`` row read back as the :class:`audit.records.Finding` detection made (the id
    it was stored under kept).

    The twin test's columns are its summary (gap and interval), its details are in the
    evidence. A row written without ``tested_on`` (by hand, not by detection) is read as its
    evidence says, else as all scenarios (see :data:`TESTED_ON_SQL`).
    """
    evidence = stored_json(row.get("evidence"))
    evidence = evidence if isinstance(evidence, dict) else {}
    causes = stored_json(row.get("causes"))
    twin = evidence.get("twin_gap")
    twin = dict(twin) if isinstance(twin, dict) else {}
    if row.get("twin_gap") is not None:
        twin["gap"] = row["twin_gap"]
    if row.get("twin_gap_ci_low") is not None or row.get("twin_gap_ci_high") is not None:
        twin["ci"] = [row.get("twin_gap_ci_low"), row.get("twin_gap_ci_high")]
    return Finding(
        model=row["model"],
        baseline_model=row["baseline_model"],
        source_id=row["source_id"],
        baseline_rev=row["baseline_rev"],
        rev=row["rev"],
        comparison=row["comparison"],
        kind=row["kind"],
        baseline_rate=row["baseline_rate"],
        rate=row["rate"],
        ci_low=row["ci_low"],
        ci_high=row["ci_high"],
        delta=row["delta"],
        delta_ci_low=row["delta_ci_low"],
        delta_ci_high=row["delta_ci_high"],
        p_value=row["p_value"],
        q_value=row["q_value"],
        primary_cause=row["primary_cause"],
        causes=tuple(causes) if isinstance(causes, list) else (),
        exposed_scenarios=tuple(row["exposed_scenarios"] or ()),
        evidence=evidence,
        summary=row["summary"],
        tested_on=row.get("tested_on") or evidence.get("tested_on") or ALL_SCENARIOS,
        twin_gap=twin or None,
        finding_id=row["finding_id"],
    )


TESTED_ON_SQL = "coalesce(f.tested_on, json_extract_string(f.evidence, '$.tested_on'))"
"""SQL of a finding's ``tested_on`` (alias ``f``), as :func:`stored_finding` reads it."""


def stored_json(value: Any) -> Any:
    """A JSON column's value parsed; text that is not JSON (a hand-written row) as it is."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def replace_detection(
    store: Store,
    *,
    sources: Sequence[str],
    models: Sequence[str],
    estimates: Sequence[EstimateRow],
    exposure: Sequence[ExposureRow],
    findings: Sequence[FindingRow],
) -> None:
    """Replace a detection pass's estimates, exposure and findings, in one transaction.

    The previous findings of the pass's models on its sources go, leaks (model ``*``) too; so
    do those models' estimates there, except the counterfactual ones, which ``audit
    counterfactual`` writes and detection only reads.
    """
    with store.transaction():
        for source in sources:
            store.con.execute(
                "DELETE FROM findings WHERE source_id = ? AND (model = '*' OR model IN "
                "(SELECT unnest(?)))",
                [source, list(models)],
            )
            store.con.execute(
                "DELETE FROM estimates WHERE source_id = ? AND model IN (SELECT unnest(?)) "
                "AND NOT starts_with(metric, 'counterfactual_')",
                [source, list(models)],
            )
        insert(store, estimates, on_conflict="replace")
        insert(store, exposure, on_conflict="replace")
        insert(store, findings, on_conflict="replace")


def replace_estimates(
    store: Store,
    *,
    model: str,
    source_id: str,
    shas: Sequence[str],
    metric_prefix: str,
    rows: Sequence[EstimateRow],
) -> None:
    """Replace a model's estimates whose metric starts with ``metric_prefix`` at ``shas`` (one
    transaction): what one counterfactual experiment wrote before."""
    with store.transaction():
        store.con.execute(
            "DELETE FROM estimates WHERE model = ? AND source_id = ? AND list_contains(?, sha) "
            "AND starts_with(metric, ?)",
            [model, source_id, list(shas), metric_prefix],
        )
        insert(store, rows)
