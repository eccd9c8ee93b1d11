"""Plotly figures of the drift report, built from already-aggregated :class:`ReportData`.

Every figure has a bounded number of traces (per model and kind of mark, never per cell), so a
history of hundreds of revisions stays responsive in the browser. Text that comes from users or
models (commit messages, authors, model names, summaries) is HTML-escaped before it goes into
labels, because plotly renders a subset of HTML in them.
"""

from __future__ import annotations

import hashlib
import html
from dataclasses import dataclass
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from audit.records import CAUSE_NAMES, SpecRevision
from audit.report.data import RatePoint, ReportData, ReportFinding, ScenarioCell, TwinPoint
from audit.report.groups import (
    FindingGroup,
    group_findings,
    strength,
)

# Distinct hues, one per model family; versions of a family are shades of its hue. Red, purple,
# green and orange are left out: they are the colours of the finding markers.
_PALETTE = ["#1f77b4", "#b8a000", "#8c564b", "#e377c2", "#17becf", "#393b79", "#637939", "#7b4173"]
# Marker shapes tell versions apart where shades are close (and in greyscale prints).
_VERSION_SYMBOLS = ("circle", "square", "diamond", "triangle-up", "x", "star-triangle-up")
# More models than this share the panel: bands are hidden until one family or model is picked.
MAX_BANDS = 3
# Past this many revisions, every n-th tick is labelled so the labels fit side by side.
_MAX_TICKS = 10
# The marks of findings on the timeline: one legend entry per kind (and cause, for drops).
_FINDING_STYLES = {
    "leak": ("leak of held-out text", "#000000"),
    "regression": ("regression", "#ff7f0e"),
    "collapse": ("collapse to near 0%", "#7f7f7f"),
    "spec_patching": ("drop: spec patching", "#d62728"),
    "eval_awareness": ("drop: eval awareness", "#9467bd"),
    "genuine": ("drop: genuine improvement", "#2ca02c"),
    "": ("drop: unattributed", "#bdbdbd"),
}
_FONT = {"family": "system-ui, -apple-system, Segoe UI, sans-serif", "size": 12}


def _esc(text: str | None, limit: int = 300) -> str:
    """Escape text for a plotly label and keep it short."""
    text = (text or "").strip()
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    # An ASCII arrow would break across lines ("a -" / "> b"); the arrow character does not.
    # Plotly reads tags and entities only, so quotes need no escaping (and would show as &#x27;).
    return html.escape(text.replace(" -> ", " → "), quote=False).replace("\n", "<br>")


def _pct(value: float | None) -> float | None:
    return None if value is None else round(100 * value, 2)


def model_color(data: ReportData, model: str) -> str:
    """The colour of a model, the same in every figure: its family's hue, newer versions darker."""
    families = list(data.families.items())
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
    members = data.families.get(data.family_of(model), [model])
    position = members.index(model) if model in members else 0
    return _VERSION_SYMBOLS[position % len(_VERSION_SYMBOLS)]


def _mix_with_white(hex_color: str, share: float) -> str:
    value = hex_color.lstrip("#")
    channels = (int(value[i : i + 2], 16) for i in (0, 2, 4))
    return "#" + "".join(f"{round(c + (255 - c) * share):02x}" for c in channels)


def _commit_hover(revision: SpecRevision) -> str:
    added = "?" if revision.lines_added is None else revision.lines_added
    removed = "?" if revision.lines_removed is None else revision.lines_removed
    return (
        f"<b>{_esc(revision.label)}</b> {revision.date}<br>{_esc(revision.subject, 120)}"
        f"<br>by {_esc(revision.author_name, 80)} · +{added} / −{removed} lines"
    )


def revision_axis(revisions: list[SpecRevision]) -> dict[str, object]:
    """A category axis in commit order whose ticks show index, short sha and date.

    Long histories label every n-th revision only; the hover still names each one.
    """
    labels = [r.label for r in revisions]
    step = max(1, -(-len(revisions) // _MAX_TICKS))
    shown = revisions[::step]
    return {
        "type": "category",
        "categoryorder": "array",
        "categoryarray": labels,
        "tickmode": "array",
        "tickvals": [r.label for r in shown],
        "ticktext": [_tick(r) for r in shown],
        "tickangle": 0,
    }


def _tick(revision: SpecRevision) -> str:
    """Axis tick text: the label over the authored date (plotly's ``<br>`` line break)."""
    return f"{revision.label}<br>{revision.date}" if revision.date else revision.label


@dataclass(frozen=True)
class _Role:
    """Which menu views show a trace: its family and model (None: every view), band or not."""

    family: str | None = None
    model: str | None = None
    band: bool = False


@dataclass(frozen=True)
class TimelineMenu:
    """What the timeline's menu offers; the page's text describes the same thing."""

    families: tuple[str, ...]
    models: tuple[str, ...]
    bands_in_overview: bool

    @property
    def exists(self) -> bool:
        """True when the figure has a menu at all."""
        return bool(self.families or self.models)


def timeline_menu(data: ReportData) -> TimelineMenu:
    """The views the timeline offers: every model, then one family, then one model.

    With more than :data:`MAX_BANDS` models the overview hides the interval bands, so the menu
    must always offer a view with bands: each family (when there are two or more), and each
    model when a family alone would still show more than :data:`MAX_BANDS` bands.
    """
    return menu_for(data, data.models)


def menu_for(data: ReportData, models: list[str]) -> TimelineMenu:
    """The menu of a figure with a line per model in ``models`` (see :func:`timeline_menu`)."""
    families = data.families_of(models)
    bands = len(models) <= MAX_BANDS
    family_views = tuple(families) if len(families) >= 2 else ()
    crowded = len(families) < 2 or any(len(m) > MAX_BANDS for m in families.values())
    model_views = tuple(m for ms in families.values() for m in ms) if not bands and crowded else ()
    return TimelineMenu(family_views, model_views, bands)


def timeline_figure(data: ReportData) -> go.Figure:
    """Covert rate with bands, awareness below, spec commits as bars, findings marked.

    Models of one family share a hue (newer versions darker, each version its own marker shape).
    With many models a menu shows one family or model at a time with its interval bands; the
    overview leaves the bands out, because a dozen overlapping bands hide the lines.
    """
    labels = [r.label for r in data.revisions]
    fig = make_subplots(
        rows=3,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.06,
        row_heights=[0.55, 0.3, 0.15],
        subplot_titles=(
            "Covert-action rate (%)",
            "Verbalized eval awareness (%)",
            "Spec commits: lines added (green) and removed (red); hover for the message",
        ),
    )
    menu = timeline_menu(data)
    roles: list[_Role] = []
    families = data.families
    for family, members in families.items():
        for model in members:
            bands = _add_rate_traces(fig, data, model, labels)
            roles.extend(_Role(family, model, band) for band in bands)
    roles.extend(_add_findings(fig, data, families))
    if not menu.bands_in_overview:
        for trace, role in zip(fig.data, roles, strict=True):
            if role.band:
                trace.visible = False
    roles.extend(_add_commit_bars(fig, data, labels))
    # Ranges from just under 0%: a marker or star at 0% would otherwise be cut in half.
    fig.update_yaxes(range=_rate_range(fig, "y"), ticksuffix="%", row=1, col=1)
    fig.update_yaxes(range=_rate_range(fig, "y2"), ticksuffix="%", row=2, col=1)
    fig.update_yaxes(title_text="lines", rangemode="tozero", row=3, col=1)
    fig.update_xaxes(**revision_axis(data.revisions))
    fig.update_xaxes(title_text="spec revision (commit order, authored date)", row=3, col=1)
    fig.update_layout(
        height=720 if menu.exists else 660,
        margin={"l": 60, "r": 20, "t": 80 if menu.exists else 40, "b": 70},
        hovermode="closest",
        barmode="stack",
        # A vertical legend on the right stays readable with many models and never covers data.
        legend={"orientation": "v", "x": 1.01, "y": 1, "tracegroupgap": 2},
        font=_FONT,
        template="plotly_white",
        updatemenus=_timeline_buttons(menu, roles),
    )
    return fig


def _rate_range(fig: go.Figure, axis: str) -> list[float]:
    """A y range in percent for the traces on ``axis``, from a little under 0%."""
    values = [v for t in fig.data if (t.yaxis or "y") == axis for v in (t.y or ()) if v is not None]
    top = max(values, default=10.0)
    return [-0.04 * top - 1, 1.06 * top + 1]


def _views(menu: TimelineMenu, roles: list[_Role]) -> list[tuple[str, list[bool]]]:
    """The menu's views in order: (label, visibility of each trace)."""
    overview = "all models" if menu.bands_in_overview else "all models (no bands)"
    views = [(overview, [not r.band or menu.bands_in_overview for r in roles])]
    for family in menu.families:
        views.append((f"{family} (with bands)", [r.family in (None, family) for r in roles]))
    for model in menu.models:
        views.append(
            (f"{model} (with bands)", [r.model == model or r.family is None for r in roles])
        )
    return views


def _timeline_buttons(
    menu: TimelineMenu, roles: list[_Role], active: int = 0
) -> list[dict[str, object]]:
    if not menu.exists:
        return []
    buttons = [
        {"label": label, "method": "restyle", "args": [{"visible": visible}]}
        for label, visible in _views(menu, roles)
    ]
    return [
        {
            "buttons": buttons,
            "x": 0,
            "y": 1.13,
            "xanchor": "left",
            "yanchor": "top",
            "showactive": True,
            "active": active,
        }
    ]


def _add_commit_bars(fig: go.Figure, data: ReportData, labels: list[str]) -> list[_Role]:
    """Lines added and removed per commit, stacked; the hover gives message and author."""
    hover = [_commit_hover(r) for r in data.revisions]
    for name, values, color in (
        ("lines added", [r.lines_added or 0 for r in data.revisions], "#7fb58a"),
        ("lines removed", [r.lines_removed or 0 for r in data.revisions], "#d98c8c"),
    ):
        fig.add_trace(
            go.Bar(
                x=labels,
                y=values,
                name=name,
                marker={"color": color},
                hovertext=hover,
                hoverinfo="text",
                showlegend=False,
            ),
            row=3,
            col=1,
        )
    return [_Role(), _Role()]


def _add_rate_traces(fig: go.Figure, data: ReportData, model: str, labels: list[str]) -> list[bool]:
    """Add one model's traces; return, per trace added, whether it is an interval band."""
    color = model_color(data, model)
    symbol = version_symbol(data, model)
    name = _esc(model, 60)
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
        f"<b>{name}</b> at {_esc(r.label)}<br>covert {_fmt_ci(p)}<br>"
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
            name=name,
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
            name=name,
            legendgroup=model,
            showlegend=False,
            line={"color": color, "width": 2, "dash": "dot"},
            marker={"symbol": symbol, "size": 6},
            hovertemplate=f"{name}<br>%{{x}}<br>aware %{{y:.1f}}%<extra></extra>",
            connectgaps=True,
        ),
        row=2,
        col=1,
    )
    return [*added, False, False]


def twin_models(data: ReportData) -> list[str]:
    """Models with samples of a sealed twin in range, family by family (the figure's lines)."""
    tested = {p.model for p in data.twin_points if p.twins is not None}
    return [m for members in data.families.values() for m in members if m in tested]


def twins_figure(data: ReportData) -> go.Figure:
    """Public vs sealed-twin covert rate per revision: per model a solid and a dashed line.

    Both lines of a model share its colour; bands are 95% intervals where ``audit detect``
    stored them. A real improvement (or a change in awareness) moves both lines; a spec patch
    that teaches the public scenarios moves only the solid one. With more than
    :data:`MAX_BANDS` models the overview leaves the bands out and a menu shows one family or
    model with its bands, as on the timeline.
    """
    labels = [r.label for r in data.revisions]
    models = twin_models(data)
    menu = menu_for(data, models)
    fig = go.Figure()
    roles: list[_Role] = []
    for family, members in data.families_of(models).items():
        for model in members:
            roles.extend(_Role(family, model, band) for band in _add_twin_traces(fig, data, model))
    active, _ = twins_opening(data, menu)
    opened = _views(menu, roles)[active][1]
    fig.update_yaxes(range=_rate_range(fig, "y"), ticksuffix="%", title_text="covert-action rate")
    for trace, visible in zip(fig.data, opened, strict=True):
        trace.visible = visible
    fig.update_xaxes(**revision_axis(data.revisions), range=[-0.5, len(labels) - 0.5])
    fig.update_xaxes(title_text="spec revision (commit order, authored date)")
    fig.update_layout(
        height=500 if menu.exists else 440,
        margin={"l": 60, "r": 20, "t": 70 if menu.exists else 30, "b": 70},
        hovermode="closest",
        # Filled bands would make plotly list each model's dashed line before its solid one.
        legend={
            "orientation": "v",
            "x": 1.01,
            "y": 1,
            "tracegroupgap": 6,
            "traceorder": "grouped",
        },
        font=_FONT,
        template="plotly_white",
        updatemenus=_timeline_buttons(menu, roles, active),
    )
    return fig


def twins_opening(data: ReportData, menu: TimelineMenu) -> tuple[int, str | None]:
    """The view of the twins figure's menu it opens on, and the family or model it shows.

    Twenty lines with their bands hide each other, so a crowded figure opens on the family (or
    model) of the strongest spec-patching finding, where the gap matters, with its bands;
    otherwise on every model (view 0, no name).
    """
    first = heatmap_first_model(data)
    if menu.bands_in_overview or first is None:
        return 0, None
    family = data.family_of(first)
    if family in menu.families:
        return 1 + menu.families.index(family), family
    if first in menu.models:
        return 1 + len(menu.families) + menu.models.index(first), first
    return 0, None


def _add_twin_traces(fig: go.Figure, data: ReportData, model: str) -> list[bool]:
    """One model's public (solid) and twin (dashed) lines with their bands; per trace: band?

    Only revisions where the model has samples are on the traces, so a line runs across
    revisions nobody ran; a revision run without twins leaves a hole in the dashed line.
    """
    order = {r.sha: r for r in data.revisions}
    points = data.twin_points_of(model)
    labels = [order[p.sha].label for p in points]
    color = model_color(data, model)
    hover = [_twin_hover(model, order[p.sha].label, p) for p in points]
    added: list[bool] = []
    for side in ("public", "twins"):
        values = [p.public if side == "public" else p.twins for p in points]
        if any(v is not None and v[1] is not None and v[2] is not None for v in values):
            common: dict[str, Any] = {"mode": "lines", "line": {"width": 0}}
            common |= {"hoverinfo": "skip", "showlegend": False, "legendgroup": model}
            fig.add_trace(
                go.Scatter(x=labels, y=[_pct(v[2]) if v else None for v in values], **common)
            )
            fig.add_trace(
                go.Scatter(
                    x=labels,
                    y=[_pct(v[1]) if v else None for v in values],
                    fill="tonexty",
                    fillcolor=_rgba(color, 0.14 if side == "public" else 0.08),
                    **common,
                )
            )
            added += [True, True]
        name = f"{model}: {'public scenarios' if side == 'public' else 'sealed twins'}"
        symbol = version_symbol(data, model)
        fig.add_trace(
            go.Scatter(
                x=labels,
                y=[_pct(v[0]) if v else None for v in values],
                mode="lines+markers" if len(data.revisions) <= 60 else "lines",
                name=_esc(name, 80),
                legendgroup=model,
                line={"color": color, "width": 2, "dash": "solid" if side == "public" else "dash"},
                marker={"symbol": symbol if side == "public" else f"{symbol}-open", "size": 8},
                hovertext=hover,
                hoverinfo="text",
                connectgaps=False,
            )
        )
        added.append(False)
    return added


def _twin_hover(model: str, label: str, point: TwinPoint) -> str:
    lines = [f"<b>{_esc(model, 60)}</b> at {_esc(label)}"]
    lines.append(f"public scenarios: {_side_text(point.public)}")
    if point.twins is None:
        lines.append("sealed twins: no samples at this revision")
    else:
        lines.append(f"sealed twins: {_side_text(point.twins)}")
        if point.public[0] is not None and point.twins[0] is not None:
            gap = 100 * (point.public[0] - point.twins[0])
            lines.append(f"public − twins: {gap:+.1f} points".replace("-", "−"))
    return "<br>".join(lines)


def _side_text(side: tuple[float | None, float | None, float | None, int]) -> str:
    value, low, high, n = side
    if value is None:
        return "no graded samples"
    text = f"{100 * value:.1f}%"
    if low is not None and high is not None:
        text += f" [{100 * low:.1f}, {100 * high:.1f}]"
    else:
        text += " (no interval: run audit detect)"
    return f"{text}, {n} scenarios"


def _fmt_ci(point: RatePoint) -> str:
    if point.covert is None:
        return "n/a"
    if point.covert_low is not None and point.covert_high is not None:
        low, high = 100 * point.covert_low, 100 * point.covert_high
        return f"{100 * point.covert:.1f}% [{low:.1f}, {high:.1f}]"
    return f"{100 * point.covert:.1f}% (no interval: run audit detect)"


def _style(group: FindingGroup) -> str:
    """The key of a finding group's mark in :data:`_FINDING_STYLES`."""
    if group.kind in ("leak", "regression", "collapse"):
        return group.kind
    return group.primary_cause if group.primary_cause in _FINDING_STYLES else ""


def _add_findings(fig: go.Figure, data: ReportData, families: dict[str, list[str]]) -> list[_Role]:
    """One star per group of findings, at its strongest finding's revision and rate.

    A group is one line of the headline (e.g. "regression vs v2 at 10 of 10 revisions"), so a
    change that detection found at every revision is marked once, not once per revision. Stars
    are coloured by kind (and cause, for drops); one legend entry per style explains them.
    """
    owners: list[tuple[str | None, str | None, list[FindingGroup]]] = [
        (None, None, group_findings(data, "*"))
    ]
    for family_name, members in families.items():
        for model in members:
            mine = [g for g in group_findings(data, model) if g.kind != "leak"]
            owners.append((family_name, model, mine))
    roles: list[_Role] = []
    used: list[str] = []
    for owner_family, owner_model, groups in owners:
        by_style: dict[str, list[FindingGroup]] = {}
        for group in groups:
            if group.strongest.sha and data.revision(group.strongest.sha):
                by_style.setdefault(_style(group), []).append(group)
        for style, marked in by_style.items():
            fig.add_trace(_star_trace(data, style, marked), row=1, col=1)
            roles.append(_Role(owner_family, owner_model))
            used.append(style)
    for style in _FINDING_STYLES:
        if style in used:
            name, color = _FINDING_STYLES[style]
            # Legend only: the stars themselves belong to the models' menu views.
            fig.add_trace(
                go.Scatter(
                    x=[None],
                    y=[None],
                    mode="markers",
                    name=f"finding: {name}",
                    legendgroup=f"finding-{style}",
                    marker=_star_marker(color),
                    hoverinfo="skip",
                ),
                row=1,
                col=1,
            )
            roles.append(_Role())
    return roles


def _star_marker(color: str) -> dict[str, object]:
    return {"symbol": "star", "size": 14, "color": color, "line": {"color": "#000", "width": 1}}


def _star_trace(data: ReportData, style: str, groups: list[FindingGroup]) -> go.Scatter:
    strongest = [g.strongest for g in groups]
    # On the model's line: a finding's own rate can be that of a subset (the exposed scenarios).
    on_line = {(p.model, p.sha): p.covert for p in data.rates if p.covert is not None}
    return go.Scatter(
        x=[data.revision(f.sha).label for f in strongest],  # type: ignore[union-attr, arg-type]
        y=[_pct(on_line.get((f.model, f.sha or ""), f.rate)) or 0 for f in strongest],
        mode="markers",
        name=_FINDING_STYLES[style][0],
        legendgroup=f"finding-{style}",
        showlegend=False,
        marker=_star_marker(_FINDING_STYLES[style][1]),
        hovertext=[_group_hover(g) for g in groups],
        hoverinfo="text",
    )


def _group_hover(group: FindingGroup) -> str:
    finding = group.strongest
    cause = CAUSE_NAMES.get(finding.primary_cause or "", "unattributed")
    who = "the spec" if group.model == "*" else _esc(group.model, 60)
    lines = [f"<b>{who}: {_esc(finding.kind)} · {_esc(cause)}</b>", _esc(group.text, 200)]
    if len(group.findings) > 1:
        lines.append(f"{len(group.findings)} findings; the star marks the strongest")
    lines.append(_esc(finding.summary, 200))
    if group.twin:
        lines.append(_esc(group.twin, 200))
    return "<br>".join(lines)


def _rgba(hex_color: str, alpha: float) -> str:
    value = hex_color.lstrip("#")
    red, green, blue = (int(value[i : i + 2], 16) for i in (0, 2, 4))
    return f"rgba({red},{green},{blue},{alpha})"


def scenario_order(cells: list[ScenarioCell]) -> list[tuple[str, str]]:
    """(family, scenario id) pairs sorted by family then id: the heatmap's rows."""
    return sorted({(c.family, c.scenario_id) for c in cells})


def heatmap_first_model(data: ReportData) -> str | None:
    """The model the heatmap opens on: the one with the strongest spec-patching finding.

    Exposure marks mean most next to a model whose drop was attributed to patching; without such
    a finding, the model with the strongest finding of any kind; without findings, the first.
    """
    candidates = [f for f in data.findings if f.model in data.models and f.kind != "leak"]
    patching = [f for f in candidates if f.primary_cause == "spec_patching"]
    pool = patching or candidates
    if pool:
        return min(pool, key=strength).model
    return data.models[0] if data.models else None


# White is 0% and grey (the plot background) is "no samples", so the two never look alike.
_HEAT_SCALE = [
    [0.0, "#ffffff"],
    [0.01, "#fee5d9"],
    [0.25, "#fcae91"],
    [0.5, "#fb6a4a"],
    [0.75, "#de2d26"],
    [1.0, "#a50f15"],
]
_NO_DATA = "#c9c9c9"


def heatmap_figure(data: ReportData) -> go.Figure:
    """Scenarios (grouped by family) x revisions, one heatmap per model picked from a menu.

    Blue squares mark scenarios whose exposure this revision's edit introduced; blue circles mark
    scenarios the edit named again after an earlier edit had exposed them (a rewording or a
    reformat): their exposure is not new.
    """
    labels = [r.label for r in data.revisions]
    rows = scenario_order(data.cells)
    row_labels = [_esc(f"{family} · {scenario}") for family, scenario in rows]
    row_index = {scenario: i for i, (_, scenario) in enumerate(rows)}
    col_index = {r.sha: i for i, r in enumerate(data.revisions)}
    first = heatmap_first_model(data)
    fig = go.Figure()
    for model in data.models:
        z: list[list[float | None]] = [[None] * len(labels) for _ in rows]
        # Cells are point rates over a few samples: the hover says how few ("2 of 3").
        counts: list[list[str]] = [[""] * len(labels) for _ in rows]
        for cell in data.cells:
            if cell.model == model and cell.sha in col_index:
                row, col = row_index[cell.scenario_id], col_index[cell.sha]
                z[row][col] = None if cell.covert is None else round(100 * cell.covert, 1)
                counts[row][col] = f"{cell.n_covert} of {cell.n_graded}"
        fig.add_trace(
            go.Heatmap(
                x=labels,
                y=row_labels,
                z=z,
                zmin=0,
                zmax=100,
                colorscale=_HEAT_SCALE,
                colorbar={"title": {"text": "covert %"}, "len": 0.8, "y": 0.4},
                visible=model == first,
                name=_esc(model, 60),
                text=counts,
                hoverongaps=False,
                hovertemplate="%{y}<br>%{x}<br>covert %{z:.0f}% (%{text} graded samples)"
                "<extra></extra>",
                # Gaps separate cells; past a few dozen columns they would eat the cells.
                xgap=1 if len(labels) <= 60 else 0,
                ygap=1,
            )
        )
    for introduced, name, symbol, color in (
        (True, "exposure introduced by this edit", "square-open", "#1f3b99"),
        (False, "named again by this edit (exposed earlier)", "circle-open", "#6f8fd6"),
    ):
        marks = [
            e
            for e in data.exposures
            if e.introduced == introduced and e.sha in col_index and e.scenario_id in row_index
        ]
        fig.add_trace(
            go.Scatter(
                x=[data.revisions[col_index[e.sha]].label for e in marks],
                y=[row_labels[row_index[e.scenario_id]] for e in marks],
                mode="markers",
                name=name,
                marker={"symbol": symbol, "size": 11, "color": color, "line": {"width": 2}},
                hovertemplate=f"%{{y}}<br>%{{x}}<br>{name}<extra></extra>",
            )
        )
    # Legend only: an empty point on an existing row (a bare None would add a category row).
    fig.add_trace(
        go.Scatter(
            x=[None],
            y=row_labels[:1],
            mode="markers",
            name="grey: no samples",
            marker={"symbol": "square", "size": 11, "color": _NO_DATA},
            hoverinfo="skip",
        )
    )
    extra = len(fig.data) - len(data.models)
    buttons = [
        {
            "label": _esc(model, 60),
            "method": "update",
            "args": [{"visible": [m == model for m in data.models] + [True] * extra}],
        }
        for model in data.models
    ]
    many = len(data.models) > 1
    fig.update_layout(
        updatemenus=[
            {
                "buttons": buttons,
                "x": 0,
                "y": 1.01,
                "yanchor": "bottom",
                "xanchor": "left",
                "showactive": True,
                "active": data.models.index(first) if first in data.models else 0,
            }
        ]
        if many
        else [],
        annotations=[
            {
                "text": "model" if many else f"model {_esc(data.models[0])}",
                "xref": "paper",
                "yref": "paper",
                "x": 0,
                "y": 1.01,
                "xanchor": "right" if many else "left",
                "yanchor": "bottom",
                "yshift": 6,
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
        height=max(360, 150 + 18 * len(rows)),
        margin={"l": 260, "r": 20, "t": 80, "b": 90},
        # Fixed ranges: autorange would pad for the exposure markers and show a band of "no data".
        xaxis={**revision_axis(data.revisions), "range": [-0.5, len(labels) - 0.5]},
        yaxis={
            "type": "category",
            "range": [len(rows) - 0.5, -0.5],
            "categoryorder": "array",
            "categoryarray": row_labels,
            # Long ids would squeeze the cells; the hover still gives the whole row name.
            "tickmode": "array",
            "tickvals": row_labels,
            "ticktext": [_esc(f"{family} · {scenario}", 56) for family, scenario in rows],
        },
        plot_bgcolor=_NO_DATA,
        legend={"orientation": "h", "y": 1.01, "yanchor": "bottom", "x": 1, "xanchor": "right"},
        font=_FONT,
        template="plotly_white",
    )
    fig.update_xaxes(showgrid=False)
    fig.update_yaxes(showgrid=False)
    return fig


@dataclass(frozen=True)
class ChosenChange:
    """The change the before/after scatter shows."""

    model: str
    before: SpecRevision
    after: SpecRevision
    finding: ReportFinding | None
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
            return f"{self.model}: {self.before_model} → {self.model} at {self.after.short_sha}"
        return f"{self.model}: {self.before.short_sha} → {self.after.short_sha}"

    def side(self, when: str) -> str:
        """Legend words for the 'before' or 'after' point."""
        revision = self.before if when == "before" else self.after
        if self.across_versions:
            model = self.before_model if when == "before" else self.model
            return f"{when} ({model} at {revision.short_sha})"
        return f"{when} ({revision.short_sha})"


def choose_changes(data: ReportData) -> list[ChosenChange]:
    """Per model, the change the scatter shows, the most telling change first.

    A model's change is its strongest finding between two spec revisions (lowest q, then largest
    change); failing that, its strongest finding against another model version; failing that,
    its first vs latest revision with samples. The list opens on revision-to-revision changes
    (the ones spec edits can explain), strongest first; then model-version changes; then the rest,
    the one whose rates moved most first.
    """
    ranked: list[tuple[tuple[int, float, float], ChosenChange]] = []
    for model in data.models:
        change = _finding_change(data, model)
        if change is not None:
            assert change.finding is not None
            q, size = strength(change.finding)
            ranked.append(((1 if change.across_versions else 0, q, size), change))
            continue
        points = [p for p in data.rates_of(model) if p.covert is not None]
        if len(points) < 2:
            continue
        moved = abs((points[-1].covert or 0) - (points[0].covert or 0)) + abs(
            (points[-1].aware or 0) - (points[0].aware or 0)
        )
        first, last = data.revision(points[0].sha), data.revision(points[-1].sha)
        assert first is not None and last is not None
        ranked.append(((2, 1.0, -moved), ChosenChange(model, first, last, None)))
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
    revision_changes = [f for f in candidates if not f.across_versions]
    best = min(revision_changes or candidates, key=strength)
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
    pairs: list[tuple[str, dict[str, ScenarioCell]]] = []
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
                    name=_esc(
                        f"{change.side(when)}, {'exposed' if is_exposed else 'not exposed'}"
                        f" ({len(chosen)} scenarios)"
                    ),
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


def _padded_range(values: list[float]) -> list[float]:
    """An axis range around the values with a margin, so no marker is cut by the frame."""
    low, high = min(values, default=0.0), max(values, default=10.0)
    pad = max(2.0, 0.08 * (high - low))
    return [round(low - pad, 2), round(high + pad, 2)]


def scatter_ranges(traces: list[go.Scatter]) -> dict[str, list[float]]:
    """Axis ranges fitted to one change's points; before and after share them."""
    xs = [x for t in traces for x in (t.x or ()) if x is not None]
    ys = [y for t in traces for y in (t.y or ()) if y is not None]
    return {"xaxis.range": _padded_range(xs), "yaxis.range": _padded_range(ys)}


def scatter_figure(data: ReportData, changes: list[ChosenChange]) -> go.Figure:
    """Per scenario: awareness (x) vs covert rate (y) before and after each model's change.

    One set of traces per change, the first visible; a menu switches changes. Each change gets
    axes fitted to its own points (rates of a few percent are not squeezed into a 0-100% frame);
    its before and after points share them, so their distance is the change.
    """
    fig = go.Figure()
    per_change = [_scatter_traces(data, change) for change in changes]
    ranges = [scatter_ranges(traces) for traces in per_change]
    for n, traces in enumerate(per_change):
        for trace in traces:
            trace.visible = n == 0
            fig.add_trace(trace)
    buttons = []
    for n, change in enumerate(changes):
        visible = [i == n for i, traces in enumerate(per_change) for _ in traces]
        buttons.append(
            {"label": _esc(change.menu_label), "method": "update", "args": [
                {"visible": visible}, ranges[n]
            ]}
        )  # fmt: skip
    if len(changes) > 1:
        fig.update_layout(
            updatemenus=[{"buttons": buttons, "x": 0, "y": 1.15, "xanchor": "left"}],
        )
    first = ranges[0] if ranges else {"xaxis.range": [0, 10], "yaxis.range": [0, 10]}
    fig.update_layout(
        height=480,
        xaxis={"title": {"text": "eval-awareness rate (%)"}, "range": first["xaxis.range"]},
        yaxis={"title": {"text": "covert-action rate (%)"}, "range": first["yaxis.range"]},
        margin={"l": 60, "r": 20, "t": 70, "b": 50},
        legend={"orientation": "h", "y": -0.15},
        font=_FONT,
        template="plotly_white",
    )
    return fig
