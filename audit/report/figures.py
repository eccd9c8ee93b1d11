"""Plotly figures of the drift report, built from already-aggregated :class:`ReportData`.

Every figure has a bounded number of traces (per model, never per cell), so a history of
hundreds of revisions stays responsive in the browser. Text that comes from users or models
(commit messages, authors, summaries) is HTML-escaped before it goes into hover labels, because
plotly renders a subset of HTML in them.
"""

from __future__ import annotations

import hashlib
import html
from dataclasses import dataclass

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from audit.report.data import Cell, Finding, RatePoint, ReportData, Revision
from audit.report.groups import family_of, model_families

# Distinct hues, one per model family; versions of a family are shades of its hue. Red, purple,
# green and orange are left out: they are the colours of the causes on the finding stars.
_PALETTE = ["#1f77b4", "#8c564b", "#e377c2", "#17becf", "#a89a00", "#393b79", "#637939", "#7b4173"]
# Marker shapes tell versions apart where shades are close (and in greyscale prints).
_VERSION_SYMBOLS = ("circle", "square", "diamond", "triangle-up", "x", "star-triangle-up")
# More models than this share the panel: bands are hidden until one family is picked.
_MAX_BANDS = 3
_CAUSE_COLORS = {
    "spec_patching": "#d62728",
    "eval_awareness": "#9467bd",
    "genuine": "#2ca02c",
    "regression": "#ff7f0e",
    None: "#7f7f7f",
}
_FONT = {"family": "system-ui, -apple-system, Segoe UI, sans-serif", "size": 12}


def _esc(text: str | None, limit: int = 300) -> str:
    """Escape text for a plotly hover label and keep it short."""
    text = (text or "").strip()
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return html.escape(text).replace("\n", "<br>")


def _pct(value: float | None) -> float | None:
    return None if value is None else round(100 * value, 2)


def model_color(data: ReportData, model: str) -> str:
    """The colour of a model, the same in every figure: its family's hue, newer versions darker."""
    families = list(model_families(data.models).items())
    for index, (_, members) in enumerate(families):
        if model in members:
            base = _PALETTE[index % len(_PALETTE)]
            if len(members) == 1:
                return base
            # The oldest version is the palest; the newest keeps the full hue.
            lightness = 0.55 * (len(members) - 1 - members.index(model)) / (len(members) - 1)
            return _mix_with_white(base, lightness)
    return _PALETTE[0]


def version_symbol(data: ReportData, model: str) -> str:
    """The marker shape of a model: its position within its family."""
    members = model_families(data.models).get(family_of(model), [model])
    position = members.index(model) if model in members else 0
    return _VERSION_SYMBOLS[position % len(_VERSION_SYMBOLS)]


def _mix_with_white(hex_color: str, share: float) -> str:
    value = hex_color.lstrip("#")
    channels = (int(value[i : i + 2], 16) for i in (0, 2, 4))
    return "#" + "".join(f"{round(c + (255 - c) * share):02x}" for c in channels)


def _commit_hover(revision: Revision) -> str:
    added = "?" if revision.lines_added is None else revision.lines_added
    removed = "?" if revision.lines_removed is None else revision.lines_removed
    return (
        f"<b>{_esc(revision.label)}</b> {revision.date}<br>{_esc(revision.subject, 120)}"
        f"<br>by {_esc(revision.author, 80)} · +{added} / −{removed} lines"
    )


def timeline_figure(data: ReportData) -> go.Figure:
    """Covert rate with bands, awareness rate below, spec commits as a strip, findings marked.

    Models of one family share a hue (newer versions darker, each version its own marker shape).
    With many models a menu shows one family at a time, with its interval bands; the "all
    models" view leaves the bands out, because a dozen overlapping bands hide the lines.
    """
    labels = [r.label for r in data.revisions]
    fig = make_subplots(
        rows=3,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.05,
        row_heights=[0.55, 0.3, 0.15],
        subplot_titles=("Covert-action rate (%)", "Verbalized eval awareness (%)", ""),
    )
    families = model_families(data.models)
    show_bands = len(data.models) <= _MAX_BANDS
    # For each trace: the family it belongs to (None: always shown) and whether it is a band.
    roles: list[tuple[str | None, bool]] = []
    for family, members in families.items():
        for model in members:
            roles.extend((family, band) for band in _add_rate_traces(fig, data, model, labels))
    legend_shown = False
    # Leaks (model "*") concern the spec itself, so every view shows them.
    for owner, members in [*families.items(), (None, ["*"])]:
        if _add_findings(fig, data, members, legend=not legend_shown):
            roles.append((owner, False))
            legend_shown = True
    for trace, (_, band) in zip(fig.data, roles, strict=True):
        if band and not show_bands:
            trace.visible = False
    fig.add_trace(
        go.Scatter(
            x=labels,
            y=[0] * len(labels),
            mode="markers",
            name="spec commits",
            marker={
                "symbol": "line-ns-open",
                "size": [
                    min(30, 8 + (r.lines_added or 0) + (r.lines_removed or 0))
                    for r in data.revisions
                ],
                "color": "#444",
                "line": {"width": 2},
            },
            hovertext=[_commit_hover(r) for r in data.revisions],
            hoverinfo="text",
            showlegend=False,
        ),
        row=3,
        col=1,
    )
    roles.append((None, False))
    fig.update_yaxes(rangemode="tozero", ticksuffix="%", row=1, col=1)
    fig.update_yaxes(rangemode="tozero", ticksuffix="%", row=2, col=1)
    fig.update_yaxes(visible=False, row=3, col=1)
    fig.update_xaxes(type="category", categoryorder="array", categoryarray=labels)
    fig.update_xaxes(title_text="spec revision (commit order)", row=3, col=1)
    menus = _family_menu(families, roles, show_bands)
    fig.update_layout(
        height=680 if menus else 620,
        margin={"l": 60, "r": 20, "t": 80 if menus else 40, "b": 60},
        hovermode="closest",
        # A vertical legend on the right stays readable with many models and never covers data.
        legend={"orientation": "v", "x": 1.01, "y": 1, "tracegroupgap": 2},
        font=_FONT,
        template="plotly_white",
        updatemenus=menus,
    )
    return fig


def _family_menu(
    families: dict[str, list[str]], roles: list[tuple[str | None, bool]], show_bands: bool
) -> list[dict[str, object]]:
    """A menu showing every model (bands only when few) or one family with its bands."""
    if len(families) < 2:
        return []
    buttons = [
        {
            "label": "all models",
            "method": "restyle",
            "args": [{"visible": [(not band) or show_bands for _, band in roles]}],
        }
    ]
    for family, members in families.items():
        visible = [owner is None or owner == family for owner, _ in roles]
        versions = f" ({len(members)} versions)" if len(members) > 1 else ""
        buttons.append(
            {"label": f"{family}{versions}", "method": "restyle", "args": [{"visible": visible}]}
        )
    return [
        {
            "buttons": buttons,
            "x": 0,
            "y": 1.13,
            "xanchor": "left",
            "yanchor": "top",
            "showactive": True,
            "active": 0,
        }
    ]


def _add_rate_traces(fig: go.Figure, data: ReportData, model: str, labels: list[str]) -> list[bool]:
    """Add one model's traces; return, per trace added, whether it is an interval band."""
    color = model_color(data, model)
    symbol = version_symbol(data, model)
    by_sha = {p.sha: p for p in data.rates_of(model)}
    points = [by_sha.get(r.sha) for r in data.revisions]
    # Past a few dozen revisions, a marker per point hides the lines it sits on.
    line_mode = "lines+markers" if len(labels) <= 60 else "lines"
    covert = [_pct(p.covert) if p else None for p in points]
    aware = [_pct(p.aware) if p else None for p in points]
    added: list[bool] = []
    if any(p is not None and p.has_interval for p in points):
        # The band is drawn as an upper edge and a lower edge filled up to it.
        high = [_pct(p.covert_high) if p else None for p in points]
        low = [_pct(p.covert_low) if p else None for p in points]
        common = {"mode": "lines", "line": {"width": 0}, "hoverinfo": "skip", "showlegend": False}
        fig.add_trace(go.Scatter(x=labels, y=high, legendgroup=model, **common), row=1, col=1)
        fig.add_trace(
            go.Scatter(
                x=labels,
                y=low,
                fill="tonexty",
                fillcolor=_rgba(color, 0.15),
                legendgroup=model,
                **common,
            ),
            row=1,
            col=1,
        )
        added += [True, True]
    hover = [
        f"<b>{_esc(model)}</b> at {_esc(r.label)}<br>covert {_fmt_ci(p)}<br>"
        f"{p.n_samples} samples, {p.n_scenarios} scenarios"
        if p
        else ""
        for r, p in zip(data.revisions, points, strict=True)
    ]
    fig.add_trace(
        go.Scatter(
            x=labels,
            y=covert,
            mode=line_mode,
            name=model,
            legendgroup=model,
            line={"color": color, "width": 2},
            marker={"symbol": symbol, "size": 7},
            hovertext=hover,
            hoverinfo="text",
            connectgaps=True,
        ),
        row=1,
        col=1,
    )
    fig.add_trace(
        go.Scatter(
            x=labels,
            y=aware,
            mode=line_mode,
            name=model,
            legendgroup=model,
            showlegend=False,
            line={"color": color, "width": 2, "dash": "dot"},
            marker={"symbol": symbol, "size": 6},
            hovertemplate=f"{_esc(model)}<br>%{{x}}<br>aware %{{y:.1f}}%<extra></extra>",
            connectgaps=True,
        ),
        row=2,
        col=1,
    )
    return [*added, False, False]


def _fmt_ci(point: RatePoint) -> str:
    if point.covert is None:
        return "n/a"
    if point.covert_low is not None and point.covert_high is not None:
        low, high = 100 * point.covert_low, 100 * point.covert_high
        return f"{100 * point.covert:.1f}% [{low:.1f}, {high:.1f}]"
    return f"{100 * point.covert:.1f}% (no interval: run audit detect)"


def _add_findings(fig: go.Figure, data: ReportData, models: list[str], *, legend: bool) -> bool:
    """One star per finding of these models at its revision and rate, coloured by cause.

    Returns whether a trace was added (one per family, so the family menu can show its own).
    """
    shown = [f for f in data.findings if f.model in models and f.sha and data.revision(f.sha)]
    if not shown:
        return False
    fig.add_trace(
        go.Scatter(
            x=[data.revision(f.sha).label for f in shown],  # type: ignore[union-attr, arg-type]
            y=[_pct(f.rate) if f.rate is not None else 0 for f in shown],
            mode="markers",
            name="findings",
            legendgroup="findings",
            showlegend=legend,
            marker={
                "symbol": "star",
                "size": 13,
                "color": [_CAUSE_COLORS.get(f.primary_cause, "#7f7f7f") for f in shown],
                "line": {"color": "#000", "width": 1},
            },
            hovertext=[_finding_hover(f) for f in shown],
            hoverinfo="text",
        ),
        row=1,
        col=1,
    )
    return True


def _finding_hover(finding: Finding) -> str:
    cause = finding.primary_cause or "unattributed"
    compared = (
        f"{_esc(finding.baseline_model)} → {_esc(finding.model)}"
        if finding.across_versions
        else f"{_esc(finding.model)}, spec revisions"
    )
    return (
        f"<b>{_esc(finding.kind)} · {_esc(cause)}</b> ({compared})<br>{_esc(finding.summary, 200)}"
    )


def _rgba(hex_color: str, alpha: float) -> str:
    value = hex_color.lstrip("#")
    red, green, blue = (int(value[i : i + 2], 16) for i in (0, 2, 4))
    return f"rgba({red},{green},{blue},{alpha})"


def scenario_order(cells: list[Cell]) -> list[tuple[str, str]]:
    """(family, scenario id) pairs sorted by family then id: the heatmap's rows."""
    return sorted({(c.family, c.scenario_id) for c in cells})


def heatmap_figure(data: ReportData) -> go.Figure:
    """Scenarios (grouped by family) x revisions, one heatmap per model picked from a menu."""
    labels = [r.label for r in data.revisions]
    rows = scenario_order(data.cells)
    row_labels = [f"{family} · {scenario}" for family, scenario in rows]
    row_index = {scenario: i for i, (_, scenario) in enumerate(rows)}
    col_index = {r.sha: i for i, r in enumerate(data.revisions)}
    exposed = {(e.sha, e.scenario_id) for e in data.exposures}
    fig = go.Figure()
    for n, model in enumerate(data.models):
        z: list[list[float | None]] = [[None] * len(labels) for _ in rows]
        # Cells are point rates over a few samples: the hover says how few ("2 of 3").
        counts: list[list[str]] = [[""] * len(labels) for _ in rows]
        for cell in data.cells:
            if cell.model == model and cell.sha in col_index:
                z[row_index[cell.scenario_id]][col_index[cell.sha]] = _pct(cell.covert)
                counts[row_index[cell.scenario_id]][col_index[cell.sha]] = (
                    f"{cell.n_covert} of {cell.n_graded}"
                )
        fig.add_trace(
            go.Heatmap(
                x=labels,
                y=row_labels,
                z=z,
                zmin=0,
                zmax=100,
                colorscale="Reds",
                colorbar={"title": {"text": "covert %"}},
                visible=n == 0,
                name=model,
                text=counts,
                hovertemplate="%{y}<br>%{x}<br>covert %{z:.0f}% (%{text} graded samples)"
                "<extra></extra>",
                xgap=1,
                ygap=1,
            )
        )
    marks = [(e_sha, s) for e_sha, s in sorted(exposed) if e_sha in col_index and s in row_index]
    fig.add_trace(
        go.Scatter(
            x=[data.revisions[col_index[sha]].label for sha, _ in marks],
            y=[row_labels[row_index[s]] for _, s in marks],
            mode="markers",
            name="exposed to the edit",
            marker={"symbol": "square-open", "size": 11, "color": "#1f3b99", "line": {"width": 2}},
            hovertemplate="%{y}<br>%{x}<br>exposed to this spec edit<extra></extra>",
        )
    )
    buttons = [
        {
            "label": model,
            "method": "update",
            "args": [{"visible": [i == n for i in range(len(data.models))] + [True]}],
        }
        for n, model in enumerate(data.models)
    ]
    many = len(data.models) > 1
    fig.update_layout(
        updatemenus=[{"buttons": buttons, "x": 0, "y": 1.12, "xanchor": "left", "showactive": True}]
        if many
        else [],
        annotations=[
            {
                "text": "model" if many else f"model {_esc(data.models[0])}",
                "xref": "paper",
                "yref": "paper",
                "x": 0,
                "y": 1.1,
                "xanchor": "right" if many else "left",
                "yanchor": "middle",
                "showarrow": False,
                "xshift": -8 if many else 0,
            }
        ]
        if data.models
        else [],
        # A line between families, so the row groups read as groups.
        shapes=[
            {
                "type": "line",
                "xref": "paper",
                "x0": 0,
                "x1": 1,
                "yref": "y",
                "y0": index - 0.5,
                "y1": index - 0.5,
                "line": {"color": "#555", "width": 1},
            }
            for index in range(1, len(rows))
            if rows[index][0] != rows[index - 1][0]
        ],
        height=max(320, 90 + 18 * len(rows)),
        margin={"l": 260, "r": 20, "t": 60, "b": 80},
        xaxis={"type": "category", "categoryorder": "array", "categoryarray": labels},
        yaxis={
            "type": "category",
            "autorange": "reversed",
            "categoryorder": "array",
            "categoryarray": row_labels,
        },
        legend={"orientation": "h", "y": 1.12, "x": 1, "xanchor": "right"},
        font=_FONT,
        template="plotly_white",
    )
    return fig


@dataclass(frozen=True)
class ChosenChange:
    """The change the before/after scatter shows."""

    model: str
    before: Revision
    after: Revision
    finding: Finding | None
    # The model at the "before" point: another version of it for a model-version finding, where
    # before and after are the same spec revision.
    before_model: str = ""

    @property
    def across_versions(self) -> bool:
        """True when two model versions are compared at one spec revision."""
        return bool(self.before_model) and self.before_model != self.model

    @property
    def menu_label(self) -> str:
        """The change in a few words, for menus and lists."""
        if self.across_versions:
            return f"{self.model}: {self.before_model} → {self.model} at {self.after.short}"
        return f"{self.model}: {self.before.short} → {self.after.short}"

    def side(self, when: str) -> str:
        """Legend words for the 'before' or 'after' point."""
        revision = self.before if when == "before" else self.after
        if self.across_versions:
            model = self.before_model if when == "before" else self.model
            return f"{when} ({model} at {revision.short})"
        return f"{when} ({revision.short})"


def choose_changes(data: ReportData) -> list[ChosenChange]:
    """Per model, the change the scatter shows, the most telling model first.

    A model's change is its most significant finding (lowest q, then largest drop); without one,
    its first vs latest revision with samples. Models with findings come first; among the rest,
    the one whose rates moved most.
    """
    ranked: list[tuple[tuple[int, float], ChosenChange]] = []
    for model in data.models:
        change = _finding_change(data, model)
        if change is not None:
            finding = change.finding
            assert finding is not None
            q = finding.q_value if finding.q_value is not None else 1.0
            ranked.append(((0, q - abs(finding.delta or 0.0)), change))
            continue
        points = [p for p in data.rates_of(model) if p.covert is not None]
        if len(points) < 2:
            continue
        moved = abs((points[-1].covert or 0) - (points[0].covert or 0)) + abs(
            (points[-1].aware or 0) - (points[0].aware or 0)
        )
        first, last = data.revision(points[0].sha), data.revision(points[-1].sha)
        assert first is not None and last is not None
        ranked.append(((1, -moved), ChosenChange(model, first, last, None)))
    ranked.sort(key=lambda item: item[0])
    return [change for _, change in ranked]


def _finding_change(data: ReportData, model: str) -> ChosenChange | None:
    candidates = [
        f
        for f in data.findings
        if f.model == model
        and f.baseline_sha
        and f.sha
        and data.revision(f.baseline_sha)
        and f.kind != "leak"
    ]
    if not candidates:
        return None
    best = min(
        candidates,
        key=lambda f: (f.q_value if f.q_value is not None else 1.0, -abs(f.delta or 0.0)),
    )
    before = data.revision(best.baseline_sha)  # type: ignore[arg-type]
    after = data.revision(best.sha)  # type: ignore[arg-type]
    assert before is not None and after is not None
    return ChosenChange(model, before, after, best, best.baseline_model)


def exposed_between(data: ReportData, change: ChosenChange) -> set[str]:
    """Scenarios exposed by any spec edit after ``before`` up to and including ``after``."""
    exposed = set(change.finding.exposed_scenarios) if change.finding else set()
    for exposure in data.exposures:
        revision = data.revision(exposure.sha)
        if revision and change.before.seq < revision.seq <= change.after.seq:
            exposed.add(exposure.scenario_id)
    return exposed


# Rates over a few epochs take few distinct values, so scenarios would sit on top of each other;
# each scenario is moved by the same small, fixed offset at both ends (hover shows exact rates).
JITTER_POINTS = 1.5


def _jitter(scenario: str) -> tuple[float, float]:
    """A fixed offset in points per scenario, the same in every report."""
    digest = hashlib.sha256(scenario.encode()).digest()
    return (
        JITTER_POINTS * (digest[0] / 127.5 - 1.0),
        JITTER_POINTS * (digest[1] / 127.5 - 1.0),
    )


def _shift(rate: float | None, offset: float) -> float | None:
    return None if rate is None else round(100 * rate + offset, 2)


def _scatter_traces(data: ReportData, change: ChosenChange) -> list[go.Scatter]:
    before_model = change.before_model or change.model
    cells = {
        (c.model, c.sha, c.scenario_id): c
        for c in data.cells
        if c.model in (change.model, before_model)
    }
    exposed = exposed_between(data, change)
    scenarios = sorted({s for _, _, s in cells})
    # (scenario, {"before": cell, "after": cell}) for scenarios with samples at both ends.
    pairs: list[tuple[str, dict[str, Cell]]] = []
    for scenario in scenarios:
        before = cells.get((before_model, change.before.sha, scenario))
        after = cells.get((change.model, change.after.sha, scenario))
        if before is not None and after is not None:
            pairs.append((scenario, {"before": before, "after": after}))
    arrows_x: list[float | None] = []
    arrows_y: list[float | None] = []
    for scenario, ends in pairs:
        dx, dy = _jitter(scenario)
        arrows_x += [_shift(ends["before"].aware, dx), _shift(ends["after"].aware, dx), None]
        arrows_y += [_shift(ends["before"].covert, dy), _shift(ends["after"].covert, dy), None]
    traces = [
        go.Scatter(
            x=arrows_x,
            y=arrows_y,
            mode="lines",
            line={"color": "#bbb", "width": 1},
            hoverinfo="skip",
            showlegend=False,
        )
    ]
    for when in ("before", "after"):
        for is_exposed in (True, False):
            chosen = [p for p in pairs if (p[0] in exposed) == is_exposed]
            traces.append(
                go.Scatter(
                    x=[_shift(p[1][when].aware, _jitter(p[0])[0]) for p in chosen],
                    y=[_shift(p[1][when].covert, _jitter(p[0])[1]) for p in chosen],
                    # The exact rates, for the hover (the position is spread a little).
                    customdata=[[_pct(p[1][when].aware), _pct(p[1][when].covert)] for p in chosen],
                    mode="markers",
                    name=f"{change.side(when)}, {'exposed' if is_exposed else 'not exposed'}"
                    f" ({len(chosen)} scenarios)",
                    text=[_esc(p[0]) for p in chosen],
                    marker={
                        "size": 10,
                        "symbol": "diamond" if is_exposed else "circle",
                        "color": "#d62728" if is_exposed else "#1f77b4",
                        "opacity": 0.35 if when == "before" else 0.85,
                        "line": {"color": "#000", "width": 1 if when == "after" else 0},
                    },
                    hovertemplate="%{text}<br>aware %{customdata[0]:.0f}%<br>"
                    "covert %{customdata[1]:.0f}%<extra>" + when + "</extra>",
                )
            )
    return traces


def scatter_figure(data: ReportData, changes: list[ChosenChange]) -> go.Figure:
    """Per scenario: awareness (x) vs covert rate (y) before and after each model's change.

    One set of traces per model, the first visible; a menu switches models.
    """
    fig = go.Figure()
    per_model = [_scatter_traces(data, change) for change in changes]
    for n, traces in enumerate(per_model):
        for trace in traces:
            trace.visible = n == 0
            fig.add_trace(trace)
    buttons = []
    for n, change in enumerate(changes):
        visible = [i == n for i, traces in enumerate(per_model) for _ in traces]
        buttons.append(
            {"label": change.menu_label, "method": "update", "args": [{"visible": visible}]}
        )
    # Explicit ranges with a margin: markers at 0% would otherwise be cut in half by the axis.
    xs = [x for traces in per_model for t in traces for x in (t.x or ()) if x is not None]
    ys = [y for traces in per_model for t in traces for y in (t.y or ()) if y is not None]
    top_x, top_y = max(xs, default=10.0), max(ys, default=10.0)
    low_x, low_y = min(0.0, *xs), min(0.0, *ys)
    fig.update_xaxes(range=[low_x - 0.04 * top_x - 0.5, 1.05 * top_x + 0.5])
    fig.update_yaxes(range=[low_y - 0.04 * top_y - 0.5, 1.05 * top_y + 0.5])
    if len(changes) > 1:
        fig.update_layout(
            updatemenus=[{"buttons": buttons, "x": 0, "y": 1.15, "xanchor": "left"}],
        )
    fig.update_layout(
        height=460,
        xaxis={"title": {"text": "eval-awareness rate (%)"}},
        yaxis={"title": {"text": "covert-action rate (%)"}},
        margin={"l": 60, "r": 20, "t": 60, "b": 50},
        font=_FONT,
        template="plotly_white",
    )
    return fig
