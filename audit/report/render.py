"""Render the drift report: one self-contained HTML file that opens offline from ``file://``.

plotly.js (its cartesian bundle, vendored) is embedded once; each figure travels as JSON in a
``<script type="application/json">`` block whose ``<``, ``>`` and ``&`` are escaped, so no stored
text can close the script element. Everything else goes through jinja2 with autoescape on. A
Content-Security-Policy allows exactly the page's own two scripts (by their sha256 hashes) and
forbids every network request, so text that slipped through could neither run nor leak anything.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import re
import shlex
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import jinja2
import plotly.graph_objects as go
from markupsafe import Markup, escape
from plotly.offline import get_plotlyjs, get_plotlyjs_version

from audit.config import AuditConfig
from audit.errors import AuditError
from audit.records import SpecRevision
from audit.report import figures
from audit.report.data import (
    REPRO_ESTIMATES_SQL,
    REPRO_EXPOSURE_SQL,
    REPRO_FINDING_GROUPS_SQL,
    REPRO_FINDINGS_SQL,
    REPRO_HEATMAP_SQL,
    REPRO_POINT_RATE_SQL,
    REPRO_TWINS_SQL,
    CumulativeExposure,
    Exposure,
    RatePoint,
    ReportData,
    ReportFinding,
    load_report_data,
)
from audit.report.groups import (
    FindingGroup,
    findings_table,
    group_findings,
    twin_text,
)
from audit.spec_history import ClauseChange
from audit.store import Store

DEFAULT_REPORT_PATH = Path("reports/drift.html")
_TEMPLATES = Path(__file__).parent / "templates"
# See vendor/README.md for where it comes from and how to refresh it.
PLOTLY_BUNDLE = Path(__file__).parent / "vendor" / "plotly-cartesian-4.1.1.min.js"
PLOTLY_BUNDLE_VERSION = "4.1.1"
# Up to this many revisions, the change viewer unfolds every revision that exposed a scenario.
_OPEN_EXPOSED_UP_TO = 30
# Kinds of finding that are a significant change (kind "none" is a test without one).
_SIGNIFICANT = ("drop", "regression", "collapse")


def render_report(
    store: Store,
    out_path: str | Path = DEFAULT_REPORT_PATH,
    *,
    model: str | None = None,
    since: str | None = None,
    include_prompts: bool = False,
    set_hash: str | None = None,
    config: AuditConfig | None = None,
) -> Path:
    """Write the HTML drift report for the stored history to ``out_path`` and return the path.

    ``model`` limits the report to one model, ``since`` to revisions from that one on (sha prefix,
    tag or index), ``set_hash`` to one held-out set (default: the one with the most samples);
    ``config`` gives the models' prices for the cost table.
    Held-out prompts and model answers are left out unless ``include_prompts``; a sealed twin's
    text (prompts, answers, reasoning quotes, the terms an edit matched in it) is left out even
    then.
    """
    out = Path(out_path)
    if out.is_dir():
        raise AuditError(f"--out {out} is a folder: give a file name such as {out}/drift.html")
    data = load_report_data(
        store,
        model=model,
        since=since,
        include_prompts=include_prompts,
        set_hash=set_hash,
        config=config,
    )
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
    figs: dict[str, go.Figure] = {"timeline": figures.timeline_figure(data)}
    coverage = twin_coverage(data)
    twins_menu = figures.menu_for(data, coverage.models)
    if coverage.models:
        figs["twins"] = figures.twins_figure(data)
    figs["heatmap"] = figures.heatmap_figure(data)
    if changes:
        figs["scatter"] = figures.scatter_figure(data, changes)
    scripts = {"plotly": _plotly_js(), "loader": _loader_js()}
    families = _headline_families(data)
    context = {
        "data": data,
        "families": families,
        # Families side by side use the whole width: as many columns as the largest family.
        "card_columns": max((len(h) for name, h in families if name), default=0),
        "finding_groups": findings_table(data),
        "compared": {f.finding_id: _compared(data, f) for f in data.findings},
        "exposure_notes": {f.finding_id: exposure_note(data, f) for f in data.findings},
        "twin_notes": {f.finding_id: twin_text(f) for f in data.findings},
        "twins": coverage,
        "twins_menu": twins_menu,
        "twins_opening": figures.twins_opening(data, twins_menu)[1],
        "changes": changes,
        "figures": {name: script_json(fig.to_json()) for name, fig in figs.items()},
        # The div gets the figure's height up front, so later sections never slide under it.
        "heights": {name: int(fig.layout.height or 450) for name, fig in figs.items()},
        "timeline_menu": figures.timeline_menu(data),
        "max_bands": figures.MAX_BANDS,
        "heatmap_model": figures.heatmap_first_model(data),
        "revisions": _revision_views(data),
        "scenarios": _scenario_rows(data),
        "repro": _repro(data, out),
        "include_prompts": include_prompts,
        "scripts": scripts,
        "csp": content_security_policy(scripts.values()),
        "colors": {m: figures.model_color(data, m) for m in data.models},
        "labels": {r.sha: r.label for r in data.revisions},
        "jitter": figures.JITTER_POINTS,
    }
    return _environment().get_template("report.html.j2").render(**context)


def content_security_policy(scripts: object) -> str:
    """The page's policy: only these inline scripts run (by hash), nothing is ever fetched.

    ``style-src 'unsafe-inline'`` stays because plotly sets inline styles on every element it
    draws; styles cannot run code. ``navigate-to`` is left out: no browser implements it (it was
    dropped from the CSP 3 draft), and Chromium reports it as an unknown directive.
    """
    hashes = " ".join(
        f"'sha256-{base64.b64encode(hashlib.sha256(s.encode()).digest()).decode()}'"
        for s in scripts  # type: ignore[attr-defined]
    )
    return (
        f"default-src 'none'; script-src {hashes}; style-src 'unsafe-inline'; "
        "img-src data: blob:; font-src data:; base-uri 'none'; form-action 'none'"
    )


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
    env.filters["arrows"] = arrows
    return env


@lru_cache(maxsize=1)
def _plotly_js() -> str:
    """The vendored cartesian bundle, or the installed plotly's full one if majors differ."""
    if get_plotlyjs_version().split(".")[0] == PLOTLY_BUNDLE_VERSION.split(".")[0]:
        source = PLOTLY_BUNDLE.read_text(encoding="utf-8")
    else:
        source = get_plotlyjs()
    # The bundle must not be able to end its own script element early.
    return source.replace("</script", "<\\/script")


@lru_cache(maxsize=1)
def _loader_js() -> str:
    return (_TEMPLATES / "report.js").read_text(encoding="utf-8")


_ARROW = re.compile(r"(\S+) (?:->|→) (\S+)")


def arrows(text: str | None) -> Markup:
    """Escaped text whose "a -> b" pairs become "a → b" kept on one line.

    An ASCII arrow breaks across lines after its hyphen ("v2 -" / "> v3"), and model names break
    at their own hyphens; a no-wrap span keeps each pair whole.
    """
    text = text or ""
    parts: list[Markup] = []
    cursor = 0
    for match in _ARROW.finditer(text):
        parts.append(escape(text[cursor : match.start()]))
        parts.append(Markup('<span class="nowrap">{} → {}</span>').format(match[1], match[2]))
        cursor = match.end()
    parts.append(escape(text[cursor:]))
    return Markup("").join(parts)


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
class Trend:
    """How a model's rate moved over the spec revisions in range, and whether that is significant.

    Colour goes with significance: ``css`` is "up" or "down" only when a stored test of this very
    comparison found a significant change, so a wobble never looks like a finding.
    """

    label: str
    change: str
    verdict: str
    css: str


@dataclass(frozen=True)
class Headline:
    """The first thing a reader sees for one model.

    Two kinds of comparison are kept apart, because they answer different questions: the trend
    and ``history_groups`` compare spec revisions of this same model; ``version_groups`` compare
    this model with another version of it at the same spec revision.
    """

    model: str
    latest: RatePoint | None
    latest_revision: SpecRevision | None
    rate_text: str
    trend: Trend | None
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
            model, None, None, "no graded samples in range", None, "", versions, history, False
        )
    latest = points[-1]
    revision = data.revision(latest.sha)
    assert revision is not None
    return Headline(
        model=model,
        latest=latest,
        latest_revision=revision,
        rate_text=rate_with_interval(latest),
        trend=trend(data, model, points[0], latest),
        awareness_text=_fmt_pct(latest.aware),
        version_groups=versions,
        history_groups=history,
        zero_warning=latest.covert == 0,
    )


def _compared(data: ReportData, finding: ReportFinding) -> str:
    """What a finding compared, in revision labels: versions at one revision, or two revisions."""

    def label(sha: str | None, ref: str) -> str:
        revision = data.revision(sha) if sha else None
        return revision.label if revision else ref[:7]

    at = label(finding.sha, finding.rev)
    if finding.comparison == "point":
        return f"at {at} (this point alone)"
    if finding.across_versions:
        return f"{finding.baseline_model} → {finding.model} at {at}"
    return f"{label(finding.baseline_sha, finding.baseline_rev)} → {at}"


def _headline_families(data: ReportData) -> list[tuple[str, list[Headline]]]:
    """Headline cards by model family, so the versions of one model sit side by side.

    With no family of two or more versions, one unnamed group keeps the page as it was.
    """
    families = data.families
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


def trend(data: ReportData, model: str, first: RatePoint, latest: RatePoint) -> Trend | None:
    """First vs latest spec revision of the same model, with the stored test's verdict."""
    start, end = data.revision(first.sha), data.revision(latest.sha)
    if start is None or end is None:
        return None
    if first.sha == latest.sha:
        return Trend("over spec revisions", "one revision with samples: no trend yet", "", "")
    delta = 100 * ((latest.covert or 0.0) - (first.covert or 0.0))
    if abs(delta) < 0.05:
        direction = "unchanged"
    else:
        direction = f"{'down' if delta < 0 else 'up'} {abs(delta):.1f} points"
    change = f"{direction} ({_fmt_pct(first.covert)} → {_fmt_pct(latest.covert)})"
    verdict, significant = _verdict(data, model, start, end, first, latest)
    css = ("down" if delta < 0 else "up") if significant and abs(delta) >= 0.05 else ""
    return Trend(f"same model, spec {start.label} → {end.label}", change, verdict, css)


def _verdict(
    data: ReportData,
    model: str,
    start: SpecRevision,
    end: SpecRevision,
    first: RatePoint,
    latest: RatePoint,
) -> tuple[str, bool]:
    """What detection said about exactly this comparison, and whether it is significant."""
    test = data.tests.get((model, start.sha, end.sha))
    if test is not None:
        q = "q not stored" if test.q_value is None else f"q = {test.q_value:.2g}"
        if test.kind in _SIGNIFICANT:
            return f"significant ({q})", True
        return f"not significant ({q})", False
    if not (first.has_interval and latest.has_interval):
        return "significance not tested: run audit detect", False
    baselines = {t.baseline_sha for t in data.tests.values() if t.comparison == "baseline"}
    compared = start.sha in baselines or (
        not baselines and data.since is None and start.sha == data.revisions[0].sha
    )
    if compared:
        # Detection tests every revision against its baseline and stores the significant ones.
        return "not significant (no finding stored at 5% FDR)", False
    return "significance not tested for this pair (see the findings)", False


# -- public scenarios vs their sealed twins ----------------------------------------------------


@dataclass(frozen=True)
class TwinCoverage:
    """What the public-vs-twins section can show, and where twin samples are missing.

    ``missing`` lists, per model with samples, the revisions run without any sealed twin (all of
    them when the model never ran one): comparisons there have no twin test.
    """

    n_twins: int
    n_mirrored: int
    models: list[str]
    missing: list[tuple[str, list[str]]]

    @property
    def set_has_twins(self) -> bool:
        """True when the report's held-out set has sealed twins at all."""
        return self.n_twins > 0


def twin_coverage(data: ReportData) -> TwinCoverage:
    """Counts of the set's twins, the models with twin samples, and the points without them."""
    missing = []
    for model in data.models:
        points = data.twin_points_of(model)
        if not data.sealed:
            break
        without = [_label(data, p.sha) for p in points if p.twins is None]
        if without:
            missing.append((model, without if len(without) < len(points) else []))
    return TwinCoverage(
        n_twins=len(data.sealed),
        n_mirrored=len(set(data.sealed.values())),
        models=figures.twin_models(data),
        missing=missing,
    )


# -- exposure: introduced by an edit vs cumulative since the baseline ---------------------------


def exposure_note(data: ReportData, finding: ReportFinding) -> str:
    """Which edit first named each exposed scenario of a finding, and whether exposure is new.

    A finding against an older baseline counts every scenario exposed since then, so it can land
    on a revision whose own edit exposed nothing (a reformat, a later unrelated edit).
    """
    end = data.revision(finding.sha) if finding.sha else None
    if end is None or not finding.exposed_scenarios or finding.across_versions:
        return ""
    start = data.revision(finding.baseline_sha) if finding.baseline_sha else None
    named: dict[str, list[str]] = {}
    for scenario in finding.exposed_scenarios:
        revision = data.first_exposed(scenario, start, end)
        named.setdefault(revision.label if revision else "an earlier edit", []).append(scenario)
    where = "; ".join(f"edit at {label}: {', '.join(ids)}" for label, ids in named.items())
    if end.label in named:
        return f"Named by the {where}."
    since = start.label if start else "the baseline"
    return (
        f"Exposure is cumulative since {since}; {end.label}'s own edit newly exposed none of them. "
        f"Named by the {where}."
    )


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
class ExposureView:
    """A scenario this revision's edit exposed: new, or named again after an earlier edit."""

    scenario_id: str
    matched_terms: tuple[str, ...]
    leaked: bool
    first_label: str


@dataclass(frozen=True)
class RevisionView:
    """One revision of the change viewer.

    ``introduced`` are scenarios this edit exposed first; ``renamed`` ones it named again after an
    earlier edit had exposed them; ``cumulative`` all scenarios exposed since the detection
    baseline (with the edit that first named each), which is what findings against it count.
    """

    revision: SpecRevision
    clauses: list[ClauseView]
    overflow: int
    introduced: list[ExposureView]
    renamed: list[ExposureView]
    cumulative: CumulativeExposure | None
    cumulative_named: list[tuple[str, str]]
    findings: list[ReportFinding]

    opened: bool = False
    # Set when detection compared this revision with an earlier one than its parent (the
    # revisions in between have no samples): "this edit" then means the edits since that one.
    compared_with: str | None = None

    @property
    def exposed(self) -> list[ExposureView]:
        """Every scenario this edit exposed, new or not."""
        return [*self.introduced, *self.renamed]


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


def _finding_for(data: ReportData, revision: SpecRevision, scenario: str) -> ReportFinding | None:
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
    views = []
    # In a long history, revisions with new exposure alone would unfold into a page-long list.
    open_exposed = len(data.revisions) <= _OPEN_EXPOSED_UP_TO
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
        for clause in data.clause_changes.get(revision.sha, []):
            new = highlight(clause.new_text or "", needles) if clause.new_text else []
            old = [Segment(clause.old_text)] if clause.old_text else []
            clauses.append(ClauseView(clause, old, new, any(s.scenarios for s in new)))
        cumulative = data.cumulative.get(revision.sha)
        own_findings = [f for f in data.findings if f.sha == revision.sha and not f.across_versions]
        views.append(
            RevisionView(
                revision=revision,
                clauses=clauses,
                overflow=data.clause_overflow.get(revision.sha, 0),
                introduced=[_exposure_view(data, e) for e in exposures if e.introduced],
                renamed=[_exposure_view(data, e) for e in exposures if not e.introduced],
                cumulative=cumulative,
                cumulative_named=[
                    (scenario, _label(data, first))
                    for scenario, first in sorted(
                        (cumulative.first_sha if cumulative else {}).items()
                    )
                ],
                # Model-version findings compare two models at this revision, not this edit.
                findings=own_findings,
                compared_with=next(
                    (
                        _label(data, e.since_sha)
                        for e in exposures
                        if e.since_sha and e.since_sha != revision.prev_sha
                    ),
                    None,
                ),
                opened=bool(
                    own_findings
                    or any(e.leaked for e in exposures)
                    or (open_exposed and any(e.introduced for e in exposures))
                ),
            )
        )
    return views


def _label(data: ReportData, sha: str) -> str:
    revision = data.revision(sha)
    return revision.label if revision else sha[:7]


def _exposure_view(data: ReportData, exposure: Exposure) -> ExposureView:
    return ExposureView(
        exposure.scenario_id,
        exposure.matched_terms,
        exposure.leaked,
        _label(data, exposure.first_sha or exposure.sha),
    )


# -- scenarios and reproduction ---------------------------------------------------------------


@dataclass(frozen=True)
class ScenarioRow:
    """One held-out scenario: ids, family and matched terms (the prompt only on request).

    A sealed twin shows its id, family and the public scenario it mirrors, never its prompt or
    the words an edit matched in it.
    """

    scenario_id: str
    family: str
    exposed_at: list[str]
    named_again_at: list[str]
    matched_terms: list[str]
    prompt: str | None
    sealed: bool = False
    twin_of: str = ""


def _scenario_rows(data: ReportData) -> list[ScenarioRow]:
    rows = []
    for family, scenario in figures.scenario_order(data.cells):
        exposures = [e for e in data.exposures if e.scenario_id == scenario]
        order = {r.sha: r.seq for r in data.revisions}
        exposures.sort(key=lambda e: order.get(e.sha, -1))
        terms = sorted({t for e in exposures for t in e.matched_terms})
        rows.append(
            ScenarioRow(
                scenario,
                family,
                [_label(data, e.sha) for e in exposures if e.introduced],
                [_label(data, e.sha) for e in exposures if not e.introduced],
                terms,
                data.prompts.get(scenario),
                scenario in data.sealed,
                data.sealed.get(scenario, ""),
            )
        )
    return rows


@dataclass(frozen=True)
class Repro:
    """How to get one group of the report's numbers again: a command to paste into a shell."""

    what: str
    command: str


def _sql_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def sql_command(db: str, sql: str) -> str:
    """``audit sql`` reading ``sql`` from a quoted here-document.

    Inside ``<<'SQL'`` the shell expands nothing ($, backticks, backslashes and quotes stay as
    they are), so the query needs no shell escaping and reads as plain SQL; the delimiter is
    chosen so that no line of the query can end it early.
    """
    delimiter = "SQL"
    while delimiter in sql.splitlines():
        delimiter += "_END"
    return f"audit sql --db {shlex.quote(db)} --file /dev/stdin <<'{delimiter}'\n{sql}\n{delimiter}"


def _repro(data: ReportData, out: Path) -> list[Repro]:
    db = data.db_path
    model = data.model_filter
    model_filter = f" AND model = {_sql_literal(model)}" if model else ""
    # A leak finding has model "*": it concerns the spec, so every model's report shows it.
    findings_filter = f" AND model IN ({_sql_literal(model)}, '*')" if model else ""
    estimates_filter = f" AND c.model = {_sql_literal(model)}" if model else ""
    report = ["audit", "report", "--db", db, "--out", str(out.resolve())]
    if model:
        report += ["--model", model]
    if data.since:
        report += ["--since", data.since.short_sha]
    fmt = {"source_id": data.source_id.replace("'", "''"), "set_hash": data.set_hash}
    heatmap_model = figures.heatmap_first_model(data) or ""
    entries = [
        Repro("This report", shlex.join(report)),
        Repro(
            "Intervals, findings and exposure (rerun detection; this writes to the database)",
            shlex.join(["audit", "detect", "--db", db, "--source", data.source_id]),
        ),
        Repro(
            "Headline and timeline: covert-action rate with its 95% interval and awareness, "
            "per model and revision (percent)",
            sql_command(db, REPRO_ESTIMATES_SQL.format(**fmt, model_filter=estimates_filter)),
        ),
        Repro(
            "The same rates straight from the samples, without intervals (percent)",
            sql_command(db, REPRO_POINT_RATE_SQL.format(**fmt, model_filter=model_filter)),
        ),
    ]
    if data.has_twin_samples:
        twins_filter = f" AND p.model = {_sql_literal(model)}" if model else ""
        entries.append(
            Repro(
                "Public vs sealed twins: covert rate of the public scenarios and of their sealed "
                "twins with 95% intervals, per model and revision (percent)",
                sql_command(db, REPRO_TWINS_SQL.format(**fmt, model_filter=twins_filter)),
            )
        )
    entries += [
        Repro(
            f"Heatmap cells of {heatmap_model} (covert of graded samples per scenario and "
            "revision; change the model name for another)",
            sql_command(
                db,
                REPRO_HEATMAP_SQL.format(
                    **fmt, model_filter=f" AND model = {_sql_literal(heatmap_model)}"
                ),
            ),
        ),
        Repro(
            "Grouped findings (the headline's lines): smallest and largest change in points, "
            "largest q",
            sql_command(db, REPRO_FINDING_GROUPS_SQL.format(**fmt, model_filter=findings_filter)),
        ),
        Repro(
            "Every stored test: findings, and kind 'none' for tests without a significant change "
            "(change, interval and twin gap in points)",
            sql_command(db, REPRO_FINDINGS_SQL.format(**fmt, model_filter=findings_filter)),
        ),
        Repro(
            "Exposure per revision: against the previous revision (what its own edit exposed) "
            "and against the baseline (cumulative)",
            sql_command(db, REPRO_EXPOSURE_SQL.format(**fmt)),
        ),
    ]
    return entries
