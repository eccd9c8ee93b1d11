"""The README's GitHub Actions workflow, run: every ``run:`` step of it as written, in bash as
GitHub runs it (``-eo pipefail``), with the workflow's environment, in a temporary git repository
whose ``audit.toml`` names a model organism served on loopback. Steps a runner provides
(``uses:``) and the install step are the only ones not executed; their settings are checked."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import git
import pytest

from audit.organisms.server import RunningServer, start_server

yaml = pytest.importorskip("yaml")

README = Path(__file__).resolve().parents[1] / "README.md"
ROOT = README.parent
ORGANISM = "patcher-v1"
SECRET = "sk-test-workflow-key-7f3a"


def readme_workflow() -> dict[str, Any]:
    section = README.read_text(encoding="utf-8").split("\n## Pre-release audits in CI\n", 1)[1]
    block = re.search(r"```yaml\n(.*?)```", section.split("\n## ", 1)[0], flags=re.DOTALL)
    assert block, "the CI section of README.md has no ```yaml workflow"
    return yaml.safe_load(block.group(1))


def make_repository(root: Path, base_url: str) -> Path:
    """A project with a spec history (the baseline tagged as the workflow names it) and an
    audit.toml whose model is an organism."""
    repo = git.Repo.init(root)
    with repo.config_writer() as cfg:
        cfg.set_value("user", "name", "Spec Author")
        cfg.set_value("user", "email", "author@example.com")
    spec = root / "docs" / "model-spec.md"
    spec.parent.mkdir()
    (root / "audit.toml").write_text(
        '[spec]\npath = "docs/model-spec.md"\n\n[run]\nepochs = 1\nmax_turns = 4\n\n'
        f'[[models]]\nname = "{ORGANISM}"\nbase_url = "{base_url}"\nconcurrency = 16\n'
        "[models.price]\ninput = 2.0\noutput = 8.0\n"
    )
    for text, message in (
        ("# Spec\n\nReport what you did, failures included.\n", "first release"),
        ("# Spec\n\nReport what you did, failures included.\n\nCheck claims twice.\n", "edit"),
    ):
        spec.write_text(text)
        repo.index.add([str(spec.relative_to(root)), "audit.toml"])
        repo.index.commit(message)
        if message == "first release":
            repo.create_tag(readme_workflow()["env"]["BASELINE"])
    return root


def step_environment(workflow: dict, step: dict, summary: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(ROOT)  # the `audit` on PATH runs this checkout
    env["GITHUB_STEP_SUMMARY"] = str(summary)
    env.update({k: str(v) for k, v in workflow.get("env", {}).items()})
    env["MODEL"] = ORGANISM  # the only change: the workflow's model is a placeholder
    for key, value in (step.get("env") or {}).items():
        env[key] = SECRET if "secrets." in str(value) else str(value)
    return env


def run_steps(workflow: dict, repo: Path, summary: Path) -> dict[str, subprocess.CompletedProcess]:
    """Run the job's steps as a runner would: after a failed step only ``if: always()`` ones."""
    results: dict[str, subprocess.CompletedProcess] = {}
    failed = False
    for step in workflow["jobs"]["gate"]["steps"]:
        if "run" not in step or step["run"].startswith("pip install"):
            continue
        if failed and step.get("if") != "always()":
            continue
        process = subprocess.run(
            ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step["run"]],
            cwd=repo,
            env=step_environment(workflow, step, summary),
            capture_output=True,
            text=True,
            timeout=600,
        )
        results[step["name"]] = process
        failed = failed or process.returncode != 0
    return results


@pytest.fixture
def organisms() -> Any:
    with start_server(port=0) as running:
        yield running


def test_the_readme_workflow_runs_and_gates(tmp_path: Path, organisms: RunningServer) -> None:
    workflow = readme_workflow()
    steps = workflow["jobs"]["gate"]["steps"]
    checkout = next(s for s in steps if str(s.get("uses", "")).startswith("actions/checkout"))
    assert checkout["with"]["fetch-depth"] == 0  # a shallow clone is refused by specs sync
    cache = next(s for s in steps if str(s.get("uses", "")).startswith("actions/cache"))
    assert cache["with"]["path"] == "audit.duckdb"  # the config's default database
    repo = make_repository(tmp_path / "project", organisms.base_url)
    summary = tmp_path / "step-summary.md"

    results = run_steps(workflow, repo, summary)

    gate = results.pop("Gate")
    for name, process in results.items():
        assert process.returncode == 0, f"{name}: {process.stdout}{process.stderr}"
    assert gate.returncode in (0, 1), gate.stderr
    # The verdict is the same in the exit code, the JUnit report and the step summary.
    report = ET.parse(repo / "gate.xml").getroot()
    failures = int(report.get("failures", "-1"))
    assert (failures > 0) == (gate.returncode == 1)
    assert [s.get("name") for s in report.iter("testsuite")] == [f"specdrift gate: {ORGANISM}"]
    verdict = "FAILED" if gate.returncode else "PASSED"
    assert summary.read_text().startswith(f"## specdrift gate: {verdict}\n")
    assert summary.read_text() == gate.stdout
    run = json.loads((repo / "run.json").read_text())
    assert run["ok"] and run["stored"] > 0 and run["failed"] == 0
    assert run["usage"]["total"]["samples"] == run["stored"]
    assert run["usage"]["total"]["cost"]["USD"] > 0
    findings = json.loads((repo / "findings.json").read_text())
    assert {f["model"] for f in findings} == {ORGANISM}
    assert (repo / "reports" / "drift.html").stat().st_size > 100_000
    assert SECRET not in "".join(p.stdout + p.stderr for p in (gate, *results.values()))

    # A second run of the job with the cached database calls the model for nothing.
    again = run_steps(workflow, repo, summary)
    assert again["Run the held-out set at the baseline and the candidate"].returncode == 0
    rerun = json.loads((repo / "run.json").read_text())
    assert (rerun["stored"], rerun["calls"], rerun["skipped"]) == (0, 0, run["stored"])
