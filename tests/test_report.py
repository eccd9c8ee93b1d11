"""The HTML drift report: aggregation, numbers shown, escaping, prompts, size, CLI."""

from __future__ import annotations

import json
import re
from html import unescape
from html.parser import HTMLParser
from pathlib import Path

import pytest
from plotly.offline import get_plotlyjs
from report_history import SET_HASH, SOURCE, build_history, insert_revisions, insert_scenarios
from report_history import sha_of as rev_sha
from typer.testing import CliRunner

from audit.cli import app
from audit.errors import AuditError
from audit.report import figures, render_report
from audit.report.data import load_report_data
from audit.report.groups import ceil_2g, family_of, findings_table, group_findings, model_families
from audit.report.render import Segment, highlight
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
    # The trend names what it compares: the same model over spec revisions.
    assert (
        f'<span class="sub">same model, spec r0 {rev_sha(0)[:7]} → r2 {rev_sha(2)[:7]}:</span> '
        '<span class="down">down 50.0 points (75.0% → 25.0%)</span>'
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
    assert html.count(get_plotlyjs()[:400]) == 1
    page = _parse(html)
    for tag, name, value in page.attributes:
        assert name not in {"src"}, (tag, name, value)
        if name == "href":
            assert value and value.startswith("#"), value
    assert "default-src 'none'" in html
    figures_json = [attrs["data-figure"] for attrs, _ in page.scripts if "data-figure" in attrs]
    assert figures_json == ["fig-timeline", "fig-heatmap", "fig-scatter"]
    for attrs, body in page.scripts:
        if attrs.get("type") == "application/json":
            figure = json.loads(body)
            assert figure["data"], attrs


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
    # Per model: band edges, covert line, awareness line; plus findings and commit strip.
    assert len(timeline.data) == 4 * 5 + 2
    assert len(heatmap.data) == 5 + 1
    assert [t.visible for t in heatmap.data[:5]] == [True, False, False, False, False]
    assert len(heatmap.data[0].z) == 40 and len(heatmap.data[0].z[0]) == 200


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


def test_every_reproduction_query_runs_on_the_store(store: Store, tmp_path: Path) -> None:
    build_history(store, revisions=4, models=2, scenarios=6, epochs=2)
    html = render_report(store, tmp_path / "r.html", model="organism-v0").read_text()
    blocks = [unescape(b) for b in re.findall(r"<pre>(.*?)</pre>", html, flags=re.S)]
    queries = [b.split('"', 1)[1].rstrip('"') for b in blocks if b.startswith("audit sql")]
    assert len(queries) == 6
    for query in queries:
        assert store.con.execute(query).fetchall(), query
    # The rate query from samples gives the timeline's numbers for the chosen model.
    rates = store.con.execute(queries[1]).fetchall()
    data = load_report_data(store, model="organism-v0")
    assert sorted((sha, round(c, 9)) for _, sha, c, _ in rates) == sorted(
        (p.sha, round(p.covert, 9)) for p in data.rates if p.covert is not None
    )
    assert f"audit detect --db {tmp_path}/audit.duckdb --source {SOURCE}" in html


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
    # The table lists every finding once: the leak under "every model", then per model.
    table = findings_table(data)
    ids = [f.finding_id for g in table for f in g.findings]
    assert ids == ["f-leak-2", "f-patch-1", "f-reg-0", "f-reg-1", "f-reg-2", "f-reg-3", "f-drop-1"]


def test_grouped_headline_and_findings_table_in_the_page(store: Store, tmp_path: Path) -> None:
    _grouped_history(store)
    html = render_report(store, tmp_path / "r.html").read_text()
    headline = html.split('<section id="headline">')[1].split('<section id="findings">')[0]
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
    findings = html.split('<section id="findings">')[1].split('<section id="timeline">')[0]
    for finding_id in ("f-leak-2", "f-patch-1", "f-reg-0", "f-reg-3", "f-drop-1"):
        assert findings.count(f'id="finding-{finding_id}"') == 1, finding_id
    group = findings.split(f'<tbody id="group-{group_id}">')[1].split("</tbody>")[0]
    rows = re.findall(r'<tr class="finding" id="finding-([^"]+)">\s*<td>([^<]*)</td>', group)
    assert rows == [
        (f"f-reg-{rev}", f"organism-v0 → organism-v1 at r{rev} {rev_sha(rev)[:7]}")
        for rev in range(4)
    ]
    assert '<td class="num">+25.0 <span class="muted">[+10.0, +30.0]</span></td>' in group
    patch = findings.split('id="finding-f-patch-1">')[1].split("</tr>")[0]
    assert f"<td>r0 {rev_sha(0)[:7]} → r3 {rev_sha(3)[:7]}</td>" in patch
    # The reproduction box gives the grouped lines back from SQL.
    blocks = [unescape(b) for b in re.findall(r"<pre>(.*?)</pre>", html, flags=re.S)]
    grouped = next(b for b in blocks if "the headline's finding lines (grouped" in b)
    rows = store.con.execute(grouped.split('"', 1)[1].rstrip('"')).fetchall()
    assert rows == [
        ("*", "consecutive", "*", "leak", None, 1, 20.0, 20.0, 0.002),
        ("organism-v0", "baseline", "organism-v0", "drop", "spec_patching", 1, -20.0, -20.0, 0.004),
        ("organism-v1", "model_version", "organism-v0", "drop", "genuine", 1, -5.0, -5.0, 0.04),
        (
            "organism-v1",
            "model_version",
            "organism-v0",
            "regression",
            "regression",
            4,
            10.0,
            30.0,
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
        "other-v1": "#cbb3ae",
        "other-v2": "#8c564b",
    }
    timeline = figures.timeline_figure(data)
    menu = timeline.layout.updatemenus[0]
    assert [b.label for b in menu.buttons] == [
        "all models",
        "organism (2 versions)",
        "other (2 versions)",
    ]

    def shown(visible: list[bool]) -> list[str]:
        return [
            f"{t.legendgroup or t.name}{' band' if t.fill or t.line.width == 0 else ''}"
            for t, v in zip(timeline.data, visible, strict=True)
            if v
        ]

    # Four models share the panel: bands only once one family is picked.
    assert [t.visible for t in timeline.data if t.fill] == [False] * 4
    assert shown(menu.buttons[1].args[0]["visible"]) == [
        *(f"organism-v{v}{part}" for v in (0, 1) for part in (" band", " band", "", "")),
        "findings",
        "spec commits",
    ]
    assert "organism-v0" not in shown(menu.buttons[2].args[0]["visible"])
    assert shown(menu.buttons[0].args[0]["visible"]) == [
        *(f"{m}" for m in data.models for _ in range(2)),
        "findings",
        "spec commits",
    ]


def test_spec_changes_name_the_revisions_own_findings_and_explain_bare_exposure(
    store: Store, tmp_path: Path
) -> None:
    _grouped_history(store)
    # r2 exposed scn-002; without its clause rows it looks like a reformatting commit.
    store.con.execute("DELETE FROM spec_clause_changes WHERE sha = ?", [rev_sha(2)])
    html = render_report(store, tmp_path / "r.html").read_text()
    changes = html.split('<section id="changes">')[1].split('<section id="awareness">')[0]
    r3 = changes.split(f'<details id="rev-{rev_sha(3)[:7]}"')[1].split("</details>")[0]
    # Only findings about this spec edit; model-version findings compare models, not edits.
    assert (
        "<p>Findings at this revision (vs earlier spec revisions): "
        '<a href="#finding-f-patch-1">organism-v0: drop, spec patching</a></p>'
    ) in r3
    assert "f-reg-3" not in r3
    r2 = changes.split(f'<details id="rev-{rev_sha(2)[:7]}"')[1].split("</details>")[0]
    assert "No clause-level change is stored for this revision, yet scenarios count" in r2
    assert "No clause-level changes stored for this revision." not in r2
    r1 = changes.split(f'<details id="rev-{rev_sha(1)[:7]}"')[1].split("</details>")[0]
    assert "yet scenarios count" not in r1
