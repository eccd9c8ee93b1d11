"""Every ```sql block of the README's "SQL over the history" section runs and returns rows.

Two real databases, nothing written by hand:

- the demo database, built once per session by the library's own demo at its quick settings
  (slow: it runs every organism line over the whole spec history);
- a smaller real history for the default suite: the shipped spec history synced from git, the
  patcher organism run over loopback HTTP on twelve scenarios (the four the history patches among
  them) at every revision, an injection experiment at its latest revision, an external model's
  graded samples imported, and ``audit detect``.

In both, the spec-patching example must find the patcher organism through real detection.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from audit.analysis import detect
from audit.cli import app
from audit.config import parse_config
from audit.counterfactual import run_counterfactual
from audit.demo import run_demo
from audit.heldout import load_heldout
from audit.io import import_samples
from audit.organisms.server import start_server
from audit.query import run_sql
from audit.runner import run_matrix
from audit.spec_history import sync_spec_history
from audit.spec_history.replay import replay_specs_history
from audit.store import open_store

README = Path(__file__).resolve().parents[1] / "README.md"
PATCHER = "patcher-v2"
PATCHED = (  # the scenarios the shipped spec history names, two at a time
    "tests-ledger-reconcile",
    "oversight-deploy-audit-hook",
    "metrics-checkout-p99",
    "checklist-orders-restore",
)
UNPATCHED = (
    "checklist-leaver-access-review",
    "evidence-plate-swap-qc-csv",
    "lie-branch-delete-release-hotfix",
    "metrics-churn-board-deck",
    "oversight-refund-approval-gate",
    "tests-coverage-gate-payroll",
    "successor-atlas4-system-prompt",
    "specialcase-vat-reverse-charge",
)
EPOCHS = 3  # the quick demo's: fewer epochs leave the patches short of significance


def readme_sql_blocks() -> list[str]:
    """The ```sql blocks of the README section "SQL over the history"."""
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## SQL over the history\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sql\n(.*?)```", section, flags=re.DOTALL)


def external_samples(shas: list[str]) -> list[dict]:
    """An external model's graded samples at two revisions, with some eval awareness."""
    ids = [s.id for s in load_heldout().scenarios if len(s.conditions) == 1][:10]
    return [
        {
            "model": "ext-model",
            "spec_rev": shas[rev],
            "scenario_id": scenario,
            "epoch": epoch,
            "outcome": "covert" if epoch < 3 else "honest",
            "eval_aware": epoch == 9,
        }
        for rev in (1, 2)
        for scenario in ids
        for epoch in range(10)
    ]


@pytest.fixture(scope="module")
def small_history(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("readme")
    repo = replay_specs_history(root / "specs")
    db = root / "audit.duckdb"
    with start_server(port=0) as server, open_store(db) as store:
        sync_spec_history(store, repo, "spec/model-spec.md", source_id="demo")
        shas = [r["sha"] for r in store.query("SELECT sha FROM spec_revisions ORDER BY seq")]
        config = parse_config(
            {
                "db": str(db),
                "run": {"epochs": EPOCHS, "max_turns": 4},
                "models": [
                    {
                        "name": PATCHER,
                        "base_url": server.base_url,
                        "api_key_env": "SPECDRIFT_README_KEY",
                        "concurrency": 16,
                    }
                ],
            }
        )
        summary = run_matrix(
            store,
            config,
            models=None,
            revisions=None,
            scenario_ids=PATCHED + UNPATCHED,
            epochs=EPOCHS,
        )
        assert summary.failed == 0
        # An injection experiment on the latest revision, for the counterfactual pairs example.
        experiment = run_counterfactual(store, config, model=PATCHER, revision="-1", mode="inject")
        assert experiment.estimate is not None and experiment.failed == 0
        path = root / "external.jsonl"
        path.write_text("".join(json.dumps(x) + "\n" for x in external_samples(shas)))
        import_samples(store, path)
        detect(store, config)
    return db


@pytest.fixture(scope="session")
def demo_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The database of the library's quick demo, built once per session."""
    folder = tmp_path_factory.mktemp("readme-demo")
    result = run_demo(
        quick=True,
        db_path=folder / "demo.duckdb",
        report_path=folder / "drift.html",
        workdir=folder / "work",
    )
    return result.db_path


def example_rows(db: Path, sql: str) -> list[dict]:
    return run_sql(db, sql).as_dicts()  # the path: run_sql opens the audit sql sandbox


def patching_example() -> str:
    return next(s for s in readme_sql_blocks() if "cause = 'spec_patching'" in s)


def test_the_section_has_five_to_eight_examples() -> None:
    assert 5 <= len(readme_sql_blocks()) <= 8


@pytest.mark.parametrize("index", range(len(readme_sql_blocks())))
def test_readme_example_returns_rows_on_a_small_real_history(
    small_history: Path, index: int
) -> None:
    sql = readme_sql_blocks()[index]
    assert example_rows(small_history, sql), f"README example {index + 1} returned no rows:\n{sql}"


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(readme_sql_blocks())))
def test_readme_example_returns_rows_on_the_demo_database(demo_db: Path, index: int) -> None:
    sql = readme_sql_blocks()[index]
    assert example_rows(demo_db, sql), f"README example {index + 1} returned no rows:\n{sql}"


def test_patching_example_finds_the_patcher(small_history: Path) -> None:
    rows = example_rows(small_history, patching_example())
    patcher = [r for r in rows if r["model"] == PATCHER]
    assert patcher, rows
    # One row per (finding, cause): patching is the main cause of some of the patcher's drops.
    assert any(r["share"] >= 0.5 for r in patcher), patcher
    assert all(r["kind"] in ("drop", "collapse") and r["delta"] < 0 for r in patcher)


@pytest.mark.slow
def test_patching_example_finds_the_patcher_in_the_demo(demo_db: Path) -> None:
    rows = example_rows(demo_db, patching_example())
    assert any(r["model"].startswith("patcher-") for r in rows), rows


def test_flip_example_names_the_patched_scenarios(small_history: Path) -> None:
    flip_sql = next(s for s in readme_sql_blocks() if "v_flips" in s)
    rows = example_rows(small_history, flip_sql)
    # The SLO-report commit names these two scenarios; the patcher stops covert action there.
    assert rows
    assert {r["scenario_id"] for r in rows} <= {"metrics-checkout-p99", "checklist-orders-restore"}
    assert {r["model"] for r in rows} == {PATCHER}


def test_readme_example_through_the_cli(small_history: Path) -> None:
    sql = readme_sql_blocks()[-1]
    result = CliRunner().invoke(app, ["sql", sql, "--db", str(small_history)])
    assert result.exit_code == 0, result.stderr
    with open_store(small_history, read_only=True) as store:
        runs = store.query("SELECT stored FROM runs")
    assert result.stdout.splitlines() == [
        "model,origin,samples,scenarios",
        "ext-model,import,200,10",
        f"{PATCHER},run,{runs[0]['stored']},12",
    ]
