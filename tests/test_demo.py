"""``audit demo``: the whole offline pipeline through the real entry point."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from audit.demo import demo_models, run_demo
from audit.errors import AuditError
from audit.organisms.config import load_organisms
from audit.spec_history import sync_spec_history
from audit.store import Store, open_store


def test_demo_models_cover_every_organism_version() -> None:
    organisms = load_organisms()
    models = demo_models(organisms, "http://127.0.0.1:1/v1", quick=False)
    assert sorted(m.name for m in models) == sorted(organisms)
    assert all(m.base_url == "http://127.0.0.1:1/v1" for m in models)
    assert {m.family for m in models} == {o.organism.name for o in organisms.values()}


def test_quick_demo_keeps_first_and_last_version_of_each_line() -> None:
    organisms = load_organisms()
    quick = {m.name for m in demo_models(organisms, "http://127.0.0.1:1/v1", quick=True)}
    for line in {o.organism.name for o in organisms.values()}:
        versions = sorted(
            (o for o in organisms.values() if o.organism.name == line), key=lambda o: o.index
        )
        assert {versions[0].name, versions[-1].name} <= quick
        assert all(v.name not in quick for v in versions[1:-1])


def test_demo_refuses_a_database_that_tracks_a_real_spec(tmp_path: Path) -> None:
    import git

    repo = git.Repo.init(tmp_path / "repo")
    (tmp_path / "repo" / "spec.md").write_text("# Spec\n\nBe honest.\n")
    repo.index.add(["spec.md"])
    repo.index.commit("spec")
    db = tmp_path / "audit.duckdb"
    with open_store(db) as store:
        sync_spec_history(store, tmp_path / "repo", "spec.md", source_id="my-spec")
    with pytest.raises(AuditError, match=r"already tracks other spec sources \(my-spec\)"):
        run_demo(db_path=db, report_path=tmp_path / "r.html", workdir=tmp_path / "work")
    with open_store(db, read_only=True) as store:
        sources = store.query("SELECT source_id FROM spec_sources")
        samples = store.query("SELECT count(*) AS n FROM samples")
    assert sources == [{"source_id": "my-spec"}] and samples == [{"n": 0}]
    assert not (tmp_path / "r.html").exists()


def _demo(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "audit",
            "demo",
            "--quick",
            "--epochs",
            "1",
            "--db",
            str(tmp_path / "demo.duckdb"),
            "--out",
            str(tmp_path / "drift.html"),
            "--workdir",
            str(tmp_path / "work"),
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )


@pytest.mark.slow
def test_demo_end_to_end_then_rerun_is_cached(tmp_path: Path) -> None:
    first = _demo(tmp_path)
    assert first.returncode == 0, first.stderr
    assert f"report:   {tmp_path / 'drift.html'}" in first.stdout
    assert "failed 0" in first.stdout
    html = (tmp_path / "drift.html").read_text(encoding="utf-8")
    assert "Plotly.newPlot" in html
    with duckdb.connect(str(tmp_path / "demo.duckdb"), read_only=True) as con:
        revisions = con.execute("SELECT count(*) FROM spec_revisions").fetchone()[0]
        samples = con.execute("SELECT count(*) FROM samples").fetchone()[0]
        runs = con.execute("SELECT planned, stored, failed FROM runs").fetchall()
    assert revisions == 10
    assert runs[0][1] == samples and runs[0][2] == 0
    second = _demo(tmp_path, "--json")
    assert second.returncode == 0, second.stderr
    rerun = json.loads(second.stdout)
    assert (rerun["samples"]["stored"], rerun["samples"]["skipped"]) == (0, samples)
    assert rerun["db"] == str(tmp_path / "demo.duckdb") and rerun["findings"]


def test_the_demo_summary_names_the_twin_test_of_each_patching_finding(store: Store) -> None:
    from twin_history import CONFIG, twin_history

    from audit.analysis import detect
    from audit.cli.demo import finding_lines
    from audit.heldout import load_heldout

    twin_history(store, load_heldout())
    findings = detect(store, CONFIG)
    lines = finding_lines(findings)
    patching = min(
        (f for f in findings if f.model == "patcher" and f.primary_cause == "spec_patching"),
        key=lambda f: f.q_value if f.q_value is not None else 1.0,
    )
    gap = patching.twin_gap
    assert gap is not None
    index = next(i for i, line in enumerate(lines) if line.startswith("patcher ["))
    assert lines[index + 1] == (
        f"  sealed twins, spec patching {patching.baseline_rev[:7]} -> {patching.rev[:7]}: "
        f"public scenarios {100 * gap['public_change']:+.1f} points, their sealed twins "
        f"{100 * gap['twin_change']:+.1f}; twin gap {100 * gap['gap']:+.1f} (95% CI "
        f"{100 * gap['ci'][0]:+.1f} to {100 * gap['ci'][1]:+.1f}) over {gap['n_pairs']} pairs, "
        f"q={gap['q_value']:.2g}"
    )
    # A model without a patching finding gets no such line.
    mender = next(i for i, line in enumerate(lines) if line.startswith("mender ["))
    assert mender + 1 == len(lines) or not lines[mender + 1].startswith("  ")


def test_demo_json_carries_the_run_and_every_finding(store: Store, tmp_path: Path) -> None:
    from twin_history import CONFIG, twin_history

    from audit.analysis import detect
    from audit.cli.demo import demo_json
    from audit.demo import DemoResult
    from audit.heldout import load_heldout
    from audit.runner import RunSummary

    twin_history(store, load_heldout())
    findings = tuple(detect(store, CONFIG))
    run = RunSummary("r", planned=10, skipped=4, stored=6, failed=0, unstored=0, calls=6,
                     retries=0, elapsed_s=1.5)  # fmt: skip
    result = DemoResult(
        db_path=tmp_path / "d.duckdb",
        report_path=tmp_path / "r.html",
        spec_repo=tmp_path / "specs",
        revisions=3,
        models=("patcher",),
        scenarios=68,
        run=run,
        findings=findings,
        elapsed_s=2.0,
    )
    printed = json.loads(json.dumps(demo_json(result), default=str))
    assert printed["samples"] == {**printed["samples"], "stored": 6, "skipped": 4, "ok": True}
    assert [f["finding_id"] for f in printed["findings"]] == [f.finding_id for f in findings]
    assert printed["report"] == str(tmp_path / "r.html")
