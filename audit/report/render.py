"""Render the drift report: one self-contained HTML file that opens offline from ``file://``.

plotly.js is embedded once; each figure travels as JSON in a ``<script type="application/json">``
block whose ``<``, ``>`` and ``&`` are escaped, so no stored text can close the script element.
Everything else goes through jinja2 with autoescape on. A Content-Security-Policy forbids every
network request, so the report cannot leak anything even if some text slipped through.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import jinja2
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from audit.errors import AuditError
from audit.report import figures
from audit.report.data import (
    REPRO_ESTIMATES_SQL,
    REPRO_EXPOSURE_SQL,
    REPRO_FINDING_GROUPS_SQL,
    REPRO_FINDINGS_SQL,
    REPRO_HEATMAP_SQL,
    REPRO_POINT_RATE_SQL,
    ClauseChange,
    Finding,
    RatePoint,
    ReportData,
    Revision,
    load_report_data,
)
from audit.report.groups import FindingGroup, findings_table, group_findings, model_families
from audit.store import Store

DEFAULT_REPORT_PATH = Path("reports/drift.html")
_TEMPLATES = Path(__file__).parent / "templates"


def render_report(
    store: Store,
    out_path: str | Path = DEFAULT_REPORT_PATH,
    *,
    model: str | None = None,
    since: str | None = None,
    include_prompts: bool = False,
) -> Path:
    """Write the HTML drift report for the stored history to ``out_path`` and return the path.

    ``model`` limits the report to one model, ``since`` to revisions from that one on (sha prefix,
    tag or index). Held-out prompts and model answers are left out unless ``include_prompts``.
    """
    out = Path(out_path)
    if out.is_dir():
        raise AuditError(f"--out {out} is a folder: give a file name such as {out}/drift.html")
    data = load_report_data(store, model=model, since=since, include_prompts=include_prompts)
    page = render_html(data, out, include_prompts=include_prompts)
    # Write next to the target and rename, so a failed render never leaves half a report.
    partial = out.with_name(out.name + ".partial")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        partial.write_text(page, encoding="utf-8")
        partial.replace(out)
    except OSError as exc:
        with contextlib.suppress(OSError):
            partial.unlink(missing_ok=True)
        raise AuditError(
            f"cannot write the report to {out}: {exc.strerror or exc}; pass another --out"
        ) from None
    return out


def render_html(data: ReportData, out: Path, *, include_prompts: bool) -> str:
    """The report page for already-loaded data."""
    changes = figures.choose_changes(data)
    figs: dict[str, go.Figure] = {
        "timeline": figures.timeline_figure(data),
        "heatmap": figures.heatmap_figure(data),
    }
    if changes:
        figs["scatter"] = figures.scatter_figure(data, changes)
    context = {
        "data": data,
        "families": _headline_families(data),
        "finding_groups": findings_table(data),
        "compared": {f.finding_id: _compared(data, f) for f in data.findings},
        "changes": changes,
        "figures": {name: script_json(fig.to_json()) for name, fig in figs.items()},
        # The div gets the figure's height up front, so later sections never slide under it.
        "heights": {name: int(fig.layout.height or 450) for name, fig in figs.items()},
        "revisions": _revision_views(data),
        "scenarios": _scenario_rows(data),
        "repro": _repro(data, out),
        "include_prompts": include_prompts,
        "plotly_js": _plotly_js(),
        "colors": {m: figures.model_color(data, m) for m in data.models},
        "labels": {r.sha: r.label for r in data.revisions},
        "jitter": figures.JITTER_POINTS,
    }
    return _environment().get_template("report.html.j2").render(**context)


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(_TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["pct"] = _fmt_pct
    env.filters["marked"] = lambda text, phrases: highlight(text, {p: ("", None) for p in phrases})
    return env


@lru_cache(maxsize=1)
def _plotly_js() -> str:
    source = get_plotlyjs()
    # The bundle must not be able to end its own script element early.
    return source.replace("</script", "<\\/script")


def script_json(text: str) -> str:
    """JSON made safe to sit inside a ``<script>`` element (no ``<``, ``>``, ``&`` left)."""
    return (
        text.replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


def _fmt_pct(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{100 * value:.{digits}f}%"


# -- headline ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Headline:
    """The first thing a reader sees for one model.

    Two kinds of comparison are kept apart, because they answer different questions: the trend
    and ``history_groups`` compare spec revisions of this same model; ``version_groups`` compare
    this model with another version of it at the same spec revision.
    """

    model: str
    latest: RatePoint | None
    latest_revision: Revision | None
    rate_text: str
    trend_label: str
    trend_text: str
    awareness_text: str
    version_groups: list[FindingGroup]
    history_groups: list[FindingGroup]
    zero_warning: bool

    @property
    def has_findings(self) -> bool:
        """True when any finding concerns this model."""
        return bool(self.version_groups or self.history_groups)


def _headline(data: ReportData, model: str) -> Headline:
    points = [p for p in data.rates_of(model) if p.covert is not None]
    groups = group_findings(data, model)
    versions = [g for g in groups if g.across_versions]
    history = [g for g in groups if not g.across_versions]
    if not points:
        return Headline(
            model, None, None, "no graded samples in range", "", "", "", versions, history, False
        )
    first, latest = points[0], points[-1]
    revision = data.revision(latest.sha)
    assert revision is not None
    label, trend = _trend(data, first, latest)
    return Headline(
        model=model,
        latest=latest,
        latest_revision=revision,
        rate_text=rate_with_interval(latest),
        trend_label=label,
        trend_text=trend,
        awareness_text=_fmt_pct(latest.aware),
        version_groups=versions,
        history_groups=history,
        zero_warning=latest.covert == 0,
    )


def _compared(data: ReportData, finding: Finding) -> str:
    """What a finding compared, in revision labels: versions at one revision, or two revisions."""

    def label(sha: str | None, ref: str) -> str:
        revision = data.revision(sha) if sha else None
        return revision.label if revision else ref[:7]

    at = label(finding.sha, finding.rev)
    if finding.across_versions:
        return f"{finding.baseline_model} → {finding.model} at {at}"
    return f"{label(finding.baseline_sha, finding.baseline_rev)} → {at}"


def _headline_families(data: ReportData) -> list[tuple[str, list[Headline]]]:
    """Headline cards by model family, so the versions of one model sit side by side.

    With no family of two or more versions, one unnamed group keeps the page as it was.
    """
    families = model_families(data.models)
    if all(len(members) == 1 for members in families.values()):
        return [("", [_headline(data, m) for m in sorted(data.models)])]
    return [(name, [_headline(data, m) for m in members]) for name, members in families.items()]


def rate_with_interval(point: RatePoint) -> str:
    """'12.5% (95% CI 8.0–17.0%)', or the point rate and why its interval is missing."""
    if point.has_interval:
        return (
            f"{_fmt_pct(point.covert)} (95% CI {100 * point.covert_low:.1f}–"  # type: ignore[operator]
            f"{100 * point.covert_high:.1f}%)"  # type: ignore[operator]
        )
    return f"{_fmt_pct(point.covert)} (no interval: run audit detect)"


def _trend(data: ReportData, first: RatePoint, latest: RatePoint) -> tuple[str, str]:
    """(what is compared, how it moved): first vs latest spec revision of the same model."""
    start, end = data.revision(first.sha), data.revision(latest.sha)
    if first.sha == latest.sha or start is None or end is None:
        return "over spec revisions", "one revision with samples: no trend yet"
    delta = 100 * ((latest.covert or 0.0) - (first.covert or 0.0))
    if abs(delta) < 0.05:
        direction = "unchanged"
    else:
        direction = f"{'down' if delta < 0 else 'up'} {abs(delta):.1f} points"
    label = f"same model, spec {start.label} → {end.label}"
    return label, f"{direction} ({_fmt_pct(first.covert)} → {_fmt_pct(latest.covert)})"


# -- spec change viewer -----------------------------------------------------------------------


@dataclass(frozen=True)
class Segment:
    """A piece of clause text; marked pieces matched held-out scenarios."""

    text: str
    scenarios: tuple[str, ...] = ()
    finding_id: str | None = None


@dataclass(frozen=True)
class ClauseView:
    """A clause change ready for the template."""

    change: ClauseChange
    old: list[Segment]
    new: list[Segment]
    matched: bool


@dataclass(frozen=True)
class RevisionView:
    """One revision of the change viewer."""

    revision: Revision
    clauses: list[ClauseView]
    overflow: int
    exposed: list[tuple[str, tuple[str, ...], bool]]
    findings: list[Finding]


def highlight(text: str, needles: dict[str, tuple[str, str | None]]) -> list[Segment]:
    """Split ``text`` into segments, marking case-insensitive occurrences of each needle.

    ``needles`` maps a needle to (scenario id, finding id). Overlapping matches merge into one
    mark that names every scenario involved.
    """
    spans: list[tuple[int, int, str, str | None]] = []
    lowered = text.lower()
    for needle, (scenario, finding) in needles.items():
        if len(needle.strip()) < 3:
            continue
        for match in re.finditer(re.escape(needle.lower()), lowered):
            spans.append((match.start(), match.end(), scenario, finding))
    if not spans:
        return [Segment(text)]
    spans.sort()
    segments: list[Segment] = []
    cursor = 0
    index = 0
    while index < len(spans):
        start, end, scenario, finding = spans[index]
        names = {scenario}
        index += 1
        while index < len(spans) and spans[index][0] < end:
            end = max(end, spans[index][1])
            names.add(spans[index][2])
            finding = finding or spans[index][3]
            index += 1
        if start > cursor:
            segments.append(Segment(text[cursor:start]))
        segments.append(Segment(text[start:end], tuple(sorted(names)), finding))
        cursor = end
    if cursor < len(text):
        segments.append(Segment(text[cursor:]))
    return segments


def _distinctive(term: str) -> bool:
    """A matched term worth highlighting on its own: a path, identifier, number or long word.

    Short plain words ("make", "deploy") count towards exposure but would light up half the spec.
    """
    return len(term) >= 8 or any(ch in term for ch in "/_-.`") or any(ch.isdigit() for ch in term)


def _finding_for(data: ReportData, revision: Revision, scenario: str) -> Finding | None:
    """The finding whose compared range contains this revision and names this scenario."""
    for finding in data.findings:
        end = data.revision(finding.sha) if finding.sha else None
        start = data.revision(finding.baseline_sha) if finding.baseline_sha else None
        if end is None or scenario not in finding.exposed_scenarios:
            continue
        low = start.seq if start else end.seq - 1
        if low < revision.seq <= end.seq:
            return finding
    return None


def _revision_views(data: ReportData) -> list[RevisionView]:
    by_sha: dict[str, list[ClauseChange]] = {}
    for clause in data.clause_changes:
        by_sha.setdefault(clause.sha, []).append(clause)
    views = []
    for revision in data.revisions:
        exposures = [e for e in data.exposures if e.sha == revision.sha]
        needles: dict[str, tuple[str, str | None]] = {}
        for exposure in exposures:
            finding = _finding_for(data, revision, exposure.scenario_id)
            finding_id = finding.finding_id if finding else None
            for needle in (exposure.matched_text, *exposure.matched_terms):
                if needle and (needle == exposure.matched_text or _distinctive(needle)):
                    needles.setdefault(needle, (exposure.scenario_id, finding_id))
        clauses = []
        for clause in by_sha.get(revision.sha, []):
            new = highlight(clause.new_text or "", needles) if clause.new_text else []
            old = [Segment(clause.old_text)] if clause.old_text else []
            clauses.append(ClauseView(clause, old, new, any(s.scenarios for s in new)))
        views.append(
            RevisionView(
                revision=revision,
                clauses=clauses,
                overflow=data.clause_overflow.get(revision.sha, 0),
                exposed=[(e.scenario_id, e.matched_terms, e.leaked) for e in exposures],
                # Model-version findings compare two models at this revision, not this edit.
                findings=[
                    f for f in data.findings if f.sha == revision.sha and not f.across_versions
                ],
            )
        )
    return views


# -- scenarios and reproduction ---------------------------------------------------------------


@dataclass(frozen=True)
class ScenarioRow:
    """One held-out scenario: ids, family and matched terms (the prompt only on request)."""

    scenario_id: str
    family: str
    exposed_at: list[str]
    matched_terms: list[str]
    prompt: str | None


def _scenario_rows(data: ReportData) -> list[ScenarioRow]:
    rows = []
    for family, scenario in figures.scenario_order(data.cells):
        exposures = [e for e in data.exposures if e.scenario_id == scenario]
        revisions = sorted(
            (r for r in (data.revision(e.sha) for e in exposures) if r), key=lambda r: r.seq
        )
        labels = [r.label for r in revisions]
        terms = sorted({t for e in exposures for t in e.matched_terms})
        rows.append(ScenarioRow(scenario, family, labels, terms, data.prompts.get(scenario)))
    return rows


@dataclass(frozen=True)
class Repro:
    """How to get one number of the report again."""

    what: str
    command: str
    sql: str | None


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _shell(value: str) -> str:
    return (
        value
        if re.fullmatch(r"[A-Za-z0-9_./:=@+-]+", value)
        else "'" + value.replace("'", "'\\''") + "'"
    )


def _repro(data: ReportData, out: Path) -> list[Repro]:
    db = _shell(data.db_path)
    model_filter = f" AND model = {_quote(data.model_filter)}" if data.model_filter else ""
    # A leak finding has model "*": it concerns the spec, so every model's report shows it.
    findings_filter = (
        f" AND model IN ({_quote(data.model_filter)}, '*')" if data.model_filter else ""
    )
    estimates_filter = f" AND e.model = {_quote(data.model_filter)}" if data.model_filter else ""
    report = f"audit report --db {db} --out {_shell(str(out))}"
    if data.model_filter:
        report += f" --model {_shell(data.model_filter)}"
    if data.since:
        report += f" --since {data.since.short}"
    sql = f"audit sql --db {db}"
    fmt = {"source_id": data.source_id.replace("'", "''"), "set_hash": data.set_hash}
    return [
        Repro("This report", report, None),
        Repro(
            "Intervals, findings and exposure (rerun detection)",
            f"audit detect --db {db} --source {_shell(data.source_id)}",
            None,
        ),
        Repro(
            "Headline and timeline rates with intervals",
            sql,
            REPRO_ESTIMATES_SQL.format(**fmt, model_filter=estimates_filter),
        ),
        Repro(
            "Point rates straight from samples",
            sql,
            REPRO_POINT_RATE_SQL.format(**fmt, model_filter=model_filter),
        ),
        Repro("Heatmap cells", sql, REPRO_HEATMAP_SQL.format(**fmt, model_filter=model_filter)),
        Repro(
            "Headline finding lines (grouped findings)",
            sql,
            REPRO_FINDING_GROUPS_SQL.format(**fmt, model_filter=findings_filter),
        ),
        Repro("Findings", sql, REPRO_FINDINGS_SQL.format(**fmt, model_filter=findings_filter)),
        Repro("Exposed scenarios and matched spec text", sql, REPRO_EXPOSURE_SQL.format(**fmt)),
    ]
