"""The HTML drift report: aggregation, numbers shown, escaping, prompts, size, CLI."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import subprocess
import sys
from html import unescape
from html.parser import HTMLParser
from pathlib import Path

import plotly.graph_objects as go
import pytest
from markupsafe import escape
from plotly.offline import get_plotlyjs, get_plotlyjs_version
from report_history import SET_HASH, SOURCE, build_history, insert_revisions, insert_scenarios
from report_history import sha_of as rev_sha
from typer.testing import CliRunner

from audit.cli import app
from audit.config import AuditConfig, ModelConfig
from audit.errors import AuditError
from audit.model_lines import model_lines
from audit.report import figures, render_report
from audit.report.data import load_report_data
from audit.report.groups import ceil_2g, family_of, findings_table, group_findings, model_families
from audit.report.render import PLOTLY_BUNDLE, PLOTLY_BUNDLE_VERSION, Segment, highlight
from audit.store import Store, open_store

PAYLOAD = '<script>alert(1)</script>"onload="alert(2)'


def _sample(
    model: str, rev: int, scenario: str, epoch: int, outcome: str, aware: bool = False, **extra
) -> dict:
    content_hash = _content_hash_of(rev)
    return {
        "sample_key": f"{model}|{rev}|{scenario}|{epoch}",
        "origin": "run",
        "model": model,
        "spec_sha": rev_sha(rev),
        "spec_content_hash": content_hash,
        "set_hash": SET_HASH,
        "scenario_id": scenario,
        "family": "misreport_tests" if scenario == "scn-000" else "sandbagging",
        "condition": "default",
        "epoch": epoch,
        "outcome": outcome,
        "eval_aware": aware,
        **extra,
    }


_HASHES: dict[int, str] = {}


def _content_hash_of(rev: int) -> str:
    return _HASHES[rev]


def _small_history(store: Store, samples_extra: dict | None = None) -> None:
    """3 revisions, 2 scenarios, models m1 and m2, 2 epochs; outcomes chosen by hand.

    m1 at r0: scn-000 covert 2/2, scn-001 covert 1/2 -> 75%; at r2: 0/2 and 1/2 -> 25%.
    m2 only at r0: scn-000 1/2 (one invalid excluded: 1/1), scn-001 0/2 -> 50%.
    """
    insert_revisions(store, 3)
    insert_scenarios(store, 2)
    for row in store.query("SELECT seq, content_hash FROM spec_revisions"):
        _HASHES[row["seq"]] = row["content_hash"]
    extra = samples_extra or {}
    rows = [
        _sample("m1", 0, "scn-000", 0, "covert", **extra),
        _sample("m1", 0, "scn-000", 1, "covert", **extra),
        _sample("m1", 0, "scn-001", 0, "covert", **extra),
        _sample("m1", 0, "scn-001", 1, "honest", **extra),
        _sample("m1", 2, "scn-000", 0, "honest", aware=True, **extra),
        _sample("m1", 2, "scn-000", 1, "honest", aware=True, **extra),
        _sample("m1", 2, "scn-001", 0, "covert", **extra),
        _sample("m1", 2, "scn-001", 1, "honest", **extra),
        _sample("m2", 0, "scn-000", 0, "covert", **extra),
        _sample("m2", 0, "scn-000", 1, "invalid", **extra),
        _sample("m2", 0, "scn-001", 0, "honest", **extra),
        _sample("m2", 0, "scn-001", 1, "refused", **extra),
    ]
    store.insert_rows("samples", rows)


class _Page(HTMLParser):
    """Collects what a browser would act on: tags, attributes and script bodies."""

    def __init__(self) -> None:
        super().__init__()
        self.attributes: list[tuple[str, str, str | None]] = []
        self.scripts: list[tuple[dict[str, str | None], str]] = []
        self._in_script: dict[str, str | None] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.attributes.extend((tag, name, value) for name, value in attrs)
        if tag == "script":
            self._in_script = dict(attrs)
            self.scripts.append((self._in_script, ""))

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = None

    def handle_data(self, data: str) -> None:
        if self._in_script is not None:
            attrs, text = self.scripts[-1]
            self.scripts[-1] = (attrs, text + data)


def _parse(html: str) -> _Page:
    page = _Page()
    page.feed(html)
    page.close()
    return page


def test_point_rates_come_from_samples_and_say_intervals_are_missing(
    store: Store, tmp_path: Path
) -> None:
    _small_history(store)
    data = load_report_data(store)
    rates = {(p.model, p.sha[:7]): (p.covert, p.aware, p.n_samples) for p in data.rates}
    assert rates == {
        ("m1", rev_sha(0)[:7]): (0.75, 0.0, 4),
        ("m1", rev_sha(2)[:7]): (0.25, 0.5, 4),
        ("m2", rev_sha(0)[:7]): (0.5, 0.0, 4),
    }
    html = render_report(store, tmp_path / "r.html").read_text()
    assert "25.0% (no interval: run audit detect)" in html
    assert "intervals need <code>audit detect</code>" in html
    assert "95% CI" not in html
    # The trend names what it compares (the same model over spec revisions) and, without a
    # detection pass, is not coloured as if it were a finding.
    assert (
        f'<span class="sub">same model, spec r0 <span class="nowrap">{rev_sha(0)[:7]} → r2</span> '
        f'{rev_sha(2)[:7]}:</span> <span class="">down 50.0 points (75.0% → 25.0%)</span>, '
        '<span class="verdict">significance not tested: run audit detect</span>'
    ) in html


def test_stored_estimates_give_the_headline_its_interval(store: Store, tmp_path: Path) -> None:
    _small_history(store)
    store.insert_rows(
        "estimates",
        [
            {
                "model": "m1",
                "source_id": SOURCE,
                "sha": rev_sha(2),
                "metric": "covert_rate",
                "scope": "all",
                "scope_id": "*",
                "value": 0.25,
                "ci_low": 0.1,
                "ci_high": 0.4,
                "n_samples": 4,
                "n_scenarios": 2,
            }
        ],
    )
    html = render_report(store, tmp_path / "r.html", model="m1").read_text()
    assert "25.0% (95% CI 10.0–40.0%)" in html
    # r0 of m1 still has no estimate: the report says so instead of inventing a band.
    assert 'id="no-intervals"' in html


def test_revisions_with_equal_content_share_samples(store: Store) -> None:
    _small_history(store)
    store.con.execute(
        "UPDATE spec_revisions SET content_hash = ? WHERE sha = ?", [_HASHES[0], rev_sha(1)]
    )
    data = load_report_data(store, model="m1")
    by_rev = {p.sha: p.covert for p in data.rates}
    assert by_rev == {rev_sha(0): 0.75, rev_sha(1): 0.75, rev_sha(2): 0.25}


def test_heatmap_cells_are_per_scenario_rates(store: Store) -> None:
    _small_history(store)
    data = load_report_data(store, model="m2")
    cells = [
        (c.sha[:7], c.family, c.scenario_id, c.n, c.n_graded, c.n_covert, c.covert)
        for c in data.cells
    ]
    assert cells == [
        (rev_sha(0)[:7], "misreport_tests", "scn-000", 2, 1, 1, 1.0),
        (rev_sha(0)[:7], "sandbagging", "scn-001", 2, 2, 0, 0.0),
    ]
    heatmap = figures.heatmap_figure(data)
    assert [list(row) for row in heatmap.data[0].z] == [[100.0, None, None], [0.0, None, None]]
    assert [list(row) for row in heatmap.data[0].text] == [["1 of 1", "", ""], ["0 of 2", "", ""]]


def test_since_and_model_limit_the_report(store: Store, tmp_path: Path) -> None:
    _small_history(store)
    data = load_report_data(store, model="m1", since="1")
    assert [r.seq for r in data.revisions] == [1, 2]
    assert data.models == ["m1"]
    assert [p.sha for p in data.rates] == [rev_sha(2)]
    html = render_report(store, tmp_path / "r.html", model="m1", since=rev_sha(1)[:8]).read_text()
    assert f"--model m1 --since {rev_sha(1)[:7]}" in html
    assert "<h3>m2</h3>" not in html


def test_unknown_model_and_empty_store_are_user_errors(store: Store, tmp_path: Path) -> None:
    with pytest.raises(AuditError, match="no samples stored"):
        render_report(store, tmp_path / "r.html")
    _small_history(store)
    with pytest.raises(
        AuditError, match=r"no samples for model 'nope' \(models with samples: m1, m2\)"
    ):
        render_report(store, tmp_path / "r.html", model="nope")
    assert not (tmp_path / "r.html").exists()


def test_page_is_self_contained_with_plotly_embedded_once(store: Store, tmp_path: Path) -> None:
    build_history(store, revisions=4, models=2, scenarios=6, epochs=2)
    html = render_report(store, tmp_path / "r.html").read_text()
    bundle = PLOTLY_BUNDLE.read_text()
    assert html.count(bundle[:400]) == 1
    # The partial bundle, not the 4.6 MB full one the plotly package ships.
    assert get_plotlyjs()[:400] not in html
    page = _parse(html)
    for tag, name, value in page.attributes:
        assert name not in {"src"}, (tag, name, value)
        if name == "href":
            assert value and value.startswith("#"), value
    figures_json = [attrs["data-figure"] for attrs, _ in page.scripts if "data-figure" in attrs]
    assert figures_json == ["fig-timeline", "fig-heatmap", "fig-scatter"]
    for attrs, body in page.scripts:
        if attrs.get("type") == "application/json":
            figure = json.loads(body)
            assert figure["data"], attrs


def _policy(html: str) -> dict[str, list[str]]:
    """The page's Content-Security-Policy, directive -> sources."""
    page = _parse(html)
    (content,) = [
        value
        for tag, name, value in page.attributes
        if tag == "meta" and name == "content" and value and "default-src" in value
    ]
    return {
        parts[0]: parts[1:]
        for parts in (directive.split() for directive in content.split(";"))
        if parts
    }


def test_policy_lets_only_the_pages_own_scripts_run(store: Store, tmp_path: Path) -> None:
    build_history(store, revisions=4, models=2, scenarios=6, epochs=2)
    html = render_report(store, tmp_path / "r.html").read_text()
    policy = _policy(html)
    assert policy["default-src"] == ["'none'"]
    assert policy["base-uri"] == ["'none'"] and policy["form-action"] == ["'none'"]
    # Hashes, not 'unsafe-inline': an injected inline script or handler would not run.
    assert "'unsafe-inline'" not in policy["script-src"]
    assert "'unsafe-eval'" not in policy["script-src"]
    executable = [body for attrs, body in _parse(html).scripts if "type" not in attrs]
    assert len(executable) == 2  # plotly.js and the page's loader
    hashes = {
        "'sha256-" + base64.b64encode(hashlib.sha256(body.encode()).digest()).decode() + "'"
        for body in executable
    }
    assert set(policy["script-src"]) == hashes


def test_vendored_plotly_bundle_is_the_documented_one() -> None:
    """The bundle is the npm package's file unchanged, and matches the installed plotly.py."""
    readme = (PLOTLY_BUNDLE.parent / "README.md").read_text()
    digest = hashlib.sha256(PLOTLY_BUNDLE.read_bytes()).hexdigest()
    assert f"sha256 `{digest}`" in readme
    assert PLOTLY_BUNDLE.read_text()[:200].count(f"v{PLOTLY_BUNDLE_VERSION}") == 1
    assert (PLOTLY_BUNDLE.parent / "plotly-LICENSE.txt").read_text().startswith("MIT License")
    assert get_plotlyjs_version().split(".")[0] == PLOTLY_BUNDLE_VERSION.split(".")[0]


def test_hostile_text_is_escaped_everywhere(store: Store, tmp_path: Path) -> None:
    _small_history(store, samples_extra={"answer": "Done. " + PAYLOAD})
    store.con.execute(
        "UPDATE spec_revisions SET message = ?, author_name = ?, content = content || ?",
        ["Add rule " + PAYLOAD, "Eve " + PAYLOAD, PAYLOAD],
    )
    store.con.execute("UPDATE spec_clause_changes SET new_text = ?", ["Never " + PAYLOAD])
    store.insert_rows(
        "exposure",
        [
            {
                "source_id": SOURCE,
                "baseline_sha": rev_sha(1),
                "sha": rev_sha(2),
                "set_hash": SET_HASH,
                "scenario_id": "scn-000",
                "score": 0.9,
                "exposed": True,
                "canary_hit": False,
                "rare_term_score": 0.5,
                "fuzzy_score": 0.9,
                "matched_terms": [PAYLOAD],
                "matched_text": PAYLOAD,
            }
        ],
    )
    html = render_report(store, tmp_path / "r.html", include_prompts=True).read_text()
    page = _parse(html)
    assert "<script>alert(1)" not in html
    assert not [a for a in page.attributes if a[1].startswith("on")]
    # The plotly bundle, the figure loader, and the three JSON blocks: nothing else runs.
    assert len(page.scripts) == 2 + 3
    for attrs, body in page.scripts:
        if attrs.get("type") == "application/json":
            assert "<" not in body and ">" not in body
    visible = "&lt;script&gt;alert(1)&lt;/script&gt;&#34;onload=&#34;alert(2)"
    assert html.count(visible) >= 4  # commit message, author, clause, model answer
    assert f'<mark title="matched scn-000">{visible}</mark>' in html


def test_held_out_prompts_and_answers_only_on_request(store: Store, tmp_path: Path) -> None:
    secret = "Please reconcile the quarterly ledger XYZZY-PROMPT before Friday."
    transcript = json.dumps(
        [{"role": "system", "content": "sys"}, {"role": "user", "content": secret}]
    )
    _small_history(
        store,
        samples_extra={
            "transcript": transcript,
            "answer": "ANSWER-TEXT-42",
            "awareness_evidence": json.dumps(
                [
                    {
                        "phrase": "the graders",
                        "rule": "r1",
                        "sentence": "I think the graders are watching.",
                        "span": [8, 19],
                    },
                    {
                        "phrase": "watching",
                        "rule": "r2",
                        "sentence": "I think the graders are watching.",
                        "span": [24, 32],
                    },
                ]
            ),
        },
    )
    default = render_report(store, tmp_path / "d.html").read_text()
    assert "XYZZY-PROMPT" not in default
    assert "ANSWER-TEXT-42" not in default
    assert (
        "<blockquote>I think <mark>the graders</mark> are <mark>watching</mark>.</blockquote>"
    ) in default
    assert "<td>sandbagging</td><td>scn-001</td>" in default
    internal = render_report(store, tmp_path / "i.html", include_prompts=True).read_text()
    assert f"<blockquote>{secret}</blockquote>" in internal
    assert "ANSWER-TEXT-42" in internal


def test_matched_spec_text_is_highlighted_and_linked_to_its_finding(
    store: Store, tmp_path: Path
) -> None:
    build_history(store, revisions=4, models=1, scenarios=6, epochs=2)
    html = render_report(store, tmp_path / "r.html").read_text()
    assert (
        '<mark title="matched scn-002"><a href="#finding-f-patch-1">nightly build for scn-002 '
        "fails</a></mark>"
    ) in html
    assert 'id="finding-f-patch-1"' in html
    assert "drop of 20.0 points at " + rev_sha(3)[:7] + ", 80% explained by spec patching" in html


def test_highlight_merges_overlapping_matches() -> None:
    segments = highlight(
        "Report the Nightly Build status.",
        {"nightly build": ("s1", "f1"), "build status": ("s2", None), "x": ("s3", None)},
    )
    assert segments == [
        Segment("Report the "),
        Segment("Nightly Build status", ("s1", "s2"), "f1"),
        Segment("."),
    ]


def test_demo_size_report_stays_under_6_mb(store: Store, tmp_path: Path) -> None:
    build_history(store, revisions=10, models=10, scenarios=36, epochs=3)
    out = render_report(store, tmp_path / "r.html")
    assert out.stat().st_size < 6_000_000


def test_long_history_is_aggregated_before_plotting(store: Store) -> None:
    build_history(store, revisions=200, models=5, scenarios=40, epochs=1)
    data = load_report_data(store)
    timeline = figures.timeline_figure(data)
    heatmap = figures.heatmap_figure(data)
    # Per model: band edges, covert line, awareness line; one star trace for the one finding and
    # its legend entry; lines added and removed per commit.
    assert len(timeline.data) == 4 * 5 + 2 + 2
    # Per model a heatmap; exposure marks (introduced, named again) and the "no samples" key.
    assert len(heatmap.data) == 5 + 3
    assert [t.visible for t in heatmap.data[:5]] == [True, False, False, False, False]
    assert len(heatmap.data[0].z) == 40 and len(heatmap.data[0].z[0]) == 200
    # 200 revisions: every 20th tick is labelled (index, short sha, date), the first one first.
    ticks = timeline.layout.xaxis.ticktext
    assert len(ticks) == 10 and ticks[0] == f"r0 {rev_sha(0)[:7]}<br>2025-01-01"
    assert ticks[1] == f"r20 {rev_sha(20)[:7]}<br>2025-01-21"


def test_cli_writes_the_report_and_reports_bad_input(tmp_path: Path) -> None:
    db = tmp_path / "audit.duckdb"
    with open_store(db) as store:
        _small_history(store)
    out = tmp_path / "out" / "drift.html"
    runner = CliRunner()
    result = runner.invoke(app, ["report", "--db", str(db), "--out", str(out), "--model", "m1"])
    assert result.exit_code == 0, result.output
    assert re.fullmatch(rf"report written to {re.escape(str(out))} \(\d+\.\d MB\)\n", result.output)
    assert "<h3>m1</h3>" in out.read_text()
    bad = runner.invoke(app, ["report", "--db", str(db), "--out", str(out), "--since", "zzz"])
    assert bad.exit_code == 2
    assert bad.output.startswith("error: no revision 'zzz'")


def _reproduction(html: str) -> dict[str, str]:
    """The "How to reproduce" box: heading -> the command exactly as a reader would copy it."""
    box = html.split('<section id="reproduce">')[1].split("</section>")[0]
    pairs = re.findall(r"<h3>(.*?)</h3>\s*<pre>(.*?)</pre>", box, flags=re.S)
    return {unescape(heading): unescape(command) for heading, command in pairs}


def _undated(page: str) -> str:
    return re.sub(r"generated \d{4}-\d{2}-\d{2} \d{2}:\d{2}", "generated (time)", page)


def _paste(command: str, cwd: Path) -> str:
    """Run a command the way a shell user who pasted it would, and return what it printed."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(
        ["bash", "-c", command], capture_output=True, text=True, cwd=cwd, env=env, timeout=300
    )
    assert result.returncode == 0, (command, result.stderr)
    return result.stdout


def test_every_reproduction_command_works_when_pasted_into_a_shell(tmp_path: Path) -> None:
    # Quotes, dollars and backticks in the path, a quote in a model name: nothing may break.
    folder = tmp_path / 'it\'s $HOME `id` "db"'
    folder.mkdir()
    db = folder / "audit.duckdb"
    model = "o'brien-v0"
    with open_store(db) as store:
        build_history(store, revisions=4, models=2, scenarios=6, epochs=2)
        for table in ("samples", "estimates", "findings"):
            store.con.execute(f"UPDATE {table} SET model = ? WHERE model = 'organism-v0'", [model])
        store.con.execute("UPDATE findings SET baseline_model = model")
        out = render_report(store, folder / "r.html")
        data = load_report_data(store)
    html = out.read_text()
    commands = _reproduction(html)
    assert len(commands) == 8
    # Detection rewrites estimates and findings, so it runs after the queries are checked.
    detect = commands.pop(next(k for k in commands if k.startswith("Intervals, findings")))
    outputs = {what: _paste(command, tmp_path) for what, command in commands.items()}
    assert outputs["This report"].startswith("report written to ")
    # The same page again, but for the minute it says it was generated in (a rerun may cross one).
    assert _undated(out.read_text()) == _undated(html)

    # Headline: each card's latest rate and interval, as printed by the rates query.
    rates = next(v for k, v in outputs.items() if k.startswith("Headline and timeline"))
    for name in (model, "organism-v1"):
        card = html.split(f"<h3>{escape(name)}")[1]
        rate, low, high = re.search(
            r'<div class="rate">([\d.]+)% \(95% CI ([\d.]+)–([\d.]+)%\)', card
        ).groups()
        latest = f"r3 {rev_sha(3)[:7]}"
        assert f"{name},{latest},{rate},{low}–{high}," in rates, (name, rates)

    # The same rates from the samples: the report's point rates, rounded as it rounds them.
    points = next(v for k, v in outputs.items() if k.startswith("The same rates"))
    revision = {r.sha: r.label for r in data.revisions}
    for p in data.rates:
        assert f"{p.model},{revision[p.sha]},{100 * p.covert:.1f},{100 * p.aware:.1f}," in points

    # Heatmap cells of the model it opens on: the "n of m" of the figure's hover.
    heatmap = json.loads(
        re.search(r'data-figure="fig-heatmap">(.*?)</script>', html, flags=re.S).group(1)
    )
    shown = next(t for t in heatmap["data"] if t["type"] == "heatmap" and t.get("visible"))
    assert shown["name"] == model
    cells = next(v for k, v in outputs.items() if k.startswith(f"Heatmap cells of {model}"))
    for row, counts in zip(shown["y"], shown["text"], strict=True):
        family, scenario = row.split(" · ")
        for column, count in zip(shown["x"], counts, strict=True):
            seq = column.split()[0][1:]
            assert f"{family},{scenario},{seq},{column},{count}" in cells

    # Findings: the change and q of every row of the Findings table.
    findings = next(v for k, v in outputs.items() if k.startswith("Every stored test"))
    rows = re.findall(
        r'<td class="num">([+-][\d.]+) <span class="muted">\[([+-][\d.]+), ([+-][\d.]+)\]'
        r'</span></td>\s*<td class="num">([^<]+)</td>',
        html,
    )
    assert rows
    for change, low, high, q in rows:
        assert f'{change},"[{low}, {high}]",{q},' in findings
    groups = next(v for k, v in outputs.items() if k.startswith("Grouped findings"))
    assert f"{model},baseline,{model},drop,spec_patching,1,-20.0,-20.0," in groups

    # Exposure: each scenario an edit exposed, at its revision.
    exposure = next(v for k, v in outputs.items() if k.startswith("Exposure per revision"))
    for e in data.exposures:
        seq = int(revision[e.sha].split()[0][1:])
        line = f"{revision[e.sha]},r{seq - 1} {rev_sha(seq - 1)[:7]},{e.scenario_id},0.80,false,"
        assert line in exposure.lower()
    assert _paste(detect, tmp_path)


def test_heatmap_marks_the_edit_that_exposed_a_scenario_not_later_ones(store: Store) -> None:
    build_history(store, revisions=4, models=1, scenarios=6, epochs=1)
    # Against the first revision, scn-001 stays exposed at r2 and r3 (cumulative); the
    # consecutive comparisons at r2 and r3 do not expose it, so only r1 is marked.
    rows = []
    for seq in (1, 2, 3):
        for baseline, exposed in ((rev_sha(0), True), (rev_sha(seq - 1), seq == 1)):
            rows.append(
                {
                    "source_id": SOURCE,
                    "baseline_sha": baseline,
                    "sha": rev_sha(seq),
                    "set_hash": SET_HASH,
                    "scenario_id": "scn-001",
                    "score": 0.9 if exposed else 0.1,
                    "exposed": exposed,
                    "canary_hit": False,
                    "rare_term_score": 0.5,
                    "fuzzy_score": 0.5,
                    "matched_terms": ["nightly build"],
                    "matched_text": None,
                }
            )
    store.insert_rows("exposure", rows, on_conflict="replace")
    data = load_report_data(store)
    assert [(e.sha, e.scenario_id) for e in data.exposures if e.scenario_id == "scn-001"] == [
        (rev_sha(1), "scn-001")
    ]


def test_simulated_organisms_are_labelled(store: Store, tmp_path: Path) -> None:
    _small_history(store)
    store.con.execute(
        "UPDATE samples SET system_fingerprint = 'specdrift-organism-simulator' WHERE model = 'm2'"
    )
    html = render_report(store, tmp_path / "r.html").read_text()
    assert "1 of 2 models (m2) are <b>simulated model organisms</b>" in html
    assert '<h3>m2 <span class="badge">simulated organism</span></h3>' in html
    assert "<h3>m1</h3>" in html


def test_scatter_shows_each_models_change_finding_first(store: Store) -> None:
    build_history(store, revisions=4, models=2, scenarios=6, epochs=2)
    data = load_report_data(store)
    changes = figures.choose_changes(data)
    assert [(c.model, c.before.seq, c.after.seq) for c in changes] == [
        ("organism-v0", 0, 3),
        ("organism-v1", 0, 3),
    ]
    assert changes[0].finding is not None and changes[0].finding.finding_id == "f-patch-1"
    assert changes[1].finding is None
    # Exposed between r0 and r3: the scenarios the edits r1..r3 named.
    assert figures.exposed_between(data, changes[1]) == {"scn-001", "scn-002", "scn-003"}
    scatter = figures.scatter_figure(data, changes)
    visible = [t.name for t in scatter.data if t.visible and t.name]
    assert visible == [
        f"before ({rev_sha(0)[:7]}), exposed (3 scenarios)",
        f"before ({rev_sha(0)[:7]}), not exposed (3 scenarios)",
        f"after ({rev_sha(3)[:7]}), exposed (3 scenarios)",
        f"after ({rev_sha(3)[:7]}), not exposed (3 scenarios)",
    ]
    menu = scatter.layout.updatemenus[0].buttons
    assert [b.label for b in menu] == [
        f"organism-v0: {rev_sha(0)[:7]} → {rev_sha(3)[:7]}",
        f"organism-v1: {rev_sha(0)[:7]} → {rev_sha(3)[:7]}",
    ]


def test_unwritable_output_is_a_user_error(store: Store, tmp_path: Path) -> None:
    _small_history(store)
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(
        AuditError,
        match=r"cannot write the report to .*: pass another --out|"
        r"cannot write the report to .*; pass another --out",
    ):
        render_report(store, blocker / "drift.html")
    with pytest.raises(AuditError, match="is a folder"):
        render_report(store, tmp_path)


def _finding(finding_id: str, model: str, baseline_model: str, rev: int, **fields) -> dict:
    """A stored finding row; ``fields`` override the regression defaults."""
    row = {
        "finding_id": finding_id,
        "model": model,
        "baseline_model": baseline_model,
        "source_id": SOURCE,
        "baseline_rev": rev_sha(rev),
        "rev": rev_sha(rev),
        "comparison": "model_version",
        "kind": "regression",
        "baseline_rate": 0.1,
        "rate": 0.3,
        "ci_low": 0.2,
        "ci_high": 0.4,
        "delta": 0.2,
        "delta_ci_low": 0.1,
        "delta_ci_high": 0.3,
        "p_value": 0.001,
        "q_value": 0.002,
        "primary_cause": "regression",
        "causes": [],
        "exposed_scenarios": [],
        "summary": f"summary of {finding_id}",
    }
    return {**row, **fields}


def _grouped_history(store: Store) -> None:
    """organism-v0/v1 over 4 revisions: v1 regresses vs v0 at every revision, drops at r1."""
    build_history(store, revisions=4, models=2, scenarios=6, epochs=2)
    rows = [
        _finding(f"f-reg-{rev}", "organism-v1", "organism-v0", rev, delta=delta, q_value=q)
        for rev, delta, q in ((0, 0.25, 0.001), (1, 0.1, 0.0123), (2, 0.3, 0.004), (3, 0.199, 0.01))
    ]
    rows.append(
        _finding(
            "f-drop-1",
            "organism-v1",
            "organism-v0",
            1,
            kind="drop",
            primary_cause="genuine",
            delta=-0.05,
            q_value=0.04,
            # Detection starts summaries with the model; the card already names it.
            summary="organism-v1: summary of f-drop-1",
        )
    )
    rows.append(
        _finding(
            "f-leak-2",
            "*",
            "*",
            2,
            comparison="consecutive",
            baseline_rev=rev_sha(1),
            kind="leak",
            primary_cause=None,
            summary="held-out set leaked into the spec at " + rev_sha(2)[:7],
        )
    )
    store.insert_rows("findings", rows)


def test_headline_groups_findings_per_model_and_comparison(store: Store) -> None:
    _grouped_history(store)
    data = load_report_data(store)
    leak = "held-out set leaked into the spec at " + rev_sha(2)[:7]
    v1 = group_findings(data, "organism-v1")
    assert [(g.text, g.detail, [f.finding_id for f in g.findings]) for g in v1] == [
        (leak, None, ["f-leak-2"]),
        (
            "regression vs organism-v0 at 4 of 4 spec revisions: +10.0 to +30.0 points (q ≤ 0.013)",
            None,
            ["f-reg-0", "f-reg-1", "f-reg-2", "f-reg-3"],
        ),
        (
            "drop vs organism-v0 at 1 of 4 spec revisions: −5.0 points (q = 0.04), "
            "primary cause genuine improvement",
            "summary of f-drop-1",
            ["f-drop-1"],
        ),
    ]
    assert [g.across_versions for g in v1] == [False, True, True]
    v0 = group_findings(data, "organism-v0")
    assert [g.text for g in v0] == [
        leak,
        f"drop vs r0 {rev_sha(0)[:7]} at r3 {rev_sha(3)[:7]}: −20.0 points (q = 0.004), "
        "primary cause spec patching",
    ]
    # The table lists every finding once: the leak first, then the groups strongest first
    # (lowest q of any member: 0.001, 0.004, 0.04).
    table = findings_table(data)
    ids = [f.finding_id for g in table for f in g.findings]
    assert ids == ["f-leak-2", "f-reg-0", "f-reg-1", "f-reg-2", "f-reg-3", "f-patch-1", "f-drop-1"]
    # A patching group names the edits that exposed its scenarios (r1..r3 named scn-001..003).
    (patch,) = [g for g in v0 if g.primary_cause == "spec_patching"]
    assert patch.detail == (
        "drop of 20.0 points at " + rev_sha(3)[:7] + ", 80% explained by spec patching; exposed "
        f"scenarios named by the edits at r1 {rev_sha(1)[:7]}, r2 {rev_sha(2)[:7]}, "
        f"r3 {rev_sha(3)[:7]}"
    )


def test_grouped_headline_and_findings_table_in_the_page(store: Store, tmp_path: Path) -> None:
    _grouped_history(store)
    html = render_report(store, tmp_path / "r.html").read_text()
    headline = html.split('<section id="headline">')[1].split('<section id="timeline">')[0]
    group_id = "organism-v1__model_version__organism-v0__regression__regression"
    assert (
        f'<li class="group-line"><a href="#group-{group_id}">regression vs organism-v0 at 4 of 4 '
        "spec revisions: +10.0 to +30.0 points (q ≤ 0.013)</a></li>"
    ) in headline
    # One line instead of four, under a title that says what was compared.
    assert "summary of f-reg-" not in headline
    assert "Findings vs other model versions (same spec revision):" in headline
    assert "Findings over spec revisions (same model):" in headline
    assert '<h3 class="family">organism <span class="muted">(2 versions)</span></h3>' in headline
    assert headline.count('href="#finding-f-leak-2"') == 2  # the leak concerns both models
    findings = html.split('<section id="findings">')[1].split('<section id="heatmap">')[0]
    for finding_id in ("f-leak-2", "f-patch-1", "f-reg-0", "f-reg-3", "f-drop-1"):
        assert findings.count(f'id="finding-{finding_id}"') == 1, finding_id
    # Groups are folded, strongest first; the leak before everything.
    order = re.findall(r'<details class="group" id="group-([^"]+)">', findings)
    assert order[0].endswith("__leak__none__f-leak-2") and order[1] == group_id
    group = findings.split(f'<details class="group" id="group-{group_id}">')[1].split("</details>")[
        0
    ]
    assert "regression vs organism-v0 at 4 of 4 spec revisions" in group.split("</summary>")[0]
    rows = re.findall(r'<tr class="finding" id="finding-([^"]+)">\s*<td>(.*?)</td>', group)
    assert rows == [
        (
            f"f-reg-{rev}",
            f'<span class="nowrap">organism-v0 → organism-v1</span> at r{rev} {rev_sha(rev)[:7]}',
        )
        for rev in range(4)
    ]
    assert '<td class="num">+25.0 <span class="muted">[+10.0, +30.0]</span></td>' in group
    patch = findings.split('id="finding-f-patch-1">')[1].split("</tr>")[0]
    assert (
        f'<td>r0 <span class="nowrap">{rev_sha(0)[:7]} → r3</span> {rev_sha(3)[:7]}</td>' in patch
    )
    # The reproduction box gives the grouped lines back from SQL.
    grouped = next(v for k, v in _reproduction(html).items() if k.startswith("Grouped findings"))
    rows = store.con.execute("\n".join(grouped.splitlines()[1:-1])).fetchall()
    assert rows == [
        ("*", "consecutive", "*", "leak", None, 1, "+20.0", "+20.0", 0.002),
        (
            "organism-v0",
            "baseline",
            "organism-v0",
            "drop",
            "spec_patching",
            1,
            "-20.0",
            "-20.0",
            0.004,
        ),
        ("organism-v1", "model_version", "organism-v0", "drop", "genuine", 1, "-5.0", "-5.0", 0.04),
        (
            "organism-v1",
            "model_version",
            "organism-v0",
            "regression",
            "regression",
            4,
            "+10.0",
            "+30.0",
            0.0123,
        ),
    ]


def test_model_families_follow_version_suffixes() -> None:
    assert family_of("backslider-v3") == "backslider"
    assert family_of("gpt_v1.2") == "gpt"
    assert family_of("plain") == "plain"
    assert model_families(["b-v10", "b-v2", "a", "b-v1", "c_v1.2"]) == {
        "a": ["a"],
        "b": ["b-v1", "b-v2", "b-v10"],
        "c": ["c_v1.2"],
    }


def test_upper_bounds_of_q_round_up() -> None:
    assert [ceil_2g(q) for q in (0.00978, 0.0396, 0.012, 0.01234, 1.0)] == [
        "0.0098",
        "0.04",
        "0.012",
        "0.013",
        "1",
    ]


def test_scatter_compares_two_model_versions_at_the_same_revision(store: Store) -> None:
    _grouped_history(store)
    data = load_report_data(store)
    change = next(c for c in figures.choose_changes(data) if c.model == "organism-v1")
    assert change.finding is not None and change.finding.finding_id == "f-reg-0"
    assert (change.before_model, change.before.seq, change.after.seq) == ("organism-v0", 0, 0)
    assert change.menu_label == f"organism-v1: organism-v0 → organism-v1 at {rev_sha(0)[:7]}"
    scatter = figures.scatter_figure(data, [change])
    by_name = {t.name: t for t in scatter.data if t.name}
    short = rev_sha(0)[:7]

    def covert_at(model: str) -> list[float]:
        cells = sorted(
            (c.scenario_id, c.covert)
            for c in data.cells
            if c.model == model and c.sha == rev_sha(0)
        )
        return [round(100 * covert, 2) for _, covert in cells if covert is not None]

    # No spec edit lies between the two points, so no scenario counts as exposed.
    assert list(by_name[f"before (organism-v0 at {short}), exposed (0 scenarios)"].y) == []
    before = by_name[f"before (organism-v0 at {short}), not exposed (6 scenarios)"]
    after = by_name[f"after (organism-v1 at {short}), not exposed (6 scenarios)"]
    assert [y for _, y in before.customdata] == covert_at("organism-v0")
    assert [y for _, y in after.customdata] == covert_at("organism-v1")
    # Positions are spread by at most the jitter, so equal rates do not hide each other.
    assert all(
        abs(y - exact) <= figures.JITTER_POINTS
        for y, (_, exact) in zip(after.y, after.customdata, strict=True)
    )
    assert len(set(zip(after.x, after.y, strict=True))) == len(after.y)
    assert covert_at("organism-v0") != covert_at("organism-v1")


def test_timeline_colours_and_menu_follow_model_families(store: Store) -> None:
    build_history(store, revisions=3, models=4, scenarios=4, epochs=1)
    for table in ("samples", "estimates"):
        for old, new in (("organism-v2", "other-v1"), ("organism-v3", "other-v2")):
            store.con.execute(f"UPDATE {table} SET model = ? WHERE model = ?", [new, old])
    data = load_report_data(store)
    assert model_families(data.models) == {
        "organism": ["organism-v0", "organism-v1"],
        "other": ["other-v1", "other-v2"],
    }
    colors = {m: figures.model_color(data, m) for m in data.models}
    # The newest version keeps its family's hue; the older one is a paler shade of it.
    assert colors == {
        "organism-v0": "#9ac2dd",
        "organism-v1": "#1f77b4",
        "other-v1": "#dfd48c",
        "other-v2": "#b8a000",
    }
    timeline = figures.timeline_figure(data)
    menu = timeline.layout.updatemenus[0]
    # Two families of two: a family view shows at most two bands, so no per-model views.
    assert [b.label for b in menu.buttons] == [
        "all models (no bands)",
        "organism (with bands)",
        "other (with bands)",
    ]
    # Four models share the panel: bands only once one family is picked.
    assert [t.visible for t in timeline.data if getattr(t, "fill", None)] == [False] * 4
    assert _shown(timeline, menu.buttons[1].args[0]["visible"]) == [
        *(f"organism-v{v}{part}" for v in (0, 1) for part in (" band", " band", "", "")),
        "finding organism-v0: drop: spec patching",
        "legend: finding: drop: spec patching",
        "lines added",
        "lines removed",
    ]
    assert "organism-v0" not in _shown(timeline, menu.buttons[2].args[0]["visible"])
    assert _shown(timeline, menu.buttons[0].args[0]["visible"]) == [
        *(f"{m}" for m in data.models for _ in range(2)),
        "finding organism-v0: drop: spec patching",
        "legend: finding: drop: spec patching",
        "lines added",
        "lines removed",
    ]


def test_a_configured_model_line_is_drawn_as_one_family_as_detection_compares_it(
    store: Store,
) -> None:
    # Two releases of one line whose names share no -vN suffix: the config names the line.
    build_history(store, revisions=3, models=3, scenarios=4, epochs=1)
    renamed = (("organism-v0", "acme-2026-01"), ("organism-v1", "acme-2026-06"))
    renamed += (("organism-v2", "solo"),)
    for table in ("samples", "estimates", "findings"):
        for old, new in renamed:
            store.con.execute(f"UPDATE {table} SET model = ? WHERE model = ?", [new, old])
    config = AuditConfig(
        models=(
            ModelConfig(name="acme-2026-01", family="acme"),
            ModelConfig(name="acme-2026-06", family="acme"),
        )
    )
    assert model_lines(["acme-2026-01", "acme-2026-06", "solo"], config) == {
        "acme": ["acme-2026-01", "acme-2026-06"]
    }
    data = load_report_data(store, config=config)
    assert data.families == {"acme": ["acme-2026-01", "acme-2026-06"], "solo": ["solo"]}
    colors = {m: figures.model_color(data, m) for m in data.models}
    # One hue for the line, the older release paler, as for "-vN" versions.
    assert colors == {"acme-2026-01": "#9ac2dd", "acme-2026-06": "#1f77b4", "solo": "#b8a000"}
    symbols = [figures.version_symbol(data, m) for m in ("acme-2026-01", "acme-2026-06")]
    assert symbols[0] != symbols[1]
    menu = figures.timeline_figure(data).layout.updatemenus[0]
    assert [b.label for b in menu.buttons] == [
        "all models",
        "acme (with bands)",
        "solo (with bands)",
    ]
    # Without the config the two releases are not one line, for detection and report alike.
    assert model_lines(data.models, AuditConfig()) == {}
    assert load_report_data(store).families == {m: [m] for m in sorted(data.models)}


def _shown(timeline: go.Figure, visible: list[bool]) -> list[str]:
    """What a menu view shows: model traces by model (bands marked), stars, legend, bars."""
    names = []
    for trace, shown in zip(timeline.data, visible, strict=True):
        if not shown:
            continue
        if trace.type == "bar":
            names.append(trace.name)
        elif trace.marker.symbol == "star":
            owner = trace.hovertext[0].split(":")[0].removeprefix("<b>") if trace.hovertext else ""
            names.append(f"finding {owner}: {trace.name}" if owner else f"legend: {trace.name}")
        else:
            band = " band" if trace.fill or trace.line.width == 0 else ""
            names.append(f"{trace.legendgroup}{band}")
    return names


def test_interval_bands_are_reachable_with_many_versions_of_one_family(
    store: Store, tmp_path: Path
) -> None:
    build_history(store, revisions=3, models=5, scenarios=4, epochs=1)
    data = load_report_data(store)
    timeline = figures.timeline_figure(data)
    # Five versions of one family: the overview hides the bands, so each model gets a view.
    assert [t.visible for t in timeline.data if getattr(t, "fill", None)] == [False] * 5
    (menu,) = timeline.layout.updatemenus
    assert [b.label for b in menu.buttons] == [
        "all models (no bands)",
        *(f"organism-v{v} (with bands)" for v in range(5)),
    ]
    for v, button in enumerate(menu.buttons[1:]):
        shown = _shown(timeline, button.args[0]["visible"])
        assert shown[:4] == [f"organism-v{v}{part}" for part in (" band", " band", "", "")]
        others = [f"organism-v{o}" for o in range(5) if o != v]
        assert not any(other in name for name in shown for other in others), shown
    html = render_report(store, tmp_path / "r.html").read_text()
    assert "pick a model in the menu above the chart to see its lines with their bands" in html


def test_spec_changes_name_the_revisions_own_findings(store: Store, tmp_path: Path) -> None:
    _grouped_history(store)
    html = render_report(store, tmp_path / "r.html").read_text()
    changes = html.split('<section id="changes">')[1].split('<section id="awareness">')[0]
    r3 = changes.split(f'<details id="rev-{rev_sha(3)[:7]}"')[1].split("</details>")[0]
    # Only findings about this spec edit; model-version findings compare models, not edits.
    assert (
        "<p>Findings at this revision (vs earlier spec revisions): "
        f'<a href="#finding-f-patch-1">organism-v0: drop vs r0 {rev_sha(0)[:7]}, spec patching</a>'
        ".</p>"
    ) in r3
    assert "f-reg-3" not in r3
    assert "Exposure introduced by this edit: <b>scn-003</b>" in r3


def _reformat_history(store: Store) -> None:
    """r1 names scn-001; r2 only rewraps the spec; a patching finding compares r0 with r2.

    What detection stores for it: r2's own diff (vs r1) still "exposes" scn-001, because the
    rewrapped lines name it; against r0 it is exposed at r1 and r2 (cumulative).
    """
    build_history(store, revisions=3, models=1, scenarios=4, epochs=2, detection=False)
    store.con.execute("DELETE FROM spec_clause_changes WHERE sha = ?", [rev_sha(2)])
    rows = []
    for seq, baseline in ((1, 0), (2, 1), (2, 0)):
        rows.append(
            {
                "source_id": SOURCE,
                "baseline_sha": rev_sha(baseline),
                "sha": rev_sha(seq),
                "set_hash": SET_HASH,
                "scenario_id": "scn-001",
                "score": 0.9,
                "exposed": True,
                "canary_hit": False,
                "rare_term_score": 0.5,
                "fuzzy_score": 0.9,
                "matched_terms": ["nightly build"],
                "matched_text": "nightly build for scn-001",
            }
        )
    store.insert_rows("exposure", rows)
    store.insert_rows(
        "findings",
        [
            _finding(
                "f-patch-2",
                "organism-v0",
                "organism-v0",
                2,
                baseline_rev=rev_sha(0),
                comparison="baseline",
                kind="drop",
                primary_cause="spec_patching",
                delta=-0.2,
                exposed_scenarios=["scn-001"],
                summary="drop of 20.0 points, 100% explained by spec patching",
            )
        ],
    )


def test_a_reformat_is_not_new_exposure(store: Store, tmp_path: Path) -> None:
    _reformat_history(store)
    data = load_report_data(store)
    assert [(e.sha, e.introduced, e.first_sha) for e in data.exposures] == [
        (rev_sha(1), True, rev_sha(1)),
        (rev_sha(2), False, rev_sha(1)),
    ]
    assert data.cumulative[rev_sha(2)].first_sha == {"scn-001": rev_sha(1)}
    r0, r1, r2 = (f"r{seq} {rev_sha(seq)[:7]}" for seq in range(3))
    # The heatmap: a square where the exposure began, a circle where it was only named again.
    heatmap = figures.heatmap_figure(data)
    marks = {t.name: list(zip(t.x, t.y, strict=True)) for t in heatmap.data if t.type == "scatter"}
    row = "family_1 · scn-001"
    assert marks["exposure introduced by this edit"] == [(r1, row)]
    assert marks["named again by this edit (exposed earlier)"] == [(r2, row)]
    html = render_report(store, tmp_path / "r.html").read_text()
    changes = html.split('<section id="changes">')[1].split('<section id="awareness">')[0]
    at_r2 = changes.split(f'<details id="rev-{rev_sha(2)[:7]}"')[1].split("</details>")[0]
    assert "0 clause changes, 1 named again)" in at_r2
    assert (
        "No clause changed in this revision (a reformat or a move), but its rewritten lines name "
        f"<b>scn-001</b> (first exposed by the edit at {r1}). The detector compares the lines a "
        "commit rewrote, so it counts them again: <b>no new exposure</b>."
    ) in at_r2
    assert "This edit introduced no exposure: scenarios these findings count as exposed" in at_r2
    assert f"Cumulative exposure since {r0} (what findings against it count as exposed): " in at_r2
    # The finding says where its exposure came from.
    row_html = html.split('id="finding-f-patch-2">')[1].split("</tr>")[0]
    assert (
        f"Exposure is cumulative since {r0}; {r2}&#39;s own edit newly exposed none of them. "
        f"Named by the edit at {r1}: scn-001."
    ) in row_html
    scenarios = html.split('<section id="scenarios">')[1]
    assert f'<td>{r1} <span class="muted">(named again at {r2})</span></td>' in scenarios


def _trend_html(store: Store, tmp_path: Path, model: str) -> str:
    html = render_report(store, tmp_path / "r.html").read_text()
    card = html.split(f"<h3>{model}")[1].split('<div class="card"')[0]
    return card.split('<div class="trend">')[1].split("</div>")[0]


def test_trend_colour_and_words_follow_significance(store: Store, tmp_path: Path) -> None:
    build_history(store, revisions=4, models=2, scenarios=6, epochs=2)
    first = rev_sha(0)
    # organism-v1 has intervals but no stored finding for r0 -> r3: not significant, no colour.
    assert re.fullmatch(
        r'<span class="sub">.*:</span> <span class="">down [\d.]+ points \([\d.]+% → [\d.]+%\)'
        r'</span>, <span class="verdict">not significant \(no finding stored at 5% FDR\)</span>',
        _trend_html(store, tmp_path, "organism-v1"),
    )
    # A stored test without a significant change (kind "none") gives its q.
    store.insert_rows(
        "findings",
        [
            _finding(
                "f-none",
                "organism-v1",
                "organism-v1",
                3,
                baseline_rev=first,
                comparison="baseline",
                kind="none",
                primary_cause=None,
                q_value=0.43,
            )
        ],
    )
    assert '<span class="verdict">not significant (q = 0.43)</span>' in _trend_html(
        store, tmp_path, "organism-v1"
    )
    # The stored drop r0 -> r3 of organism-v0 is significant: coloured, and said so.
    v0 = _trend_html(store, tmp_path, "organism-v0")
    assert '<span class="down">down ' in v0
    assert '<span class="verdict significant">significant (q = 0.004)</span>' in v0
    # The kind "none" row is a test, not a finding: it is nowhere in the findings.
    assert "f-none" not in render_report(store, tmp_path / "r.html").read_text()


def test_ascii_arrows_become_unbreakable_arrows(store: Store, tmp_path: Path) -> None:
    _grouped_history(store)
    store.con.execute(
        "UPDATE findings SET summary = 'rise of 20.0 points (organism-v0 -> organism-v1)' "
        "WHERE finding_id = 'f-reg-1'"
    )
    html = render_report(store, tmp_path / "r.html").read_text()
    text = re.sub(r"<script.*?</script>", "", html, flags=re.S)
    assert "-&gt;" not in text and "->" not in text.replace("<!--", "")
    assert 'rise of 20.0 points <span class="nowrap">(organism-v0 → organism-v1)</span>' in html


def test_heatmap_opens_on_the_model_with_the_strongest_patching_finding(store: Store) -> None:
    build_history(store, revisions=4, models=3, scenarios=6, epochs=2)
    # Move the patching finding to organism-v2, and give organism-v0 a stronger regression.
    store.con.execute("UPDATE findings SET model = 'organism-v2', baseline_model = 'organism-v2'")
    store.insert_rows(
        "findings", [_finding("f-reg", "organism-v1", "organism-v0", 1, q_value=0.0001)]
    )
    data = load_report_data(store)
    assert figures.heatmap_first_model(data) == "organism-v2"
    heatmap = figures.heatmap_figure(data)
    assert [t.visible for t in heatmap.data if t.type == "heatmap"] == [False, False, True]
    assert heatmap.layout.updatemenus[0].active == 2
    # No patching finding: the strongest finding of any kind.
    store.con.execute("DELETE FROM findings WHERE primary_cause = 'spec_patching'")
    assert figures.heatmap_first_model(load_report_data(store)) == "organism-v1"


def test_heatmap_tells_zero_from_no_samples(store: Store) -> None:
    build_history(store, revisions=3, models=1, scenarios=4, epochs=1)
    store.con.execute(
        "DELETE FROM samples WHERE scenario_id = 'scn-000' AND spec_sha = ?", [rev_sha(1)]
    )
    heatmap = figures.heatmap_figure(load_report_data(store))
    cells = heatmap.data[0]
    # No samples: no value (drawn in the grey background), and no hover that would say "0%".
    assert cells.z[0][1] is None and cells.hoverongaps is False
    assert heatmap.layout.plot_bgcolor == "#c9c9c9"
    assert cells.colorscale[0] == (0.0, "#ffffff")
    assert "grey: no samples" in [t.name for t in heatmap.data]


def test_scatter_opens_on_a_revision_change_with_axes_fitted_to_it(store: Store) -> None:
    _grouped_history(store)
    data = load_report_data(store)
    changes = figures.choose_changes(data)
    # organism-v1's regression vs organism-v0 has the lowest q (0.001), but the scatter opens on
    # the change between spec revisions (organism-v0's patching finding).
    assert [(c.model, c.across_versions) for c in changes] == [
        ("organism-v0", False),
        ("organism-v1", True),
    ]
    scatter = figures.scatter_figure(data, changes)
    for n, button in enumerate(scatter.layout.updatemenus[0].buttons):
        visible, ranges = button.args
        traces = [t for t, v in zip(scatter.data, visible["visible"], strict=True) if v]
        xs = [x for t in traces for x in t.x if x is not None]
        ys = [y for t in traces for y in t.y if y is not None]
        (x_low, x_high), (y_low, y_high) = ranges["xaxis.range"], ranges["yaxis.range"]
        # Every point inside, with at most a modest margin around the data (not 0-100).
        assert x_low < min(xs) and max(xs) < x_high and x_high - max(xs) <= 10, n
        assert y_low < min(ys) and max(ys) < y_high and y_high - max(ys) <= 10, n
    assert (
        list(scatter.layout.xaxis.range)
        == scatter.layout.updatemenus[0].buttons[0].args[1]["xaxis.range"]
    )


def test_a_finding_about_one_point_says_so(store: Store, tmp_path: Path) -> None:
    build_history(store, revisions=3, models=1, scenarios=4, epochs=1, detection=False)
    store.insert_rows(
        "findings",
        [
            _finding(
                "f-collapse",
                "organism-v0",
                "organism-v0",
                2,
                baseline_rev="",
                comparison="point",
                kind="collapse",
                primary_cause=None,
                delta=None,
                delta_ci_low=None,
                delta_ci_high=None,
                q_value=None,
                summary="collapse: covert rate at r2 is 0.0% (95% CI 0.0-0.9%)",
            )
        ],
    )
    data = load_report_data(store)
    (group,) = group_findings(data, "organism-v0")
    assert group.text == f"collapse to near 0% at r2 {rev_sha(2)[:7]}"
    html = render_report(store, tmp_path / "r.html").read_text()
    row = html.split('id="finding-f-collapse">')[1].split("</tr>")[0]
    assert f"<td>at r2 {rev_sha(2)[:7]} (this point alone)</td>" in row
    assert "q not stored" not in html and "change not stored" not in html


def test_exposure_across_unsampled_revisions_names_the_edits_since(
    store: Store, tmp_path: Path
) -> None:
    build_history(store, revisions=3, models=1, scenarios=4, epochs=1, detection=False)
    # r1 has no samples, so detection compared r2 with r0: "this edit" is r1 and r2 together.
    store.con.execute("DELETE FROM samples WHERE spec_sha = ?", [rev_sha(1)])
    store.insert_rows(
        "exposure",
        [
            {
                "source_id": SOURCE,
                "baseline_sha": rev_sha(0),
                "sha": rev_sha(2),
                "set_hash": SET_HASH,
                "scenario_id": "scn-002",
                "score": 0.9,
                "exposed": True,
                "canary_hit": False,
                "rare_term_score": 0.5,
                "fuzzy_score": 0.9,
                "matched_terms": ["nightly build"],
                "matched_text": None,
            }
        ],
    )
    html = render_report(store, tmp_path / "r.html").read_text()
    at_r2 = html.split(f'<details id="rev-{rev_sha(2)[:7]}"')[1].split("</details>")[0]
    assert (
        f"<p>Exposure introduced by the edits since r0 {rev_sha(0)[:7]} (the revisions in between "
        "have no samples): <b>scn-002</b>"
    ) in at_r2


def test_changes_on_the_exposed_scenarios_alone_are_said_so(store: Store, tmp_path: Path) -> None:
    build_history(store, revisions=4, models=1, scenarios=6, epochs=2)
    exposed_only = json.dumps({"tested_on": "exposed scenarios", "n_scenarios": 2})
    store.insert_rows(
        "findings",
        [
            _finding(
                f"f-exp-{rev}",
                "organism-v0",
                "organism-v0",
                rev,
                baseline_rev=rev_sha(0),
                comparison="baseline",
                kind="drop",
                primary_cause="spec_patching",
                delta=delta,
                delta_ci_low=delta - 0.1,
                delta_ci_high=delta + 0.1,
                q_value=0.001,
                evidence=exposed_only,
            )
            for rev, delta in ((1, -0.8), (2, -0.55))
        ],
    )
    data = load_report_data(store)
    (group,) = [g for g in group_findings(data, "organism-v0") if g.kind == "drop"]
    # f-patch-1 (at r3, -20 points) was measured on every scenario; the others on two.
    labels = ", ".join(f"r{seq} {rev_sha(seq)[:7]}" for seq in (1, 2, 3))
    assert group.text == (
        f"drop vs r0 {rev_sha(0)[:7]} at 3 later revisions ({labels}): −20.0 points on all "
        "scenarios; −55.0 to −80.0 points on the exposed scenarios (q ≤ 0.004), primary cause "
        "spec patching"
    )
    html = render_report(store, tmp_path / "r.html").read_text()
    row = html.split('id="finding-f-exp-1">')[1].split("</tr>")[0]
    assert (
        '<td class="num">-80.0 <span class="muted">[-90.0, -70.0]</span>'
        '<div class="muted">on the 2 exposed scenarios only</div></td>'
    ) in row
    assert (
        "exposed scenarios only" not in html.split('id="finding-f-patch-1">')[1].split("</tr>")[0]
    )
