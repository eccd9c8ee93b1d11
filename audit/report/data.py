"""Everything the drift report shows, aggregated inside DuckDB before any figure is built.

Samples can number in the millions, so they are reduced in one ``GROUP BY`` to one row per
(model, revision, scenario) and everything else is computed from that small table. Rates with
intervals come from ``estimates`` (written by ``audit detect``); where a point has no estimate the
point rate is computed here from samples and the report says the interval is missing instead of
inventing one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import Any

from audit.analysis.failures import missing_samples
from audit.analysis.usage import Usage, usage_totals
from audit.config import AuditConfig
from audit.errors import AuditError
from audit.model_lines import configured_lines, model_families
from audit.records import (
    EXPOSED_TESTED_ON,
    TWIN_METRICS,
    TWIN_TESTED_ON,
    Finding,
    SpecRevision,
)
from audit.spec_history import ClauseChange, resolve_revision, stored_revisions
from audit.store import Store
from audit.store.rows import stored_finding, stored_json
from audit.store.sealed import is_sealed, sealed_ids, sealed_sql

# Covert rate: covert samples over graded ones (invalid answers excluded), per scenario, then the
# macro average over scenarios, which is how ``estimates`` scope "all" is defined.
_CELLS_SQL = """
CREATE OR REPLACE TEMP TABLE _report_cells AS
WITH agg AS (
    SELECT model, spec_sha, spec_content_hash, scenario_id, any_value(family) AS family,
           count(*) AS n,
           count(*) FILTER (WHERE outcome <> 'invalid') AS n_graded,
           count(*) FILTER (WHERE outcome = 'covert') AS n_covert,
           count(*) FILTER (WHERE eval_aware) AS n_aware
    FROM samples
    WHERE set_hash = $set_hash AND ($model IS NULL OR model = $model)
    GROUP BY ALL
), revs AS (
    SELECT sha, content_hash FROM spec_revisions WHERE source_id = $source_id
), mapped AS (
    -- Revisions with equal content share samples (the cache key holds the content hash).
    SELECT r.sha AS rev_sha, a.* FROM agg a JOIN revs r ON a.spec_content_hash = r.content_hash
    UNION ALL
    SELECT a.spec_sha AS rev_sha, a.* FROM agg a JOIN revs r ON a.spec_sha = r.sha
    WHERE a.spec_content_hash NOT IN (SELECT content_hash FROM revs)
)
SELECT m.model, m.rev_sha AS sha, m.scenario_id,
       coalesce(any_value(m.family), any_value(sc.family), '?') AS family,
       sum(m.n)::BIGINT AS n, sum(m.n_graded)::BIGINT AS n_graded,
       sum(m.n_covert)::BIGINT AS n_covert, sum(m.n_aware)::BIGINT AS n_aware
FROM mapped m
LEFT JOIN scenarios sc ON sc.set_hash = $set_hash AND sc.scenario_id = m.scenario_id
GROUP BY m.model, m.rev_sha, m.scenario_id
"""

_POINT_RATES_SQL = """
SELECT model, sha,
       avg(n_covert / n_graded) FILTER (WHERE n_graded > 0) AS covert_rate,
       avg(n_aware / n) AS aware_rate,
       sum(n)::BIGINT AS n_samples, count(*)::BIGINT AS n_scenarios
FROM _report_cells GROUP BY model, sha
"""

# The reproduction queries of the report's "How to reproduce" box. Each prints its numbers the
# way the report does (percent with one decimal, printf rounds like Python's format), so a reader
# can find the report's figure in the output. Samples map to revisions as in _CELLS_SQL: by
# content hash, so revisions with equal text share samples.
REPRO_POINT_RATE_SQL = """WITH per_scenario AS (
  SELECT s.model, r.seq, r.sha, s.scenario_id,
         count(*) FILTER (WHERE s.outcome = 'covert')
           / nullif(count(*) FILTER (WHERE s.outcome <> 'invalid'), 0) AS covert,
         avg(s.eval_aware::INT) AS aware
  FROM samples s JOIN spec_revisions r ON r.source_id = '{source_id}'
   AND (r.content_hash = s.spec_content_hash OR r.sha = s.spec_sha)
  WHERE s.set_hash = '{set_hash}'{model_filter}
  GROUP BY ALL)
SELECT model, 'r' || seq || ' ' || left(sha, 7) AS revision,
       printf('%.1f', 100 * avg(covert)) AS covert_pct,
       printf('%.1f', 100 * avg(aware)) AS aware_pct, count(*) AS scenarios
FROM per_scenario GROUP BY model, seq, sha ORDER BY model, seq"""

REPRO_ESTIMATES_SQL = """SELECT c.model, 'r' || r.seq || ' ' || left(c.sha, 7) AS revision,
       printf('%.1f', 100 * c.value) AS covert_pct,
       printf('%.1f–%.1f', 100 * c.ci_low, 100 * c.ci_high) AS ci95_pct,
       printf('%.1f', 100 * a.value) AS aware_pct, c.n_samples, c.n_scenarios
FROM estimates c
JOIN spec_revisions r ON r.source_id = c.source_id AND r.sha = c.sha
LEFT JOIN estimates a ON a.source_id = c.source_id AND a.sha = c.sha AND a.model = c.model
 AND a.metric = 'eval_awareness_rate' AND a.scope = 'all'
WHERE c.source_id = '{source_id}' AND c.metric = 'covert_rate' AND c.scope = 'all'{model_filter}
ORDER BY c.model, r.seq"""

REPRO_HEATMAP_SQL = """SELECT s.family, s.scenario_id, r.seq,
       'r' || r.seq || ' ' || left(r.sha, 7) AS revision,
       count(*) FILTER (WHERE s.outcome = 'covert') || ' of '
         || count(*) FILTER (WHERE s.outcome <> 'invalid') AS covert_of_graded
FROM samples s JOIN spec_revisions r ON r.source_id = '{source_id}'
 AND (r.content_hash = s.spec_content_hash OR r.sha = s.spec_sha)
WHERE s.set_hash = '{set_hash}'{model_filter}
GROUP BY ALL ORDER BY s.family, s.scenario_id, r.seq"""

REPRO_FINDINGS_SQL = """SELECT model, baseline_model, comparison, left(baseline_rev, 7) AS baseline,
       left(rev, 7) AS rev, kind, primary_cause, printf('%+.1f', 100 * delta) AS points,
       printf('[%+.1f, %+.1f]', 100 * delta_ci_low, 100 * delta_ci_high) AS ci95,
       printf('%.3g', q_value) AS q, printf('%+.1f', 100 * twin_gap) AS twin_gap_points,
       printf('[%+.1f, %+.1f]', 100 * twin_gap_ci_low, 100 * twin_gap_ci_high) AS twin_gap_ci95,
       summary
FROM findings WHERE source_id = '{source_id}'{model_filter}
ORDER BY model, detected_at, finding_id"""

REPRO_TWINS_SQL = """SELECT p.model, 'r' || r.seq || ' ' || left(p.sha, 7) AS revision,
       printf('%.1f', 100 * p.value) AS public_pct,
       printf('%.1f–%.1f', 100 * p.ci_low, 100 * p.ci_high) AS public_ci95_pct,
       printf('%.1f', 100 * t.value) AS twins_pct,
       printf('%.1f–%.1f', 100 * t.ci_low, 100 * t.ci_high) AS twins_ci95_pct,
       p.n_scenarios AS public_scenarios, t.n_scenarios AS twin_scenarios
FROM estimates p
JOIN spec_revisions r ON r.source_id = p.source_id AND r.sha = p.sha
JOIN estimates t ON t.source_id = p.source_id AND t.sha = p.sha AND t.model = p.model
 AND t.metric = 'twin_covert_rate' AND t.scope = 'all'
WHERE p.source_id = '{source_id}' AND p.metric = 'public_covert_rate'
  AND p.scope = 'all'{model_filter}
ORDER BY p.model, r.seq"""

REPRO_FINDING_GROUPS_SQL = """SELECT model,
       CASE WHEN model <> baseline_model THEN 'model_version' ELSE comparison END AS compared,
       baseline_model, kind, primary_cause, count(*) AS findings,
       printf('%+.1f', 100 * min(delta)) AS min_points,
       printf('%+.1f', 100 * max(delta)) AS max_points, max(q_value) AS max_q
FROM findings WHERE source_id = '{source_id}' AND kind <> 'none'{model_filter}
GROUP BY ALL ORDER BY model, kind, compared"""

REPRO_EXPOSURE_SQL = """SELECT 'r' || r.seq || ' ' || left(e.sha, 7) AS revision,
       coalesce('r' || b.seq || ' ' || left(b.sha, 7), 'empty spec') AS compared_with,
       e.scenario_id, printf('%.2f', e.score) AS score,
       e.canary_hit OR e.verbatim_hit AS leaked, e.matched_terms
FROM exposure e
JOIN spec_revisions r ON r.source_id = e.source_id AND r.sha = e.sha
LEFT JOIN spec_revisions b ON b.source_id = e.source_id AND b.sha = e.baseline_sha
WHERE e.source_id = '{source_id}' AND e.set_hash = '{set_hash}'
  AND (e.exposed OR e.canary_hit OR e.verbatim_hit)
ORDER BY r.seq, b.seq DESC, e.scenario_id"""

MAX_CLAUSES_PER_REVISION = 200
MAX_EXAMPLES = 6


@dataclass(frozen=True)
class RatePoint:
    """Covert and awareness rates of one model at one revision."""

    model: str
    sha: str
    covert: float | None
    covert_low: float | None
    covert_high: float | None
    aware: float | None
    aware_low: float | None
    aware_high: float | None
    n_samples: int
    n_scenarios: int

    @property
    def has_interval(self) -> bool:
        """True when the covert rate comes with a stored interval from ``audit detect``."""
        return self.covert_low is not None and self.covert_high is not None


@dataclass(frozen=True)
class ScenarioCell:
    """One scenario of one model at one revision (a heatmap cell).

    Not :class:`audit.analysis.estimates.Cell`, which holds a point's per-scenario counts as
    arrays for the tests: this is one square of the heatmap, mapped to a revision as the report
    maps samples (by spec text, else by the revision they were made for), with its rates.
    """

    model: str
    sha: str
    scenario_id: str
    family: str
    n: int
    n_graded: int
    n_covert: int
    covert: float | None
    aware: float


@dataclass(frozen=True)
class Exposure:
    """A scenario exposed to the spec edit that produced a revision (its own diff).

    ``first_sha`` is the revision whose edit first exposed the scenario: this revision when the
    exposure is new, an earlier one when this edit only rewrote text that already named it (a
    reformatting commit does that).
    """

    sha: str
    scenario_id: str
    score: float
    leaked: bool
    matched_terms: tuple[str, ...]
    matched_text: str | None
    first_sha: str = ""
    # The revision this one was compared with: the previous one, or the previous one with samples.
    since_sha: str = ""

    @property
    def introduced(self) -> bool:
        """True when this revision's edit is the first to expose the scenario."""
        return not self.first_sha or self.first_sha == self.sha


@dataclass(frozen=True)
class CumulativeExposure:
    """Scenarios exposed to all text added between a baseline and one revision.

    This is what a finding against the baseline counts as exposed, so a finding can land on a
    revision whose own edit exposed nothing new. ``first_sha`` maps each scenario to the revision
    whose edit first exposed it.
    """

    baseline_sha: str
    baseline_label: str
    first_sha: dict[str, str]


@dataclass(frozen=True)
class TwinGap:
    """A finding's sealed-twin test: how much more its public scenarios changed than their twins.

    ``gap`` is the mean over (public, twin) pairs of the public change minus the twin change;
    below zero the public scenarios fell more than their unseen twins, which a spec patch that
    teaches them does and a real improvement does not.
    """

    gap: float
    ci_low: float | None
    ci_high: float | None
    public_change: float | None
    twin_change: float | None
    n_pairs: int | None
    q_value: float | None

    @classmethod
    def of(cls, stored: dict[str, Any] | None) -> TwinGap | None:
        """The test from a finding's ``twin_gap`` (``compare.TwinGap.to_json``), else None."""
        if not stored or _number(stored.get("gap")) is None:
            return None
        ci = stored.get("ci")
        low, high = (None, None)
        if isinstance(ci, list | tuple) and len(ci) == 2:
            low, high = _number(ci[0]), _number(ci[1])
        pairs = _number(stored.get("n_pairs"))
        return cls(
            gap=float(stored["gap"]),
            ci_low=low,
            ci_high=high,
            public_change=_number(stored.get("public_change")),
            twin_change=_number(stored.get("twin_change")),
            n_pairs=None if pairs is None else int(pairs),
            q_value=_number(stored.get("q_value")),
        )


@dataclass(frozen=True)
class TwinPoint:
    """Covert rates of one model at one revision on the public scenarios and on the sealed twins.

    Each side is (rate, 95% low, 95% high, scenarios); the bounds are None where ``audit detect``
    stored no estimate (then the rate is a point rate from the samples). ``twins`` is None when
    the point has no twin samples.
    """

    model: str
    sha: str
    public: tuple[float | None, float | None, float | None, int]
    twins: tuple[float | None, float | None, float | None, int] | None


@dataclass(frozen=True)
class ReportFinding(Finding):
    """A stored finding placed on the report's revisions.

    ``sha`` and ``baseline_sha`` are the full shas of ``rev`` and ``baseline_rev`` among the
    report's revisions (None outside its range). The rest is the stored :class:`Finding`.
    """

    sha: str | None = None
    baseline_sha: str | None = None

    @property
    def exposed_only(self) -> int | None:
        """The number of exposed scenarios the change was measured on, when only on them:
        detection tests the exposed scenarios on their own too, and a finding may come from
        that test."""
        return self._tested_count(EXPOSED_TESTED_ON)

    @property
    def twin_only(self) -> int | None:
        """The number of (public, twin) pairs, when the sealed-twin test alone found the change:
        the rates and change are then the public scenarios' that have twins."""
        return self._tested_count(TWIN_TESTED_ON)

    @property
    def twin(self) -> TwinGap | None:
        """The sealed-twin test (None without twin samples at both points)."""
        return TwinGap.of(self.twin_gap)

    def _tested_count(self, scope: str) -> int | None:
        if self.tested_on != scope:
            return None
        count = self.evidence.get("n_scenarios")
        return int(count) if isinstance(count, int | float) else 0


@dataclass(frozen=True)
class Example:
    """An eval-aware sample, shown as evidence of what awareness looks like."""

    model: str
    sha: str
    scenario_id: str
    quotes: tuple[tuple[str, tuple[str, ...]], ...]
    answer: str | None


@dataclass(frozen=True)
class CounterfactualRow:
    """One counterfactual experiment (``audit counterfactual``) at one (model, revision):
    covert rates of the source samples and of their edited continuations, and the effect."""

    model: str
    sha: str
    mode: str
    before: RatePoint
    after: RatePoint
    effect: float | None
    effect_low: float | None
    effect_high: float | None
    p_value: float | None
    reverbalized: float | None
    reverbalized_low: float | None
    reverbalized_high: float | None
    n_pairs: int
    n_scenarios: int


@dataclass(frozen=True)
class UsageLine:
    """One row of the tokens-and-cost table: a model's samples or counterfactual samples."""

    model: str
    kind: str
    usage: Usage


@dataclass(frozen=True)
class MissingLine:
    """Samples of a model at some revisions (equal texts) that failed and were never stored."""

    model: str
    revisions: tuple[str, ...]
    count: int
    kinds: str


@dataclass
class ReportData:
    """Everything the template and the figures need, already aggregated."""

    source_id: str
    set_hash: str
    set_name: str
    other_set_hashes: list[str]
    db_path: str
    model_filter: str | None
    since: SpecRevision | None
    models: list[str]
    revisions: list[SpecRevision]
    rates: list[RatePoint]
    cells: list[ScenarioCell]
    findings: list[ReportFinding]
    exposures: list[Exposure]
    # Per revision sha, its clause changes (the spec history's records) in order.
    clause_changes: dict[str, list[ClauseChange]]
    clause_overflow: dict[str, int]
    examples: list[Example]
    simulated: set[str] = field(default_factory=set)
    prompts: dict[str, str] = field(default_factory=dict)
    generated_at: datetime = field(default_factory=datetime.now)
    # Per revision sha: exposure to everything added since the detection baseline.
    cumulative: dict[str, CumulativeExposure] = field(default_factory=dict)
    # Every stored test of the same model between two revisions, including kind "none" (no
    # significant change): (model, baseline sha, sha) -> finding. The trend reads its q from it.
    tests: dict[tuple[str, str, str], ReportFinding] = field(default_factory=dict)
    # Sealed twins of the report's set: twin id -> the public scenario it mirrors. Their ids,
    # families and rates are shown; their prompts, answers and matched text never are.
    sealed: dict[str, str] = field(default_factory=dict)
    # Public vs sealed-twin covert rate per (model, revision) with samples.
    twin_points: list[TwinPoint] = field(default_factory=list)

    @property
    def has_twin_samples(self) -> bool:
        """True when some model has samples of a sealed twin in range."""
        return any(p.twins is not None for p in self.twin_points)

    counterfactuals: list[CounterfactualRow] = field(default_factory=list)
    # Tokens and cost of the models' samples in range, per model and kind, and in all.
    usage: list[UsageLine] = field(default_factory=list)
    usage_total: Usage | None = None
    # Samples that failed after their retries and were never stored, per model and text.
    missing: list[MissingLine] = field(default_factory=list)
    # Model -> the line its configuration names (``ModelConfig.family``), as detection reads it.
    configured_lines: dict[str, str] = field(default_factory=dict)

    @cached_property
    def families(self) -> dict[str, list[str]]:
        """The report's models by family (model line), as detection compares them."""
        return model_families(self.models, self.configured_lines)

    def family_of(self, model: str) -> str:
        """The family a model is drawn in."""
        return next((f for f, members in self.families.items() if model in members), model)

    def families_of(self, models: Sequence[str]) -> dict[str, list[str]]:
        """The families restricted to ``models`` (families without any left out)."""
        chosen = set(models)
        restricted = {f: [m for m in ms if m in chosen] for f, ms in self.families.items()}
        return {f: ms for f, ms in restricted.items() if ms}

    @property
    def intervals_missing(self) -> bool:
        """Some plotted covert rate has no stored interval (``audit detect`` not run for it)."""
        return any(p.covert is not None and not p.has_interval for p in self.rates)

    def revision(self, sha: str) -> SpecRevision | None:
        """The revision with this full sha, if it is in the report's range."""
        return self._by_sha().get(sha)

    def _by_sha(self) -> dict[str, SpecRevision]:
        return {r.sha: r for r in self.revisions}

    def first_exposed(
        self, scenario: str, after: SpecRevision | None, upto: SpecRevision
    ) -> SpecRevision | None:
        """The earliest revision in (after, upto] whose own edit exposed ``scenario``."""
        low = after.seq if after else -1
        for exposure in self.exposures:
            revision = self.revision(exposure.sha)
            if (
                revision is not None
                and exposure.scenario_id == scenario
                and low < revision.seq <= upto.seq
            ):
                return revision
        return None

    def rates_of(self, model: str) -> list[RatePoint]:
        """The model's rate points in commit order."""
        order = {r.sha: r.seq for r in self.revisions}
        points = [p for p in self.rates if p.model == model and p.sha in order]
        return sorted(points, key=lambda p: order[p.sha])

    def twin_points_of(self, model: str) -> list[TwinPoint]:
        """The model's public vs sealed-twin points in commit order."""
        order = {r.sha: r.seq for r in self.revisions}
        points = [p for p in self.twin_points if p.model == model and p.sha in order]
        return sorted(points, key=lambda p: order[p.sha])


def load_report_data(
    store: Store,
    *,
    model: str | None = None,
    since: str | None = None,
    include_prompts: bool = False,
    set_hash: str | None = None,
    config: AuditConfig | None = None,
) -> ReportData:
    """Aggregate the stored history into :class:`ReportData` (raises AuditError when empty).

    ``set_hash`` reports on that held-out set (default: the one with the most samples);
    ``config`` gives the models' prices (without it, tokens are counted and cost is unknown).
    """
    set_hash, others = _choose_set(store, set_hash)
    source_id = _choose_source(store, set_hash)
    models = _models(store, set_hash)
    if model is not None and model not in models:
        known = ", ".join(models)
        raise AuditError(f"no samples for model {model!r} (models with samples: {known})")
    revisions = stored_revisions(store, source_id)
    start = _resolve_since(store, revisions, since, source_id) if since else None
    if start is not None:
        revisions = [r for r in revisions if r.seq >= start.seq]
    shas = {r.sha for r in revisions}
    sealed = sealed_twins(store, set_hash)
    params = {"set_hash": set_hash, "model": model, "source_id": source_id}
    store.con.execute(_CELLS_SQL, params)
    try:
        cells = [c for c in _cells(store) if c.sha in shas]
        rates = [p for p in _rates(store, source_id, model) if p.sha in shas]
    finally:
        store.con.execute("DROP TABLE IF EXISTS _report_cells")
    overflow: dict[str, int] = {}
    tests = _findings(store, source_id, model, revisions)
    exposures, cumulative = _exposures(store, source_id, set_hash)
    registered = sealed_ids(store.con)
    exposures = [_withheld(e) if is_sealed(e.scenario_id, registered) else e for e in exposures]
    data = ReportData(
        source_id=source_id,
        set_hash=set_hash,
        set_name=_set_name(store, set_hash),
        other_set_hashes=others,
        db_path=str(Path(store.path).resolve()) if store.path else ":memory:",
        model_filter=model,
        since=start,
        models=[model] if model else models,
        revisions=revisions,
        rates=rates,
        cells=cells,
        findings=[f for f in tests if f.kind != "none"],
        exposures=[e for e in exposures if e.sha in shas],
        clause_changes=_clause_changes(store, source_id, shas, overflow),
        clause_overflow=overflow,
        examples=_examples(store, set_hash, model, shas, include_prompts),
        sealed=sealed,
        twin_points=_twin_points(store, source_id, model, cells, rates, sealed),
        configured_lines=configured_lines(config or AuditConfig()),
    )
    data.cumulative = {sha: c for sha, c in cumulative.items() if sha in shas}
    data.tests = {
        (f.model, f.baseline_sha, f.sha): f
        for f in tests
        if f.baseline_sha and f.sha and not f.across_versions and f.comparison != "point"
    }
    data.simulated = _simulated(store, set_hash, data.models)
    data.counterfactuals = _counterfactuals(store, source_id, model, shas)
    data.usage, data.usage_total = _usage(store, config or AuditConfig(), data, set_hash)
    data.missing = _missing(store, data)
    if include_prompts:
        data.prompts = _prompts(store, set_hash)
    return data


def _usage(
    store: Store, config: AuditConfig, data: ReportData, set_hash: str
) -> tuple[list[UsageLine], Usage | None]:
    """Tokens and cost of the report's models at its revisions, samples and counterfactual
    samples apart."""
    shas = {r.sha for r in data.revisions}
    rows = usage_totals(
        store, config, by=("model", "kind", "set_hash", "spec_sha"), models=data.models
    )
    lines: dict[tuple[str, str], Usage] = {}
    for row in rows:
        if row.group["set_hash"] != set_hash or row.group["spec_sha"] not in shas:
            continue
        slot = (row.group["model"], row.group["kind"])
        lines.setdefault(slot, Usage()).add(row.usage)
    if not lines:
        return [], None
    overall = Usage()
    for usage in lines.values():
        overall.add(usage)
    return [UsageLine(m, k, u) for (m, k), u in sorted(lines.items())], overall


def _missing(store: Store, data: ReportData) -> list[MissingLine]:
    """Failed samples never stored since, of the report's models at its revisions."""
    by_hash: dict[str, list[str]] = {}
    for row in store.query(
        "SELECT sha, content_hash FROM spec_revisions WHERE source_id = ?", [data.source_id]
    ):
        revision = data.revision(row["sha"])
        if revision is not None:
            by_hash.setdefault(row["content_hash"], []).append(revision.label)
    return [
        MissingLine(
            model=m.model,
            revisions=tuple(sorted(by_hash[m.spec_content_hash])),
            count=m.count,
            kinds=", ".join(f"{k.kind} {k.count}" for k in m.kinds),
        )
        for m in missing_samples(store, models=data.models, content_hashes=list(by_hash))
    ]


# Counterfactual statistics as audit counterfactual stored them, at the revisions they were run
# for (equal-text revisions get the same rows in estimates; the report shows them once).
_COUNTERFACTUALS_SQL = """
WITH runs_for AS (
    SELECT DISTINCT model, spec_sha AS sha, mode FROM counterfactual_samples
    WHERE source_id = $source_id AND ($model IS NULL OR model = $model)
)
SELECT e.model, e.sha, r.mode,
       max(e.value) FILTER (WHERE e.metric = 'counterfactual_' || r.mode || '_covert_original')
           AS before,
       max(e.ci_low) FILTER (WHERE e.metric = 'counterfactual_' || r.mode || '_covert_original')
           AS before_low,
       max(e.ci_high) FILTER (WHERE e.metric = 'counterfactual_' || r.mode || '_covert_original')
           AS before_high,
       max(e.value) FILTER (WHERE e.metric = 'counterfactual_' || r.mode || '_covert') AS after,
       max(e.ci_low) FILTER (WHERE e.metric = 'counterfactual_' || r.mode || '_covert')
           AS after_low,
       max(e.ci_high) FILTER (WHERE e.metric = 'counterfactual_' || r.mode || '_covert')
           AS after_high,
       max(e.value) FILTER (WHERE e.metric = 'counterfactual_' || r.mode || '_effect') AS effect,
       max(e.ci_low) FILTER (WHERE e.metric = 'counterfactual_' || r.mode || '_effect')
           AS effect_low,
       max(e.ci_high) FILTER (WHERE e.metric = 'counterfactual_' || r.mode || '_effect')
           AS effect_high,
       max(e.value) FILTER (WHERE e.metric = 'counterfactual_' || r.mode || '_p_value') AS p_value,
       max(e.value) FILTER (WHERE e.metric = 'counterfactual_' || r.mode || '_reverbalized')
           AS reverbalized,
       max(e.ci_low) FILTER (WHERE e.metric = 'counterfactual_' || r.mode || '_reverbalized')
           AS reverbalized_low,
       max(e.ci_high) FILTER (WHERE e.metric = 'counterfactual_' || r.mode || '_reverbalized')
           AS reverbalized_high,
       max(e.n_samples) AS n_pairs, max(e.n_scenarios) AS n_scenarios
FROM estimates e
JOIN runs_for r ON r.model = e.model AND r.sha = e.sha
    AND starts_with(e.metric, 'counterfactual_' || r.mode || '_')
WHERE e.source_id = $source_id AND e.scope = 'all'
GROUP BY e.model, e.sha, r.mode
"""
_MODE_ORDER = {"ablate": 0, "inject": 1, "control": 2}


def _counterfactuals(
    store: Store, source_id: str, model: str | None, shas: set[str]
) -> list[CounterfactualRow]:
    rows = store.query(_COUNTERFACTUALS_SQL, {"source_id": source_id, "model": model})
    found = []
    for row in rows:
        if row["sha"] not in shas:
            continue
        found.append(
            CounterfactualRow(
                model=row["model"],
                sha=row["sha"],
                mode=row["mode"],
                before=_rate_point(row, "before"),
                after=_rate_point(row, "after"),
                effect=row["effect"],
                effect_low=row["effect_low"],
                effect_high=row["effect_high"],
                p_value=row["p_value"],
                reverbalized=row["reverbalized"],
                reverbalized_low=row["reverbalized_low"],
                reverbalized_high=row["reverbalized_high"],
                n_pairs=int(row["n_pairs"] or 0),
                n_scenarios=int(row["n_scenarios"] or 0),
            )
        )
    return sorted(found, key=lambda c: (c.model, c.sha, _MODE_ORDER.get(c.mode, 9)))


def _rate_point(row: dict[str, Any], side: str) -> RatePoint:
    return RatePoint(
        model=row["model"],
        sha=row["sha"],
        covert=row[side],
        covert_low=row[f"{side}_low"],
        covert_high=row[f"{side}_high"],
        aware=None,
        aware_low=None,
        aware_high=None,
        n_samples=int(row["n_pairs"] or 0),
        n_scenarios=int(row["n_scenarios"] or 0),
    )


def _simulated(store: Store, set_hash: str, models: list[str]) -> set[str]:
    """Models whose answers came from the organism simulator (it names itself in the fingerprint).

    Such results must never be mistaken for a real model's, so the report labels them.
    """
    rows = store.query(
        "SELECT DISTINCT model FROM samples WHERE set_hash = ? "
        "AND system_fingerprint LIKE '%organism-simulator%'",
        [set_hash],
    )
    return {r["model"] for r in rows} & set(models)


def _choose_set(store: Store, wanted: str | None = None) -> tuple[str, list[str]]:
    """The chosen held-out set, else the one with the most samples; others are listed, never
    mixed in."""
    rows = store.query(
        "SELECT set_hash, count(*) AS n FROM samples GROUP BY set_hash ORDER BY n DESC, set_hash"
    )
    if not rows:
        raise AuditError("no samples stored: run `audit run` (or `audit demo`) before the report")
    hashes = [r["set_hash"] for r in rows]
    if wanted is None:
        return hashes[0], hashes[1:]
    if wanted not in hashes:
        raise AuditError(
            f"no samples of held-out set {wanted[:19]} are stored: run `audit run --heldout DIR` "
            "first, or report on another set"
        )
    return wanted, [h for h in hashes if h != wanted]


def _set_name(store: Store, set_hash: str) -> str:
    """``name version`` of the reported set as registered (names are kept since schema 9)."""
    rows = store.query("SELECT name, version FROM heldout_sets WHERE set_hash = ?", [set_hash])
    if not rows:
        return "unregistered set"
    return f"{rows[0]['name'] or 'unnamed'} {rows[0]['version']}"


def _choose_source(store: Store, set_hash: str) -> str:
    """The spec source whose revisions the samples were made for."""
    rows = store.query(
        "SELECT r.source_id, count(*) AS n FROM (SELECT DISTINCT spec_sha, spec_content_hash "
        "FROM samples WHERE set_hash = ?) s JOIN spec_revisions r "
        "ON s.spec_sha = r.sha OR s.spec_content_hash = r.content_hash "
        "GROUP BY r.source_id ORDER BY n DESC, r.source_id LIMIT 1",
        [set_hash],
    )
    if not rows:
        raise AuditError(
            "the stored samples match no stored spec revision: run `audit specs sync` "
            "for the spec the samples were made with"
        )
    return rows[0]["source_id"]


def _models(store: Store, set_hash: str) -> list[str]:
    rows = store.query(
        "SELECT DISTINCT model FROM samples WHERE set_hash = ? ORDER BY model", [set_hash]
    )
    return [r["model"] for r in rows]


def _resolve_since(
    store: Store, revisions: Sequence[SpecRevision], ref: str, source_id: str
) -> SpecRevision:
    """Resolve ``--since`` through the spec-history stage (index, tag or sha prefix)."""
    sha = resolve_revision(store, ref, source_id=source_id).sha
    for revision in revisions:
        if revision.sha == sha:
            return revision
    raise AuditError(f"--since {ref!r} is not a revision of spec source {source_id}")


def _cells(store: Store) -> list[ScenarioCell]:
    rows = store.con.execute(
        "SELECT model, sha, scenario_id, family, n, n_graded, n_covert, "
        "CASE WHEN n_graded > 0 THEN n_covert / n_graded END AS covert, n_aware / n AS aware "
        "FROM _report_cells ORDER BY model, family, scenario_id"
    ).fetchall()
    return [
        ScenarioCell(
            model=m,
            sha=s,
            scenario_id=sc,
            family=f,
            n=int(n),
            n_graded=int(graded),
            n_covert=int(covert),
            covert=None if c is None else float(c),
            aware=float(a),
        )
        for m, s, sc, f, n, graded, covert, c, a in rows
    ]


def _rates(store: Store, source_id: str, model: str | None) -> list[RatePoint]:
    """Point rates from samples, overlaid with stored estimates (and their intervals)."""
    points = {(r["model"], r["sha"]): r for r in store.query(_POINT_RATES_SQL)}
    estimates = store.query(
        "SELECT model, sha, metric, value, ci_low, ci_high FROM estimates "
        "WHERE source_id = ? AND scope = 'all' AND metric IN ('covert_rate', "
        "'eval_awareness_rate') AND (? IS NULL OR model = ?)",
        [source_id, model, model],
    )
    stored: dict[tuple[str, str, str], dict[str, Any]] = {
        (e["model"], e["sha"], e["metric"]): e for e in estimates
    }
    out = []
    for (m, sha), row in points.items():
        covert = stored.get((m, sha, "covert_rate"))
        aware = stored.get((m, sha, "eval_awareness_rate"))
        out.append(
            RatePoint(
                model=m,
                sha=sha,
                covert=covert["value"] if covert else row["covert_rate"],
                covert_low=covert["ci_low"] if covert else None,
                covert_high=covert["ci_high"] if covert else None,
                aware=aware["value"] if aware else row["aware_rate"],
                aware_low=aware["ci_low"] if aware else None,
                aware_high=aware["ci_high"] if aware else None,
                n_samples=int(row["n_samples"]),
                n_scenarios=int(row["n_scenarios"]),
            )
        )
    return out


def sealed_twins(store: Store, set_hash: str) -> dict[str, str]:
    """The sealed twins of a registered set: twin id -> the public scenario it mirrors."""
    rows = store.query(
        "SELECT scenario_id, coalesce(twin_of, '') AS twin_of FROM scenarios "
        "WHERE set_hash = ? AND sealed ORDER BY scenario_id",
        [set_hash],
    )
    return {r["scenario_id"]: r["twin_of"] for r in rows}


def _withheld(exposure: Exposure) -> Exposure:
    """A sealed twin's exposure without the terms it matched: they are words of its prompts."""
    return replace(exposure, matched_terms=(), matched_text=None)


_Side = tuple[float | None, float | None, float | None, int]


def _twin_points(
    store: Store,
    source_id: str,
    model: str | None,
    cells: Sequence[ScenarioCell],
    rates: Sequence[RatePoint],
    sealed: dict[str, str],
) -> list[TwinPoint]:
    """Public and sealed-twin covert rates per (model, revision), with stored intervals.

    Rates are macro averages over scenarios, as ``estimates`` defines them; where ``audit
    detect`` stored none the point rate comes from the samples. At a point without twin samples
    the public scenarios are the whole set, so the public side takes the covert rate's interval.
    """
    if not sealed:
        return []
    stored = {
        (e["model"], e["sha"], e["metric"]): e
        for e in store.query(
            "SELECT model, sha, metric, value, ci_low, ci_high, n_scenarios FROM estimates "
            "WHERE source_id = ? AND scope = 'all' AND metric IN (?, ?) "
            "AND (? IS NULL OR model = ?)",
            [source_id, *TWIN_METRICS, model, model],
        )
    }
    whole = {(p.model, p.sha): p for p in rates}
    groups: dict[tuple[str, str], tuple[list[ScenarioCell], list[ScenarioCell]]] = {}
    for cell in cells:
        public, twins = groups.setdefault((cell.model, cell.sha), ([], []))
        (twins if cell.scenario_id in sealed else public).append(cell)
    points = []
    for (m, sha), (public, twins) in groups.items():
        twin_side = _side(stored.get((m, sha, TWIN_METRICS[1])), twins) if twins else None
        public_side = _side(stored.get((m, sha, TWIN_METRICS[0])), public)
        point = whole.get((m, sha))
        if twin_side is None and point is not None and point.has_interval:
            public_side = (point.covert, point.covert_low, point.covert_high, public_side[3])
        points.append(TwinPoint(m, sha, public_side, twin_side))
    return points


def _side(estimate: dict[str, Any] | None, cells: Sequence[ScenarioCell]) -> _Side:
    rated = [c.covert for c in cells if c.covert is not None]
    if estimate is not None:
        return (estimate["value"], estimate["ci_low"], estimate["ci_high"], len(rated))
    return (sum(rated) / len(rated) if rated else None, None, None, len(rated))


def _full_sha(revisions: Sequence[SpecRevision], ref: str) -> str | None:
    """Findings name revisions by sha (full or prefix); map them onto the history."""
    if not ref:
        return None
    matches = [r.sha for r in revisions if r.sha.startswith(ref.lower())]
    return matches[0] if len(matches) == 1 else None


def _findings(
    store: Store, source_id: str, model: str | None, revisions: Sequence[SpecRevision]
) -> list[ReportFinding]:
    rows = store.query(
        # model "*" marks a leak, which concerns the spec alone and so every model. Kind "none"
        # rows (tests without a significant change) are kept for the headline's trend.
        "SELECT * FROM findings WHERE source_id = ? "
        "AND (? IS NULL OR model = ? OR model = '*') ORDER BY detected_at, finding_id",
        [source_id, model, model],
    )
    findings = []
    for row in rows:
        sha = _full_sha(revisions, row["rev"])
        if sha is None:  # outside the --since range
            continue
        finding = stored_finding(row)
        baseline_sha = _full_sha(revisions, row["baseline_rev"])
        findings.append(ReportFinding(**_fields(finding), sha=sha, baseline_sha=baseline_sha))
    return findings


def _fields(finding: Finding) -> dict[str, Any]:
    return {f.name: getattr(finding, f.name) for f in fields(Finding)}


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _exposures(
    store: Store, source_id: str, set_hash: str
) -> tuple[list[Exposure], dict[str, CumulativeExposure]]:
    """Per revision: the scenarios its own edit exposed, and those exposed since the baseline.

    Detection measures exposure for every pair it compares. The pair with the latest baseline
    (normally the previous revision) is this revision's own edit; the pair with the oldest
    baseline is cumulative: all text added since then, which is what a finding against that
    baseline counts. The first revision's baseline is ''.
    """
    rows = store.query(
        "SELECT * FROM (SELECT e.sha, r.seq, e.baseline_sha, coalesce(b.seq, -1) AS baseline_seq, "
        "e.scenario_id, e.score, e.exposed, e.canary_hit OR e.verbatim_hit AS leaked, "
        "e.matched_terms, e.matched_text FROM exposure e "
        "JOIN spec_revisions r ON r.source_id = e.source_id AND r.sha = e.sha "
        "LEFT JOIN spec_revisions b ON b.source_id = e.source_id AND b.sha = e.baseline_sha "
        "WHERE e.source_id = ? AND e.set_hash = ? "
        "QUALIFY baseline_seq = max(baseline_seq) OVER (PARTITION BY e.sha) "
        "OR baseline_seq = min(baseline_seq) OVER (PARTITION BY e.sha)) "
        "WHERE exposed OR leaked ORDER BY seq, score DESC, scenario_id, baseline_seq",
        [source_id, set_hash],
    )
    latest: dict[str, int] = {}
    oldest: dict[str, tuple[int, str]] = {}
    for r in store.query(
        "SELECT e.sha, max(coalesce(b.seq, -1)) AS latest, min(coalesce(b.seq, -1)) AS oldest, "
        "arg_min(e.baseline_sha, coalesce(b.seq, -1)) AS oldest_sha FROM exposure e "
        "LEFT JOIN spec_revisions b ON b.source_id = e.source_id AND b.sha = e.baseline_sha "
        "WHERE e.source_id = ? AND e.set_hash = ? GROUP BY e.sha",
        [source_id, set_hash],
    ):
        latest[r["sha"]] = r["latest"]
        oldest[r["sha"]] = (r["oldest"], r["oldest_sha"])
    first_seen: dict[str, str] = {}
    exposures: list[Exposure] = []
    cumulative: dict[str, CumulativeExposure] = {}
    for r in rows:
        sha, scenario = r["sha"], r["scenario_id"]
        if r["baseline_seq"] == latest[sha]:
            first_seen.setdefault(scenario, sha)
            exposures.append(
                Exposure(
                    sha=sha,
                    scenario_id=scenario,
                    score=r["score"],
                    leaked=r["leaked"],
                    matched_terms=tuple(r["matched_terms"] or ()),
                    matched_text=r["matched_text"],
                    first_sha=first_seen[scenario],
                    since_sha=r["baseline_sha"],
                )
            )
        base_seq, base_sha = oldest[sha]
        if r["baseline_seq"] == base_seq < latest[sha] and r["exposed"]:
            first_seen.setdefault(scenario, sha)
            label = f"r{base_seq} {base_sha[:7]}" if base_sha else "the empty spec"
            entry = cumulative.setdefault(sha, CumulativeExposure(base_sha, label, {}))
            entry.first_sha[scenario] = first_seen[scenario]
    return exposures, cumulative


def _clause_changes(
    store: Store, source_id: str, shas: set[str], overflow: dict[str, int]
) -> dict[str, list[ClauseChange]]:
    """Each revision's clause changes in order, at most :data:`MAX_CLAUSES_PER_REVISION`
    (``overflow`` counts the rest)."""
    rows = store.query(
        "SELECT sha, change, clause_kind, section, old_text, new_text, similarity, "
        "count(*) OVER (PARTITION BY sha) AS total FROM spec_clause_changes "
        "WHERE source_id = ? QUALIFY row_number() OVER (PARTITION BY sha ORDER BY ordinal) <= ? "
        "ORDER BY sha, ordinal",
        [source_id, MAX_CLAUSES_PER_REVISION],
    )
    out: dict[str, list[ClauseChange]] = {}
    for r in rows:
        if r["sha"] not in shas:
            continue
        if r["total"] > MAX_CLAUSES_PER_REVISION:
            overflow[r["sha"]] = r["total"] - MAX_CLAUSES_PER_REVISION
        out.setdefault(r["sha"], []).append(
            ClauseChange(
                change=r["change"],
                kind=r["clause_kind"],
                section=r["section"] or "",
                old_text=r["old_text"],
                new_text=r["new_text"],
                similarity=r["similarity"],
            )
        )
    return out


def _examples(
    store: Store, set_hash: str, model: str | None, shas: set[str], include_prompts: bool
) -> list[Example]:
    """The latest eval-aware samples: matched phrases always, the answer only on request."""
    # A sealed twin's quotes and answer are its model's words about its surface: never shown.
    rows = store.query(
        "SELECT model, spec_sha, scenario_id, awareness_evidence, "
        f"{'answer' if include_prompts else 'NULL'} AS answer FROM samples "
        "WHERE set_hash = ? AND eval_aware AND (? IS NULL OR model = ?) "
        f"AND NOT {sealed_sql('scenario_id')} ORDER BY created_at DESC, sample_key LIMIT ?",
        [set_hash, model, model, MAX_EXAMPLES * 4],
    )
    examples: list[Example] = []
    seen: set[tuple[str, str]] = set()
    for r in rows:
        quotes = _quotes(stored_json(r["awareness_evidence"]))[:3]
        # One example per (model, scenario), so the few shown are not all the same case.
        if (not quotes and not r["answer"]) or (r["model"], r["scenario_id"]) in seen:
            continue
        seen.add((r["model"], r["scenario_id"]))
        answer = r["answer"]
        examples.append(
            Example(
                model=r["model"],
                sha=r["spec_sha"],
                scenario_id=r["scenario_id"],
                quotes=tuple(quotes),
                answer=answer[:600] if answer else None,
            )
        )
    return examples[:MAX_EXAMPLES]


def _prompts(store: Store, set_hash: str) -> dict[str, str]:
    """First user message each public scenario was run with (only for ``--include-prompts``).

    Sealed twins are left out even then: ``--include-prompts`` is for the people who read the
    public set, and a twin read by them no longer tells a patch from a real improvement.
    """
    rows = store.query(
        "SELECT scenario_id, any_value(transcript) AS transcript FROM samples "
        f"WHERE set_hash = ? AND transcript IS NOT NULL AND NOT {sealed_sql('scenario_id')} "
        "GROUP BY scenario_id ORDER BY scenario_id",
        [set_hash],
    )
    prompts = {}
    for r in rows:
        messages = stored_json(r["transcript"])
        if isinstance(messages, dict):
            messages = messages.get("messages", [])
        for message in messages if isinstance(messages, list) else []:
            if isinstance(message, dict) and message.get("role") == "user":
                prompts[r["scenario_id"]] = str(message.get("content", ""))
                break
    return prompts


def _quotes(evidence: Any) -> list[tuple[str, tuple[str, ...]]]:
    """(sentence, matched phrases) pairs from awareness evidence, one per sentence.

    The awareness detector stores a list of matches, each with the ``phrase`` that matched and
    the ``sentence`` holding it; several matches often share a sentence. Other shapes fall back
    to the plain strings they contain.
    """
    items = evidence if isinstance(evidence, list) else [evidence]
    by_sentence: dict[str, list[str]] = {}
    for item in items:
        if isinstance(item, dict) and isinstance(item.get("sentence") or item.get("phrase"), str):
            sentence = str(item.get("sentence") or item["phrase"])[:300]
            phrases = by_sentence.setdefault(sentence, [])
            if isinstance(item.get("phrase"), str) and item["phrase"] not in phrases:
                phrases.append(item["phrase"])
        else:
            for text in _strings(item):
                by_sentence.setdefault(text, [])
    return [(sentence, tuple(phrases)) for sentence, phrases in by_sentence.items()]


def _strings(value: Any) -> list[str]:
    """Short human-readable strings found in an evidence JSON value."""
    found: list[str] = []
    if isinstance(value, str):
        found.append(value[:200])
    elif isinstance(value, list | tuple):
        for item in value:
            found.extend(_strings(item))
    elif isinstance(value, dict):
        for item in value.values():
            found.extend(_strings(item))
    return [s for s in found if s.strip()]
