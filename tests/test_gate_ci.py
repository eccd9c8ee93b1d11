"""The gate's outputs for CI: JUnit XML read back by a real XML parser and checked against what
the strictest common JUnit schema requires, the Markdown step summary appended to a file, failed
samples said loudly, and a pipeline whose reader stops early keeping the verdict's exit code."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from datetime import datetime
from pathlib import Path

from analysis_fixtures import (
    BASE_SPEC,
    GENERIC_EDIT,
    add_revisions,
    add_samples,
    heldout,
    planted,
    uniform,
)
from typer.testing import CliRunner

from audit.analysis.gate import GATE_CHECKS
from audit.cli import app
from audit.store import open_store

# What the widely used JUnit schema (the one Jenkins and most CI readers follow) requires.
SUITE_ATTRIBUTES = ("name", "tests", "failures", "errors", "time", "timestamp", "hostname")
SUITE_CHILDREN = ("properties", "system-out", "system-err")
CASE_ATTRIBUTES = ("name", "classname", "time")
FAILURE_ATTRIBUTES = ("message", "type")


def _history(db: Path, *, leak: bool = False) -> list[str]:
    """Model "riser" regresses from 50% to 70%; model "steady" stays at 50%."""
    candidate = BASE_SPEC + GENERIC_EDIT + (f"\n{heldout().canary}\n" if leak else "")
    with open_store(db) as store:
        shas = add_revisions(store, [BASE_SPEC, candidate])
        add_samples(store, "riser", BASE_SPEC, planted(uniform(0.5)))
        add_samples(store, "riser", candidate, planted(uniform(0.7)))
        add_samples(store, "steady", BASE_SPEC, planted(uniform(0.5)))
        add_samples(store, "steady", candidate, planted(uniform(0.5)))
    return shas


def _gate(db: Path, *extra: str):
    args = ["gate", "--db", str(db), "--baseline", "0", "--candidate", "1", *extra]
    return CliRunner().invoke(app, args)


def _check_schema(root: ET.Element) -> None:
    assert root.tag == "testsuites"
    for suite in root.findall("testsuite"):
        for attribute in SUITE_ATTRIBUTES:
            assert suite.get(attribute) is not None, attribute
        for child in SUITE_CHILDREN:
            assert suite.find(child) is not None, child
        datetime.fromisoformat(suite.get("timestamp", ""))  # xs:dateTime, no zone
        assert "+" not in suite.get("timestamp", "") and "Z" not in suite.get("timestamp", "")
        cases = suite.findall("testcase")
        assert int(suite.get("tests", "")) == len(cases)
        failed = [c for c in cases if c.find("failure") is not None]
        assert int(suite.get("failures", "")) == len(failed)
        assert int(suite.get("errors", "")) == 0
        for case in cases:
            for attribute in CASE_ATTRIBUTES:
                assert case.get(attribute) is not None, attribute
            failure = case.find("failure")
            if failure is not None:
                for attribute in FAILURE_ATTRIBUTES:
                    assert failure.get(attribute), attribute
    total = sum(int(s.get("tests", "")) for s in root.findall("testsuite"))
    assert int(root.get("tests", "")) == total


def test_junit_has_a_case_per_model_and_check_and_failures_carry_the_summary(
    tmp_path: Path,
) -> None:
    db = tmp_path / "a.duckdb"
    _history(db, leak=True)
    junit = tmp_path / "out" / "gate.xml"
    junit.parent.mkdir()

    result = _gate(db, "--junit", str(junit), "--json")

    assert result.exit_code == 1, result.output
    verdict = json.loads(result.stdout)
    root = ET.parse(junit).getroot()  # a real XML parser: the file is well-formed
    _check_schema(root)
    suites = {s.get("name"): s for s in root.findall("testsuite")}
    assert set(suites) == {"specdrift gate: riser", "specdrift gate: steady"}
    for model, suite in (("riser", suites["specdrift gate: riser"]), ("steady", None)):
        suite = suite if suite is not None else suites["specdrift gate: steady"]
        cases = {c.get("name"): c for c in suite.findall("testcase")}
        assert set(cases) == set(GATE_CHECKS.values())
        assert {c.get("classname") for c in cases.values()} == {f"specdrift.gate.{model}"}
        finding = next(f for f in verdict["findings"] if f["model"] == model)
        # The candidate spec carries the canary: every model's leak check fails.
        leak = cases[GATE_CHECKS["leak"]].find("failure")
        assert leak is not None and leak.get("type") == "leak"
        assert leak.get("message", "").startswith("leak: held-out set leaked into the spec")
        regression = cases[GATE_CHECKS["regression"]].find("failure")
        if model == "riser":
            assert regression is not None
            assert regression.get("message") == finding["summary"]
            assert finding["summary"] in (regression.text or "")
        else:
            assert regression is None
        assert suite.findtext("system-out") == finding["summary"]
        props = {p.get("name"): p.get("value") for p in suite.iter("property")}
        assert props["candidate_rev"] == verdict["candidate_rev"]
    assert int(root.get("failures", "")) == 3  # riser: regression and leak; steady: leak


def test_junit_and_markdown_of_a_passing_gate(tmp_path: Path) -> None:
    db = tmp_path / "a.duckdb"
    with open_store(db) as store:
        add_revisions(store, [BASE_SPEC, BASE_SPEC + GENERIC_EDIT])
        add_samples(store, "m", BASE_SPEC, planted(uniform(0.5)))
        add_samples(store, "m", BASE_SPEC + GENERIC_EDIT, planted(uniform(0.5)))
    junit, summary = tmp_path / "gate.xml", tmp_path / "summary.md"
    summary.write_text("## earlier step\n")

    result = _gate(db, "--junit", str(junit), "--markdown", str(summary))

    assert result.exit_code == 0, result.output
    root = ET.parse(junit).getroot()
    _check_schema(root)
    assert root.get("failures") == "0" and root.get("tests") == str(len(GATE_CHECKS))
    # Appended, as $GITHUB_STEP_SUMMARY collects what each command of a step writes.
    assert summary.read_text() == "## earlier step\n" + result.stdout


def test_failed_samples_are_said_by_the_gate(tmp_path: Path) -> None:
    db = tmp_path / "a.duckdb"
    shas = _history(db)
    with open_store(db) as store:
        store.insert_rows(
            "runs",
            [
                {
                    "run_id": "r1",
                    "command": "run",
                    "started_at": datetime.now().astimezone(),
                    "set_hash": heldout().set_hash,
                    "tool_version": "test",
                    "config": "{}",
                }
            ],
        )
        store.insert_rows(
            "sample_failures",
            [
                {
                    "sample_key": f"sha256:missing{i}",
                    "run_id": "r1",
                    "model": "steady",
                    "spec_sha": shas[1],
                    "scenario_id": heldout().public_ids()[0],
                    "condition": "default",
                    "epoch": i,
                    "error_kind": "timeout",
                    "error": "request timed out",
                    "attempts": 6,
                }
                for i in range(3)
            ],
        )
    junit, summary = tmp_path / "gate.xml", tmp_path / "summary.md"

    result = _gate(db, "--junit", str(junit), "--markdown", str(summary))

    expected = (
        f"steady at the candidate {shas[1][:7]}: 3 sample(s) failed and are not stored (timeout 3)"
    )
    assert expected in result.stderr
    assert f"> **Warning:** {expected}" in summary.read_text()
    root = ET.parse(junit).getroot()
    steady = next(s for s in root.iter("testsuite") if s.get("name") == "specdrift gate: steady")
    assert expected in (steady.findtext("system-err") or "")
    riser = next(s for s in root.iter("testsuite") if s.get("name") == "specdrift gate: riser")
    assert expected not in (riser.findtext("system-err") or "")


def _closed_pipe(*args: str) -> subprocess.CompletedProcess:
    """Run ``audit ARGS`` in a real process whose stdout reader is gone before it writes."""
    process = subprocess.Popen(
        [sys.executable, "-m", "audit", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    process.stdout.close()  # like `| head -1` that has read its line and exited
    _, err = process.communicate(timeout=120)
    return subprocess.CompletedProcess(process.args, process.returncode, "", err)


def test_a_closed_pipe_is_quiet_and_keeps_the_verdict(tmp_path: Path) -> None:
    db = tmp_path / "a.duckdb"
    _history(db)
    listing = _closed_pipe("detect", "--db", str(db))
    assert (listing.returncode, listing.stderr) == (0, "")

    # A failing gate stays failing for `set -o pipefail`, whoever reads its output.
    verdict = _closed_pipe("gate", "--db", str(db), "--baseline", "0", "--candidate", "1")
    assert verdict.returncode == 1
    assert "Traceback" not in verdict.stderr and "BrokenPipe" not in verdict.stderr
