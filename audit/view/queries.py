"""Read-only queries behind ``audit view``: findings, the samples behind one, one sample.

Every query is paged or keyed, so no page reads more than the samples of the two points a finding
compares: on 1,000,000 samples a page of a finding's samples scans the few dictionary-compressed
columns it filters on (about 10 ms) and a transcript is one lookup through the primary key's
index (``EXPLAIN ANALYZE`` shows the index scan; plain ``EXPLAIN`` cannot, as DuckDB picks it when
the query runs). No index of the viewer's own is needed: an ART index on
``samples.spec_content_hash`` is used by DuckDB only for that equality alone, not for a page's
filter on model, content hash and set, and did not make the page faster. Figures are in
``tests/bench/bench_view.py``.

Sealed twins are withheld here, in SQL, not in the templates: for a sealed scenario the text
columns (transcript, reasoning, answer, grade and awareness evidence) are never selected, so no
page, JSON answer or later template change can show them. Which scenarios are sealed is decided
by :mod:`audit.store.sealed`, as for the report and exports.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, get_args

import duckdb

from audit.errors import AuditError
from audit.records import CAUSE_NAMES, Outcome
from audit.store.rows import TESTED_ON_SQL
from audit.store.sealed import is_sealed, sealed_ids, sealed_sql

PAGE_SIZE = 50
"""Samples per page of a finding's samples."""
FINDINGS_PAGE_SIZE = 100
"""Findings per page of the findings list."""
MAX_CLAUSE_CHANGES = 300
"""Clause changes shown beside one transcript; the rest are counted, not loaded."""
MAX_CHANGED_REVISIONS = 20
"""Revisions whose changes are shown beside one transcript (the latest ones of the span)."""

OUTCOMES: tuple[str, ...] = get_args(Outcome)
KINDS = ("regression", "leak", "drop", "collapse", "none")
CAUSES = tuple(CAUSE_NAMES)
POINTS = ("candidate", "baseline")
AWARENESS = ("aware", "unaware")

Connection = duckdb.DuckDBPyConnection


# -- records -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RevisionRef:
    """A spec revision as the viewer names it: index, short sha and tags."""

    source_id: str
    sha: str
    seq: int | None
    content_hash: str | None
    subject: str
    tags: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        """'#4 1a2b3c4 (v1.2)', or the short sha alone when the revision is not stored."""
        if self.seq is None:
            return self.sha[:7]
        tags = f" ({', '.join(self.tags)})" if self.tags else ""
        return f"#{self.seq} {self.sha[:7]}{tags}"

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return {
            "source_id": self.source_id,
            "sha": self.sha,
            "seq": self.seq,
            "label": self.label,
            "subject": self.subject,
            "tags": list(self.tags),
        }


@dataclass(frozen=True)
class Cause:
    """One attributed cause of a finding and its share of the change."""

    cause: str
    share: float | None


@dataclass(frozen=True)
class FindingRow:
    """A finding as the list and the finding page show it."""

    finding_id: str
    detected_at: datetime | None
    model: str
    baseline_model: str
    source_id: str
    baseline: RevisionRef
    candidate: RevisionRef
    comparison: str
    kind: str
    baseline_rate: float | None
    rate: float | None
    ci_low: float | None
    ci_high: float | None
    delta: float | None
    delta_ci_low: float | None
    delta_ci_high: float | None
    q_value: float | None
    primary_cause: str | None
    causes: tuple[Cause, ...]
    exposed_scenarios: tuple[str, ...]
    summary: str
    set_hash: str | None
    tested_on: str | None

    @property
    def across_versions(self) -> bool:
        """Two versions of a model compared at one revision, not two revisions of one model."""
        return self.baseline_model != self.model

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        out = {
            name: getattr(self, name)
            for name in self.__dataclass_fields__
            if name not in ("baseline", "candidate", "causes", "detected_at")
        }
        out["exposed_scenarios"] = list(self.exposed_scenarios)
        out["detected_at"] = self.detected_at.isoformat() if self.detected_at else None
        out["baseline"] = self.baseline.as_dict()
        out["candidate"] = self.candidate.as_dict()
        out["causes"] = [{"cause": c.cause, "share": c.share} for c in self.causes]
        return out


@dataclass(frozen=True)
class FindingFilters:
    """Filters of the findings list; None means any."""

    model: str | None = None
    kind: str | None = None
    cause: str | None = None
    page: int = 1


@dataclass(frozen=True)
class FindingList:
    """One page of findings and the values the filters can take."""

    filters: FindingFilters
    rows: list[FindingRow]
    total: int
    pages: int
    models: list[str]
    kinds: list[str]
    causes: list[str]


@dataclass(frozen=True)
class Point:
    """One side of a finding: a model (``*`` for any) at a spec revision."""

    name: str
    model: str
    revision: RevisionRef


@dataclass(frozen=True)
class SampleFilters:
    """Filters of a finding's samples; None means any."""

    point: str | None = None
    scenario_id: str | None = None
    outcome: str | None = None
    aware: bool | None = None
    page: int = 1


@dataclass(frozen=True)
class SampleRow:
    """One sample in a list: grades and ids only, never text."""

    sample_key: str
    point: str
    model: str
    scenario_id: str
    family: str | None
    condition: str
    epoch: int
    outcome: str
    eval_aware: bool
    score: float | None
    sealed: bool
    rule: str | None


@dataclass(frozen=True)
class ScenarioCount:
    """Samples of one scenario at the finding's points (for the scenario filter)."""

    scenario_id: str
    sealed: bool
    n: int


@dataclass(frozen=True)
class SamplePage:
    """One page of the samples behind a finding, with counts for the current filters."""

    finding: FindingRow
    points: tuple[Point, ...]
    filters: SampleFilters
    rows: list[SampleRow]
    total: int
    pages: int
    outcome_counts: dict[str, int]
    aware_count: int
    scenarios: list[ScenarioCount]

    @property
    def first_index(self) -> int:
        """1-based position of the page's first sample (0 when the page is empty)."""
        return (self.filters.page - 1) * PAGE_SIZE + 1 if self.rows else 0


@dataclass(frozen=True)
class ClauseChangeRow:
    """One stored clause change of a revision, as ``audit specs diff`` prints it."""

    change: str
    clause_kind: str
    section: str | None
    old_text: str | None
    new_text: str | None
    similarity: float | None


@dataclass(frozen=True)
class RevisionChange:
    """The stored clause changes of one revision against the previous one."""

    revision: RevisionRef
    previous: RevisionRef | None
    changes: list[ClauseChangeRow]
    omitted: int = 0

    def counts(self) -> dict[str, int]:
        """Clause changes per kind of change (omitted ones not counted)."""
        out = {"added": 0, "removed": 0, "reworded": 0, "moved": 0}
        for change in self.changes:
            out[change.change] = out.get(change.change, 0) + 1
        return out


@dataclass(frozen=True)
class SpecChanges:
    """The spec edits in effect for a sample: from ``since`` (excluded) to ``revision``."""

    revision: RevisionRef
    since: RevisionRef | None
    revisions: list[RevisionChange]
    omitted_revisions: int = 0


@dataclass(frozen=True)
class SampleDetail:
    """One sample. For a sealed twin every text field is None: ids and grades only."""

    sample_key: str
    origin: str
    model: str
    model_version: str | None
    set_hash: str
    spec_sha: str
    scenario_id: str
    family: str | None
    condition: str
    epoch: int
    outcome: str
    eval_aware: bool
    spec_cited: bool | None
    score: float | None
    sealed: bool
    turns: int | None
    prompt_tokens: int | None
    completion_tokens: int | None
    latency_ms: float | None
    finish_reason: str | None
    created_at: datetime | None
    grade_evidence: dict[str, Any] | None
    awareness_evidence: list[dict[str, Any]] | None
    messages: list[dict[str, Any]] | None
    revision: RevisionRef | None = None
    finding: FindingRow | None = None
    point: str | None = None
    spec_changes: SpecChanges | None = field(default=None)

    @property
    def rule(self) -> str | None:
        """The grading rule that decided (None for sealed twins and undecided samples)."""
        if not self.grade_evidence:
            return None
        rule = self.grade_evidence.get("rule") or self.grade_evidence.get("rule_id")
        return str(rule) if rule else None


# -- connection helpers --------------------------------------------------------------------------


def _rows(con: Connection, sql: str, params: Sequence[Any] | Mapping[str, Any]) -> list[dict]:
    cursor = con.execute(sql, params)
    columns = [d[0] for d in cursor.description or []]
    return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]


def _column(con: Connection, sql: str, params: Sequence[Any] = ()) -> list[Any]:
    return [row[0] for row in con.execute(sql, params).fetchall()]


# -- revisions -----------------------------------------------------------------------------------


def revision_refs(con: Connection, source_id: str, shas: Iterable[str]) -> dict[str, RevisionRef]:
    """Stored revisions of ``source_id`` by sha, with their tags; unknown shas get a bare ref."""
    wanted = sorted(set(shas))
    rows = _rows(
        con,
        "SELECT r.sha, r.seq, r.content_hash, r.message, "
        "  list(t.tag ORDER BY t.tag) FILTER (WHERE t.tag IS NOT NULL) AS tags "
        "FROM spec_revisions r "
        "LEFT JOIN spec_tags t ON t.source_id = r.source_id AND t.sha = r.sha "
        "WHERE r.source_id = $source AND list_contains($shas, r.sha) "
        "GROUP BY r.sha, r.seq, r.content_hash, r.message",
        {"source": source_id, "shas": wanted},
    )
    found = {
        r["sha"]: RevisionRef(
            source_id=source_id,
            sha=r["sha"],
            seq=r["seq"],
            content_hash=r["content_hash"],
            subject=(r["message"] or "").split("\n", 1)[0],
            tags=tuple(r["tags"] or ()),
        )
        for r in rows
    }
    return {sha: found.get(sha, RevisionRef(source_id, sha, None, None, "")) for sha in wanted}


def _revision_at(con: Connection, source_id: str, seq: int) -> RevisionRef | None:
    rows = _rows(
        con,
        "SELECT sha FROM spec_revisions WHERE source_id = ? AND seq = ?",
        [source_id, seq],
    )
    if not rows:
        return None
    return revision_refs(con, source_id, [rows[0]["sha"]])[rows[0]["sha"]]


def _revision_of_sample(
    con: Connection, source_id: str | None, spec_sha: str, content_hash: str
) -> RevisionRef | None:
    """The revision a sample was made for: its own source when recorded, else any holding it."""
    rows = _rows(
        con,
        "SELECT source_id FROM spec_revisions WHERE sha = $sha AND content_hash = $hash "
        "ORDER BY source_id = coalesce($source, '') DESC, source_id LIMIT 1",
        {"sha": spec_sha, "hash": content_hash, "source": source_id},
    )
    if not rows:
        return None
    return revision_refs(con, rows[0]["source_id"], [spec_sha])[spec_sha]


# -- findings ------------------------------------------------------------------------------------

_FINDING_COLUMNS = (
    "f.finding_id, f.detected_at, f.model, f.baseline_model, f.source_id, f.baseline_rev, "
    "f.rev, f.comparison, f.kind, f.baseline_rate, f.rate, f.ci_low, f.ci_high, f.delta, "
    "f.delta_ci_low, f.delta_ci_high, f.q_value, f.primary_cause, CAST(f.causes AS VARCHAR) "
    "AS causes, f.exposed_scenarios, f.summary, "
    "json_extract_string(f.evidence, '$.set_hash') AS set_hash, "
    # A leak or a finding about one point compared no scenarios: nothing to say it was tested on.
    f"CASE WHEN f.kind <> 'leak' AND f.comparison <> 'point' THEN {TESTED_ON_SQL} END AS tested_on"
)
_FINDING_WHERE = (
    "($model IS NULL OR f.model = $model) AND ($kind IS NULL OR f.kind = $kind) "
    "AND ($cause IS NULL OR list_contains(json_extract_string(f.causes, '$[*].cause'), $cause))"
)
# Significant changes first (a regression is what a gate fails on), then by model and history.
_FINDING_ORDER = (
    "CASE f.kind WHEN 'regression' THEN 0 WHEN 'leak' THEN 1 WHEN 'drop' THEN 2 "
    "WHEN 'collapse' THEN 3 ELSE 4 END, f.model, r.seq NULLS LAST, rb.seq NULLS LAST, "
    "f.comparison, f.finding_id"
)


def list_findings(con: Connection, filters: FindingFilters) -> FindingList:
    """One page of findings matching ``filters``, most important first."""
    params = {"model": filters.model, "kind": filters.kind, "cause": filters.cause}
    total = con.execute(f"SELECT count(*) FROM findings f WHERE {_FINDING_WHERE}", params)
    n = int(total.fetchone()[0])  # type: ignore[index]
    pages = max(1, math.ceil(n / FINDINGS_PAGE_SIZE))
    page = min(filters.page, pages)
    rows = _rows(
        con,
        f"SELECT {_FINDING_COLUMNS} FROM findings f "
        "LEFT JOIN spec_revisions r ON r.source_id = f.source_id AND r.sha = f.rev "
        "LEFT JOIN spec_revisions rb ON rb.source_id = f.source_id AND rb.sha = f.baseline_rev "
        f"WHERE {_FINDING_WHERE} ORDER BY {_FINDING_ORDER} LIMIT $limit OFFSET $offset",
        {**params, "limit": FINDINGS_PAGE_SIZE, "offset": (page - 1) * FINDINGS_PAGE_SIZE},
    )
    options = _finding_options(con)
    return FindingList(
        filters=FindingFilters(filters.model, filters.kind, filters.cause, page),
        rows=_finding_rows(con, rows),
        total=n,
        pages=pages,
        models=options["models"],
        kinds=options["kinds"],
        causes=options["causes"],
    )


def _finding_options(con: Connection) -> dict[str, list[str]]:
    models = _column(con, "SELECT DISTINCT model FROM findings ORDER BY model")
    kinds = set(_column(con, "SELECT DISTINCT kind FROM findings"))
    causes = {
        c
        for c in _column(
            con, "SELECT DISTINCT unnest(json_extract_string(causes, '$[*].cause')) FROM findings"
        )
        if c
    }
    return {
        "models": models,
        "kinds": [k for k in KINDS if k in kinds],
        "causes": [c for c in CAUSES if c in causes] + sorted(causes - set(CAUSES)),
    }


def get_finding(con: Connection, finding_id: str) -> FindingRow:
    """One finding by id (LookupError when there is none)."""
    rows = _rows(
        con,
        f"SELECT {_FINDING_COLUMNS} FROM findings f WHERE f.finding_id = ?",
        [finding_id],
    )
    if not rows:
        raise LookupError(f"no finding {finding_id!r}: pick one from the findings list")
    return _finding_rows(con, rows)[0]


def _finding_rows(con: Connection, rows: list[dict]) -> list[FindingRow]:
    shas: dict[str, set[str]] = {}
    for r in rows:
        shas.setdefault(r["source_id"], set()).update((r["rev"], r["baseline_rev"]))
    refs = {source: revision_refs(con, source, wanted) for source, wanted in shas.items()}
    return [_finding_row(r, refs[r["source_id"]]) for r in rows]


def _finding_row(r: dict, refs: Mapping[str, RevisionRef]) -> FindingRow:
    return FindingRow(
        finding_id=r["finding_id"],
        detected_at=r["detected_at"],
        model=r["model"],
        baseline_model=r["baseline_model"],
        source_id=r["source_id"],
        baseline=refs[r["baseline_rev"]],
        candidate=refs[r["rev"]],
        comparison=r["comparison"],
        kind=r["kind"],
        baseline_rate=r["baseline_rate"],
        rate=r["rate"],
        ci_low=r["ci_low"],
        ci_high=r["ci_high"],
        delta=r["delta"],
        delta_ci_low=r["delta_ci_low"],
        delta_ci_high=r["delta_ci_high"],
        q_value=r["q_value"],
        primary_cause=r["primary_cause"],
        causes=_causes(r["causes"]),
        exposed_scenarios=tuple(r["exposed_scenarios"] or ()),
        summary=r["summary"],
        set_hash=r["set_hash"],
        tested_on=r["tested_on"],
    )


def _causes(text: str | None) -> tuple[Cause, ...]:
    parsed = _json(text)
    if not isinstance(parsed, list):
        return ()
    out = []
    for item in parsed:
        if isinstance(item, dict) and item.get("cause"):
            share = item.get("share")
            out.append(Cause(str(item["cause"]), float(share) if share is not None else None))
    return tuple(out)


# -- the samples behind a finding ----------------------------------------------------------------


def finding_points(finding: FindingRow) -> tuple[Point, ...]:
    """The finding's candidate point, then its baseline point when that is another one."""
    candidate = Point("candidate", finding.model, finding.candidate)
    baseline = Point("baseline", finding.baseline_model, finding.baseline)
    same = (baseline.model, baseline.revision.sha) == (candidate.model, candidate.revision.sha)
    return (candidate,) if same else (candidate, baseline)


def _point_sql(name: str) -> str:
    return (
        f"(s.spec_content_hash = ${name}_hash AND (${name}_model = '*' OR s.model = ${name}_model))"
    )


def _points_params(points: Sequence[Point]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for name in POINTS:
        point = next((p for p in points if p.name == name), points[0])
        # A revision that is not stored has no content hash and so no samples.
        params[f"{name}_hash"] = point.revision.content_hash or ""
        params[f"{name}_model"] = point.model
    return params


def _set_hash(con: Connection, finding: FindingRow) -> str:
    """The held-out set the finding was computed on (detection records it), else the largest."""
    if finding.set_hash:
        return finding.set_hash
    row = con.execute(
        "SELECT set_hash FROM samples GROUP BY set_hash ORDER BY count(*) DESC, set_hash LIMIT 1"
    ).fetchone()
    return str(row[0]) if row else ""


_POINT_CASE = f"CASE WHEN {_point_sql('candidate')} THEN 'candidate' ELSE 'baseline' END"
_POINTS_WHERE = (
    f"s.set_hash = $set_hash AND ({_point_sql('candidate')} OR {_point_sql('baseline')})"
)


def finding_samples(con: Connection, finding_id: str, filters: SampleFilters) -> SamplePage:
    """One page of the samples at the points a finding compares, filtered."""
    finding = get_finding(con, finding_id)
    points = finding_points(finding)
    params = {**_points_params(points), "set_hash": _set_hash(con, finding)}
    facets = _facets(con, params)
    in_scope = [f for f in facets if _matches_scope(f, filters)]
    counted = [f for f in in_scope if _matches_grades(f, filters)]
    total = sum(f["n"] for f in counted)
    pages = max(1, math.ceil(total / PAGE_SIZE))
    page = min(filters.page, pages)
    filters = SampleFilters(
        filters.point, filters.scenario_id, filters.outcome, filters.aware, page
    )
    rows = _sample_rows(con, params, filters) if total else []
    registered = sealed_ids(con)
    outcome_counts = {o: 0 for o in OUTCOMES}
    for f in in_scope:
        outcome_counts[f["outcome"]] = outcome_counts.get(f["outcome"], 0) + f["n"]
    scenario_counts: dict[str, int] = {}
    for f in facets:
        if filters.point is None or f["point"] == filters.point:
            scenario_counts[f["scenario_id"]] = scenario_counts.get(f["scenario_id"], 0) + f["n"]
    return SamplePage(
        finding=finding,
        points=points,
        filters=filters,
        rows=rows,
        total=total,
        pages=pages,
        outcome_counts=outcome_counts,
        aware_count=sum(f["n"] for f in in_scope if f["eval_aware"]),
        scenarios=[
            ScenarioCount(sid, is_sealed(sid, registered), n)
            for sid, n in sorted(scenario_counts.items())
        ],
    )


def _facets(con: Connection, params: Mapping[str, Any]) -> list[dict]:
    """Sample counts per (point, scenario, outcome, awareness) at the finding's points."""
    return _rows(
        con,
        f"SELECT {_POINT_CASE} AS point, s.scenario_id, s.outcome, s.eval_aware, count(*) AS n "
        f"FROM samples s WHERE {_POINTS_WHERE} GROUP BY ALL",
        params,
    )


def _matches_scope(facet: Mapping[str, Any], filters: SampleFilters) -> bool:
    return (filters.point is None or facet["point"] == filters.point) and (
        filters.scenario_id is None or facet["scenario_id"] == filters.scenario_id
    )


def _matches_grades(facet: Mapping[str, Any], filters: SampleFilters) -> bool:
    return (filters.outcome is None or facet["outcome"] == filters.outcome) and (
        filters.aware is None or bool(facet["eval_aware"]) == filters.aware
    )


def _sample_rows(
    con: Connection, params: Mapping[str, Any], filters: SampleFilters
) -> list[SampleRow]:
    """The page's samples in two steps: positions first, then the rows of the page alone.

    Ordering by the sample key would read every matching key of the whole file (64 characters
    each, spread over every row group when runs interleave); ordering by the small dictionary
    columns and the row id, then fetching 50 rows by row id, took the page from about 70 ms to
    about 12 ms on 1,000,000 samples. Both steps run on one read-only connection, so row ids
    cannot move in between.
    """
    page = con.execute(
        f"""
        SELECT s.rowid, {_POINT_CASE} AS point
        FROM samples s
        WHERE {_POINTS_WHERE}
          AND ($scenario IS NULL OR s.scenario_id = $scenario)
          AND ($outcome IS NULL OR s.outcome = $outcome)
          AND ($aware IS NULL OR s.eval_aware = $aware)
          AND ($point IS NULL OR {_POINT_CASE} = $point)
        ORDER BY point = 'baseline', s.scenario_id, s.condition, s.epoch, s.model, s.rowid
        LIMIT $limit OFFSET $offset
        """,
        {
            **params,
            "scenario": filters.scenario_id,
            "outcome": filters.outcome,
            "aware": filters.aware,
            "point": filters.point,
            "limit": PAGE_SIZE,
            "offset": (filters.page - 1) * PAGE_SIZE,
        },
    ).fetchall()
    if not page:
        return []
    sealed = sealed_sql("s.scenario_id")
    rows = _rows(
        con,
        f"""
        SELECT s.rowid AS row_id, s.sample_key, s.model, s.scenario_id, s.family, s.condition,
               s.epoch, s.outcome, s.eval_aware, s.score, {sealed} AS sealed,
               CASE WHEN {sealed} THEN NULL
                    ELSE json_extract_string(s.grade_evidence, '$.rule') END AS rule
        FROM samples s
        WHERE s.rowid IN (SELECT unnest($row_ids))
        """,
        {"row_ids": [row_id for row_id, _ in page]},
    )
    by_id = {r.pop("row_id"): r for r in rows}
    return [SampleRow(point=point, **by_id[row_id]) for row_id, point in page]


# -- one sample ----------------------------------------------------------------------------------

# Text columns are selected only for scenarios that are not sealed; the rest is grades and ids.
_SAMPLE_SQL = """
SELECT s.sample_key, s.origin, s.model, s.model_version, s.source_id, s.set_hash, s.spec_sha,
       s.spec_content_hash, s.scenario_id, s.family, s.condition, s.epoch, s.outcome,
       s.eval_aware, s.spec_cited, s.score, s.turns, s.prompt_tokens, s.completion_tokens,
       s.latency_ms, s.finish_reason, s.created_at, {sealed} AS sealed,
       CASE WHEN {sealed} THEN NULL ELSE CAST(s.grade_evidence AS VARCHAR) END AS grade_evidence,
       CASE WHEN {sealed} THEN NULL ELSE CAST(s.awareness_evidence AS VARCHAR) END
           AS awareness_evidence,
       CASE WHEN {sealed} THEN NULL ELSE CAST(s.transcript AS VARCHAR) END AS transcript
FROM samples s
WHERE s.sample_key = $key
"""


def get_sample(
    con: Connection,
    sample_key: str,
    *,
    finding_id: str | None = None,
) -> SampleDetail:
    """One sample by key, with the spec changes in effect for it (LookupError when unknown).

    With ``finding_id`` the sample is placed at the finding's point it belongs to, and beside a
    candidate-side sample stand the spec edits since the finding's baseline revision; otherwise
    the edits of the revision the sample was made for.
    """
    rows = _rows(con, _SAMPLE_SQL.format(sealed=sealed_sql("s.scenario_id")), {"key": sample_key})
    if not rows:
        raise LookupError(f"no sample {sample_key!r}: open one from a finding's samples")
    r = rows[0]
    finding = get_finding(con, finding_id) if finding_id else None
    point, revision, since = _placement(con, r, finding)
    changes = spec_changes(con, revision, since) if revision and revision.seq is not None else None
    return SampleDetail(
        sample_key=r["sample_key"],
        origin=r["origin"],
        model=r["model"],
        model_version=r["model_version"],
        set_hash=r["set_hash"],
        spec_sha=r["spec_sha"],
        scenario_id=r["scenario_id"],
        family=r["family"],
        condition=r["condition"],
        epoch=r["epoch"],
        outcome=r["outcome"],
        eval_aware=r["eval_aware"],
        spec_cited=r["spec_cited"],
        score=r["score"],
        sealed=bool(r["sealed"]),
        turns=r["turns"],
        prompt_tokens=r["prompt_tokens"],
        completion_tokens=r["completion_tokens"],
        latency_ms=r["latency_ms"],
        finish_reason=r["finish_reason"],
        created_at=r["created_at"],
        grade_evidence=_dict_or_none(_json(r["grade_evidence"])),
        awareness_evidence=_list_of_dicts(_json(r["awareness_evidence"])),
        messages=None if r["sealed"] else _messages(_json(r["transcript"])),
        revision=revision,
        finding=finding,
        point=point,
        spec_changes=changes,
    )


def _placement(
    con: Connection, row: Mapping[str, Any], finding: FindingRow | None
) -> tuple[str | None, RevisionRef | None, RevisionRef | None]:
    """(point of the finding, revision shown, revision the shown edits start after)."""
    if finding is not None:
        for point in finding_points(finding):
            same_text = point.revision.content_hash == row["spec_content_hash"]
            if same_text and point.model in ("*", row["model"]):
                since = _since(con, finding, point)
                return point.name, point.revision, since
    revision = _revision_of_sample(con, row["source_id"], row["spec_sha"], row["spec_content_hash"])
    if revision is None or revision.seq is None:
        return None, revision, None
    return None, revision, _revision_at(con, revision.source_id, revision.seq - 1)


def _since(con: Connection, finding: FindingRow, point: Point) -> RevisionRef | None:
    """Edits beside a candidate sample start after the baseline; a baseline's are its own."""
    seq = point.revision.seq
    if seq is None:
        return None
    base_seq = finding.baseline.seq
    if point.name == "candidate" and base_seq is not None and base_seq < seq:
        return finding.baseline
    return _revision_at(con, point.revision.source_id, seq - 1)


def spec_changes(con: Connection, revision: RevisionRef, since: RevisionRef | None) -> SpecChanges:
    """Stored clause changes of every revision after ``since`` up to ``revision``, newest last.

    At most :data:`MAX_CHANGED_REVISIONS` revisions (the latest) and :data:`MAX_CLAUSE_CHANGES`
    changes are loaded; the rest are counted so the page says what it left out.
    """
    assert revision.seq is not None
    low = since.seq if since is not None and since.seq is not None else -1
    span = _rows(
        con,
        "SELECT sha, seq FROM spec_revisions WHERE source_id = ? AND seq > ? AND seq <= ? "
        "ORDER BY seq DESC LIMIT ?",
        [revision.source_id, low, revision.seq, MAX_CHANGED_REVISIONS],
    )
    total_revisions = revision.seq - low
    shas = [r["sha"] for r in reversed(span)]
    previous_shas = _previous_shas(con, revision.source_id, [r["seq"] for r in span])
    refs = revision_refs(con, revision.source_id, shas + list(previous_shas.values()))
    changes = _clause_changes(con, revision.source_id, shas)
    blocks = []
    for sha in shas:
        rows, omitted = changes.get(sha, ([], 0))
        seq = refs[sha].seq
        previous = previous_shas.get(seq - 1) if seq is not None else None
        blocks.append(
            RevisionChange(refs[sha], refs.get(previous) if previous else None, rows, omitted)
        )
    return SpecChanges(revision, since, blocks, max(0, total_revisions - len(shas)))


def _previous_shas(con: Connection, source_id: str, seqs: Sequence[int]) -> dict[int, str]:
    rows = con.execute(
        "SELECT seq, sha FROM spec_revisions WHERE source_id = ? AND list_contains(?, seq)",
        [source_id, [s - 1 for s in seqs]],
    ).fetchall()
    return {int(seq): str(sha) for seq, sha in rows}


def _clause_changes(
    con: Connection, source_id: str, shas: Sequence[str]
) -> dict[str, tuple[list[ClauseChangeRow], int]]:
    """Per revision, its clause changes in document order and how many were left out.

    The cap keeps the latest revisions' changes: they are the ones the sample saw last.
    """
    params = {"source": source_id, "shas": list(shas)}
    counts = dict(
        con.execute(
            "SELECT sha, count(*) FROM spec_clause_changes "
            "WHERE source_id = $source AND list_contains($shas, sha) GROUP BY sha",
            params,
        ).fetchall()
    )
    rows = _rows(
        con,
        "SELECT sha, change, clause_kind, section, old_text, new_text, similarity "
        "FROM spec_clause_changes WHERE source_id = $source AND list_contains($shas, sha) "
        "QUALIFY row_number() OVER (ORDER BY list_position($shas, sha) DESC, ordinal) <= $cap "
        "ORDER BY list_position($shas, sha), ordinal",
        {**params, "cap": MAX_CLAUSE_CHANGES},
    )
    kept: dict[str, list[ClauseChangeRow]] = {sha: [] for sha in counts}
    for r in rows:
        kept[r["sha"]].append(
            ClauseChangeRow(
                change=r["change"],
                clause_kind=r["clause_kind"],
                section=r["section"],
                old_text=r["old_text"],
                new_text=r["new_text"],
                similarity=r["similarity"],
            )
        )
    return {sha: (kept[sha], int(counts[sha]) - len(kept[sha])) for sha in counts}


# -- JSON columns --------------------------------------------------------------------------------


def _json(text: Any) -> Any:
    if text is None or not isinstance(text, str):
        return text
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return None


def _dict_or_none(value: Any) -> dict[str, Any] | None:
    return value if isinstance(value, dict) else None


def _list_of_dicts(value: Any) -> list[dict[str, Any]] | None:
    if not isinstance(value, list):
        return None
    return [item for item in value if isinstance(item, dict)]


def _messages(value: Any) -> list[dict[str, Any]]:
    """OpenAI-style messages of a stored transcript (imports may wrap them in an object)."""
    if isinstance(value, dict):
        value = value.get("messages", [])
    if not isinstance(value, list):
        return []
    return [m for m in value if isinstance(m, dict)]


def parse_flag(value: str | None, allowed: Sequence[str], name: str) -> str | None:
    """A query parameter that must be one of ``allowed`` (empty means any)."""
    if value is None or value == "":
        return None
    if value not in allowed:
        raise AuditError(f"{name}={value!r} is not one of {', '.join(allowed)}: fix the URL")
    return value


def parse_page(value: str | None) -> int:
    """A 1-based page number from a query parameter."""
    if value is None or value == "":
        return 1
    if not value.isdigit() or int(value) < 1:
        raise AuditError(f"page={value!r} is not a page number (1, 2, ...): fix the URL")
    return int(value)
