"""The drift report's sealed twins: public vs twin rates per revision, and each finding's twin gap.

Histories are planted with exact rates into a real DuckDB file against the shipped held-out set
(its real sealed twins, registered as the runner registers them), and ``audit detect`` runs for
real, so the report is checked against what detection stores.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from html import unescape
from pathlib import Path

import pytest
from analysis_fixtures import add_revisions, add_samples
from report_history import build_history
from twin_history import CONFIG, SPECS, base_rates, macro, planted, twin_history

from audit.analysis import detect
from audit.analysis.detect import TWIN_TESTED_ON
from audit.heldout.loader import HeldoutSet, load_heldout, register_heldout
from audit.records import TWIN_METRICS
from audit.report import figures, render_report
from audit.report.data import load_report_data
from audit.report.groups import group_findings
from audit.store import Store, open_store


@pytest.fixture(scope="module")
def heldout() -> HeldoutSet:
    return load_heldout()


def test_twin_figure_draws_public_solid_and_twins_dashed_from_the_estimates(
    store: Store, heldout: HeldoutSet
) -> None:
    history = twin_history(store, heldout)
    data = load_report_data(store)
    fig = figures.twins_figure(data)
    lines = {t.name: t for t in fig.data if t.name}
    assert set(lines) == {
        f"{m}: {side}"
        for m in ("mender", "patcher")
        for side in ("public scenarios", "sealed twins")
    }
    for model in ("mender", "patcher"):
        public, twins = lines[f"{model}: public scenarios"], lines[f"{model}: sealed twins"]
        assert public.line.dash == "solid" and twins.line.dash == "dash"
        assert public.line.color == twins.line.color == figures.model_color(data, model)
    stored = {
        (r["model"], r["seq"], r["metric"]): r
        for r in store.query(
            "SELECT e.model, v.seq, e.metric, e.value, e.ci_low, e.ci_high FROM estimates e "
            "JOIN spec_revisions v ON v.sha = e.sha WHERE e.scope = 'all' AND e.metric IN (?, ?)",
            list(TWIN_METRICS),
        )
    }
    patcher = lines["patcher: public scenarios"]
    assert list(patcher.y) == [
        round(100 * stored[("patcher", seq, TWIN_METRICS[0])]["value"], 2) for seq in range(3)
    ]
    # The planted rates: the patch moved only the public scenarios.
    publics, twins_ids = heldout.public_ids(), heldout.sealed_ids()
    after = history["patcher"][2]
    assert patcher.y[2] == pytest.approx(100 * macro(after, publics), abs=0.01)
    assert lines["patcher: sealed twins"].y[2] == pytest.approx(
        100 * macro(after, twins_ids), abs=0.01
    )
    # Each line has its band: the stored 95% interval as an upper and a filled lower edge.
    edges = [t for t in fig.data if not t.name and t.legendgroup == "patcher"]
    assert [list(e.y) for e in edges[2:4]] == [
        [round(100 * stored[("patcher", seq, TWIN_METRICS[1])][k], 2) for seq in range(3)]
        for k in ("ci_high", "ci_low")
    ]
    assert edges[3].fill == "tonexty"
    # mender ran no twins at r2: its dashed line stops there, the solid one goes on.
    mender = lines["mender: sealed twins"]
    expected = [100 * macro(h, twins_ids) for h in history["mender"][:2]]
    assert mender.y[:2] == pytest.approx(expected, abs=0.01)
    assert len(mender.x) == 3 and mender.y[2] is None
    assert mender.connectgaps is False


def _section(html: str, name: str) -> str:
    return html.split(f'<section id="{name}">')[1].split("</section>")[0]


def test_the_page_shows_the_twin_figure_right_after_the_timeline(
    store: Store, heldout: HeldoutSet, tmp_path: Path
) -> None:
    twin_history(store, heldout)
    html = render_report(store, tmp_path / "r.html").read_text()
    order = re.findall(r'<script type="application/json" data-figure="([^"]+)">', html)
    assert order == ["fig-timeline", "fig-twins", "fig-heatmap", "fig-scatter"]
    assert html.index('<section id="timeline">') < html.index('<section id="twins">')
    assert html.index('<section id="twins">') < html.index('<section id="findings">')
    twins = _section(html, "twins")
    assert "<b>A real improvement moves both lines alike</b>" in twins
    assert "a spec patch that teaches the public scenarios moves only the solid line" in twins
    assert f"({len(heldout.sealed_ids())} twins mirror {len(heldout.twin_pairs())} public" in twins
    r2 = load_report_data(store).revisions[2].label
    assert f"<b>mender</b> at {r2}. Comparisons that reach these points have no twin test." in (
        twins
    )
    assert "patcher</b> at" not in twins


def _points(value: float) -> str:
    return f"{100 * value:+.1f}".replace("-", "−")


def test_each_finding_shows_its_twin_gap_where_its_numbers_are(
    store: Store, heldout: HeldoutSet, tmp_path: Path
) -> None:
    twin_history(store, heldout)
    (row,) = store.query(
        "SELECT finding_id, twin_gap, twin_gap_ci_low, twin_gap_ci_high, evidence FROM findings "
        "WHERE model = 'patcher' AND kind = 'drop' AND comparison = 'consecutive'"
    )
    gap = json.loads(row["evidence"])["twin_gap"]
    assert row["twin_gap_ci_high"] < 0 and gap["twin_change"] == pytest.approx(0.0)
    html = render_report(store, tmp_path / "r.html").read_text()
    cell = html.split(f'id="finding-{row["finding_id"]}">')[1].split("</tr>")[0]
    cell = cell.split('<td class="twin">')[1].split("</td>")[0]
    assert cell.startswith(
        f'{100 * row["twin_gap"]:+.1f} <span class="muted">[{100 * row["twin_gap_ci_low"]:+.1f}, '
        f"{100 * row['twin_gap_ci_high']:+.1f}]</span>"
    )
    assert (
        f"public {100 * gap['public_change']:+.1f}, twins {100 * gap['twin_change']:+.1f} "
        f"({gap['n_pairs']} pairs)"
    ) in cell
    words = (
        f"twin gap {_points(row['twin_gap'])} points (95% CI {_points(row['twin_gap_ci_low'])} "
        f"to {_points(row['twin_gap_ci_high'])}): public scenarios "
        f"{_points(gap['public_change'])}, their sealed twins {_points(gap['twin_change'])} "
        f"({gap['n_pairs']} pairs, q = {gap['q_value']:.2g})"
    )
    data = load_report_data(store)
    group = next(g for g in group_findings(data, "patcher") if g.comparison == "consecutive")
    assert group.twin == words
    # In the headline card's line, the findings group's summary and the timeline star's hover.
    shown = f'<div class="sub twin">{words}</div>'
    line = _section(html, "headline").split(f'href="#group-{group.group_id}"')[1]
    assert shown in line.split("</li>")[0]
    assert shown in html.split(f'id="group-{group.group_id}"')[1].split("</summary>")[0]
    timeline = re.search(r'data-figure="fig-timeline">(.*?)</script>', html, flags=re.S)
    assert timeline is not None
    hovers = [h for t in json.loads(timeline.group(1))["data"] for h in t.get("hovertext") or []]
    assert any(unescape(words) in unescape(h) for h in hovers if isinstance(h, str))
    # The genuine improvement moved the twins too: its gap's interval holds zero.
    mender = next(
        f for f in data.findings if f.model == "mender" and f.sha == data.revisions[1].sha
    )
    assert mender.twin is not None and mender.twin.ci_low < 0 < mender.twin.ci_high  # type: ignore[operator]
    # Where a comparison reaches a point without twins, the finding says so.
    no_twins = [f for f in data.findings if f.model == "mender" and f.twin is None]
    assert no_twins
    for finding in no_twins:
        row_html = html.split(f'id="finding-{finding.finding_id}">')[1].split("</tr>")[0]
        assert '<td class="twin"><span class="muted">no twin samples</span></td>' in row_html


def test_a_finding_of_the_twin_test_alone_reads_as_its_public_scenarios(
    store: Store, heldout: HeldoutSet, tmp_path: Path
) -> None:
    """Every scenario regresses by 10 points except ten taught public ones: over the whole set
    nothing is significant, the twin test finds the drop, with the public scenarios' numbers."""
    register_heldout(store, heldout)
    add_revisions(store, SPECS[:2])
    base = base_rates(heldout)
    taught = {public for public, _ in heldout.twin_pairs()[:10]}
    after = {s: 0.0 if s in taught else min(1.0, r + 0.1) for s, r in base.items()}
    add_samples(store, "m", SPECS[0], planted(base), epochs=20)
    add_samples(store, "m", SPECS[1], planted(after), epochs=20)
    (finding,) = [f for f in detect(store, CONFIG) if f.kind != "none"]
    assert finding.tested_on == TWIN_TESTED_ON
    n_pairs = len(heldout.twin_pairs())
    data = load_report_data(store)
    (group,) = group_findings(data, "m")
    assert f"{_points(finding.delta or 0)} points on the public scenarios with sealed twins" in (
        group.text
    )
    assert "on all scenarios" not in group.text
    html = render_report(store, tmp_path / "r.html").read_text()
    row = html.split(f'id="finding-{finding.finding_id}">')[1].split("</tr>")[0]
    assert (
        f'<td class="num">{100 * (finding.delta or 0):+.1f} <span class="muted">'
        f"[{100 * (finding.delta_ci_low or 0):+.1f}, {100 * (finding.delta_ci_high or 0):+.1f}]"
        f'</span><div class="muted">on the {n_pairs} public scenarios with sealed twins only</div>'
    ) in row
    assert f"on the {n_pairs} public scenarios with sealed twins at" in unescape(row)


def test_a_run_without_twins_says_so(store: Store, heldout: HeldoutSet, tmp_path: Path) -> None:
    register_heldout(store, heldout)
    add_revisions(store, SPECS[:2])
    rates = {s: r for s, r in base_rates(heldout).items() if s in heldout.public_ids()}
    add_samples(store, "m", SPECS[0], planted(rates))
    add_samples(store, "m", SPECS[1], planted({s: r / 2 for s, r in rates.items()}))
    detect(store, CONFIG)
    html = render_report(store, tmp_path / "r.html").read_text()
    assert 'data-figure="fig-twins"' not in html
    assert "No run in range included the <b>sealed twins</b>" in _section(html, "twins")
    findings = _section(html, "findings")
    assert findings.count('<td class="twin"><span class="muted">no twin samples</span></td>') == 1


def test_a_set_without_twins_says_so(store: Store, tmp_path: Path) -> None:
    build_history(store, revisions=3, models=1, scenarios=4, epochs=1)
    html = render_report(store, tmp_path / "r.html").read_text()
    assert "has <b>no sealed twins</b>" in _section(html, "twins")
    assert 'data-figure="fig-twins"' not in html


def test_a_crowded_twin_figure_opens_on_the_patchers_family_with_bands(
    store: Store, heldout: HeldoutSet, tmp_path: Path
) -> None:
    twin_history(store, heldout)
    # Two versions of each line: four models, more than the overview shows bands for.
    store.con.execute("DELETE FROM findings; DELETE FROM estimates")
    store.con.execute(
        "INSERT INTO samples SELECT * REPLACE (model || '-v2' AS model, "
        "sample_key || '-v2' AS sample_key) FROM samples"
    )
    store.con.execute("UPDATE samples SET model = model || '-v1' WHERE model NOT LIKE '%-v2'")
    detect(store, CONFIG)
    data = load_report_data(store)
    assert figures.heatmap_first_model(data) in ("patcher-v1", "patcher-v2")
    fig = figures.twins_figure(data)
    (menu,) = fig.layout.updatemenus
    labels = [b.label for b in menu.buttons]
    assert labels[0] == "all models (no bands)"
    assert labels[menu.active] == "patcher (with bands)"
    shown = {t.name for t in fig.data if t.name and t.visible is not False}
    assert shown == {
        f"patcher-{v}: {s}" for v in ("v1", "v2") for s in ("public scenarios", "sealed twins")
    }
    bands = [t for t in fig.data if not t.name and t.legendgroup.startswith("patcher")]
    assert bands and all(t.visible is not False for t in bands)
    html = render_report(store, tmp_path / "r.html").read_text()
    assert "it opens on <b>patcher</b>, where the strongest spec-patching finding is" in html


def _paste(command: str, cwd: Path) -> str:
    """Run a command the way a shell user who pasted it would, and return what it printed."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(
        ["bash", "-c", command], capture_output=True, text=True, cwd=cwd, env=env, timeout=300
    )
    assert result.returncode == 0, (command, result.stderr)
    return result.stdout


def test_the_twin_numbers_can_be_reproduced_from_the_database(
    heldout: HeldoutSet, tmp_path: Path
) -> None:
    with open_store(tmp_path / "audit.duckdb") as store:
        twin_history(store, heldout)
        html = render_report(store, tmp_path / "r.html").read_text()
        data = load_report_data(store)
    box = _section(html, "reproduce")
    commands = {
        unescape(h): unescape(c)
        for h, c in re.findall(r"<h3>(.*?)</h3>\s*<pre>(.*?)</pre>", box, flags=re.S)
    }
    twins = _paste(
        next(c for h, c in commands.items() if h.startswith("Public vs sealed")), tmp_path
    )
    label = {r.sha: r.label for r in data.revisions}
    checked = 0
    for point in data.twin_points:
        if point.twins is None:
            continue
        (pub, pub_low, pub_high, n_pub), (twin, low, high, n_twin) = point.public, point.twins
        assert None not in (pub, pub_low, pub_high, twin, low, high)
        line = (
            f"{point.model},{label[point.sha]},{100 * pub:.1f},{100 * pub_low:.1f}–"  # type: ignore[operator]
            f"{100 * pub_high:.1f},{100 * twin:.1f},{100 * low:.1f}–{100 * high:.1f},"  # type: ignore[operator]
            f"{n_pub},{n_twin}"
        )
        assert line in twins, (line, twins)
        checked += 1
    assert checked == 5  # patcher at three revisions, mender at two
    findings = _paste(
        next(c for h, c in commands.items() if h.startswith("Every stored")), tmp_path
    )
    for finding in data.findings:
        if finding.twin is not None:
            gap = finding.twin
            assert (
                f'{100 * gap.gap:+.1f},"[{100 * gap.ci_low:+.1f}, {100 * gap.ci_high:+.1f}]"'  # type: ignore[operator]
                in findings
            )
