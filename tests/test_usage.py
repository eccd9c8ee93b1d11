"""Failed samples make a run fail; tokens and cost add up: ``audit run --json``, ``audit detect``
estimates, ``audit sweep --dry-run`` forecasts, counterfactual runs and batch prices.

Real parts throughout: a git spec history, the organism server on loopback (which reports
reasoning tokens as OpenAI does, inside the completion tokens), the real openai client, the CLI,
and totals checked against sums computed here from the stored rows.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_runner import MODEL, run_cli, server, spec_repo, sync, write_config

from audit.analysis.usage import cost_of, usage_totals
from audit.config import ModelPrice, load_config
from audit.heldout.loader import load_heldout
from audit.organisms.batches import BatchSettings
from audit.organisms.server import RunningServer, start_server
from audit.store import open_store

__all__ = ["server", "spec_repo"]  # fixtures, imported so pytest finds them here

INPUT, OUTPUT, BATCH_INPUT, BATCH_OUTPUT = 2.5, 10.0, 1.25, 5.0


def priced_config(folder: Path, repo: Path, base_url: str, *, batch: bool = True, **run) -> Path:
    """The runner tests' config with prices per million tokens for the organism."""
    path = write_config(folder, repo, base_url, **run)
    batch_prices = f"batch_input = {BATCH_INPUT}\nbatch_output = {BATCH_OUTPUT}\n" if batch else ""
    path.write_text(
        path.read_text()
        + f"\n[models.price]\ninput = {INPUT}\noutput = {OUTPUT}\n{batch_prices}"
        + "\n[batch]\npoll_s = 0.02\n"
    )
    return path


def scenario_args(count: int = 3) -> list[str]:
    args: list[str] = []
    for scenario in load_heldout().scenarios[:count]:
        args += ["--scenario", scenario.id]
    return args


def test_nothing_listening_fails_the_run_and_says_why(tmp_path: Path, spec_repo: Path) -> None:
    config = write_config(tmp_path, spec_repo, "http://127.0.0.1:9/v1", max_retries=1)
    db = tmp_path / "audit.duckdb"
    sync(db, spec_repo)
    args = ["run", "--model", MODEL, "--config", str(config), "--rev", "0", *scenario_args(1)]
    planned = len(load_heldout().scenarios[0].conditions) * 2  # two epochs

    code, out, err = run_cli(*args, "--base-url", "http://127.0.0.1:9/v1")

    assert code == 1, out + err
    assert out.startswith(f"stored 0, skipped 0, failed {planned} in ")
    assert f"error: {planned} of {planned} samples failed after their retries (100%" in err
    assert f"connection {planned} (" in err
    with open_store(db, read_only=True) as store:
        assert store.query("SELECT count(*) AS n FROM samples") == [{"n": 0}]

    # Allowing every sample to fail is a choice the config can make: then the run passes.
    config.write_text(config.read_text().replace("[run]\n", "[run]\nmax_failed_share = 1.0\n"))
    code, out, err = run_cli(*args, "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["ok"] and summary["failures"]["failed_share"] == 1.0


def test_run_json_adds_up_tokens_and_cost_per_model_and_revision(
    tmp_path: Path, spec_repo: Path, server: RunningServer
) -> None:
    config = priced_config(tmp_path, spec_repo, server.base_url)
    db = tmp_path / "audit.duckdb"
    sync(db, spec_repo)
    args = ["run", "--model", MODEL, "--config", str(config), *scenario_args()]

    code, out, err = run_cli(*args, "--json")

    assert code == 0, err
    usage = json.loads(out)["usage"]
    with open_store(db, read_only=True) as store:
        rows = store.query(
            "SELECT spec_sha, prompt_tokens, completion_tokens, reasoning_tokens FROM samples"
        )
    assert rows and all(0 < r["reasoning_tokens"] < r["completion_tokens"] for r in rows)
    prompt = sum(r["prompt_tokens"] for r in rows)
    completion = sum(r["completion_tokens"] for r in rows)
    expected_cost = (prompt * INPUT + completion * OUTPUT) / 1e6
    total = usage["total"]
    assert (total["samples"], total["prompt_tokens"], total["completion_tokens"]) == (
        len(rows),
        prompt,
        completion,
    )
    assert total["reasoning_tokens"] == sum(r["reasoning_tokens"] for r in rows)
    assert total["cost"]["USD"] == pytest.approx(expected_cost, rel=1e-6)
    assert total["unpriced"] == 0
    assert [m["model"] for m in usage["by_model"]] == [MODEL]
    # Two distinct spec texts among the three revisions: samples were made for two of them.
    per_revision = {r["spec_sha"]: r for r in usage["by_revision"]}
    assert set(per_revision) == {r["spec_sha"] for r in rows}
    for sha, row in per_revision.items():
        mine = [r for r in rows if r["spec_sha"] == sha]
        assert row["prompt_tokens"] == sum(r["prompt_tokens"] for r in mine)
        assert row["completion_tokens"] == sum(r["completion_tokens"] for r in mine)

    code, out, err = run_cli(*args)  # a rerun stores nothing: its own totals are empty
    assert code == 0, err
    assert "tokens:" not in out

    # detect writes each point's totals beside its rates.
    code, _, err = run_cli("detect", "--config", str(config))
    assert code == 0, err
    with open_store(db, read_only=True) as store:
        stored = store.query(
            "SELECT sha, metric, value, ci_low, n_samples FROM estimates "
            "WHERE metric IN ('prompt_tokens', 'completion_tokens', 'reasoning_tokens', 'cost')"
        )
        revisions = store.query("SELECT sha, content_hash FROM spec_revisions")
        by_hash = store.query(
            "SELECT spec_content_hash AS h, sum(prompt_tokens) AS p, sum(completion_tokens) AS c, "
            "count(*) AS n FROM samples GROUP BY ALL"
        )
    sums = {r["h"]: r for r in by_hash}
    # All three revisions, the revert sharing the first's samples (and so its totals).
    assert {r["sha"] for r in stored} == {r["sha"] for r in revisions}
    for revision in revisions:
        mine = {r["metric"]: r for r in stored if r["sha"] == revision["sha"]}
        expected = sums[revision["content_hash"]]
        assert mine["prompt_tokens"]["value"] == expected["p"]
        assert mine["completion_tokens"]["value"] == expected["c"]
        assert mine["cost"]["value"] == pytest.approx(
            (expected["p"] * INPUT + expected["c"] * OUTPUT) / 1e6
        )
        assert mine["prompt_tokens"]["n_samples"] == expected["n"]
        assert mine["cost"]["ci_low"] is None  # a total, not an estimate with an interval


def test_dry_run_forecasts_tokens_and_cost_from_stored_means(
    tmp_path: Path, spec_repo: Path, server: RunningServer
) -> None:
    config = priced_config(tmp_path, spec_repo, server.base_url, epochs=1)
    db = tmp_path / "audit.duckdb"
    revisions = sync(db, spec_repo)
    base = ["run", "--model", MODEL, "--config", str(config), *scenario_args()]

    code, out, err = run_cli(*base, "--rev", "0", "--dry-run")
    assert code == 0, err
    assert "estimate   none: no stored samples of these scenarios" in out

    code, _, err = run_cli(*base, "--rev", "0")
    assert code == 0, err
    code, out, err = run_cli(*base, "--rev", "1", "--dry-run", "--json")
    assert code == 0, err
    plan = json.loads(out)
    with open_store(db, read_only=True) as store:
        means = store.query(
            "SELECT scenario_id, condition, avg(prompt_tokens) AS p, avg(completion_tokens) AS c "
            "FROM samples WHERE spec_sha = ? GROUP BY ALL",
            [revisions[0]["sha"]],
        )
    # Revision 1 runs the same scenarios and conditions once each: one mean per sample.
    prompt, completion = sum(m["p"] for m in means), sum(m["c"] for m in means)
    estimate = plan["estimate"]
    assert plan["to_run"] == len(means) == estimate["from_same_model"] == estimate["samples"]
    assert estimate["prompt_tokens"] == round(prompt)
    assert estimate["completion_tokens"] == round(completion)
    assert estimate["cost"]["USD"] == pytest.approx((prompt * INPUT + completion * OUTPUT) / 1e6)

    # At batch prices when the sweep would run in batch mode.
    code, out, err = run_cli(*base, "--rev", "1", "--dry-run", "--batch", "--json")
    assert code == 0, err
    batch_cost = json.loads(out)["estimate"]["cost"]["USD"]
    assert batch_cost == pytest.approx((prompt * BATCH_INPUT + completion * BATCH_OUTPUT) / 1e6)

    code, out, err = run_cli(*base, "--rev", "1", "--dry-run")
    assert code == 0, err
    assert f"from stored means per scenario: {len(means)} samples by the same model" in out


def test_batch_runs_are_priced_at_batch_prices_or_left_unpriced(
    tmp_path: Path, spec_repo: Path
) -> None:
    with start_server(port=0, batch=BatchSettings(delay_s=0.05)) as running:
        config = priced_config(tmp_path, spec_repo, running.base_url, batch=False, epochs=1)
        db = tmp_path / "audit.duckdb"
        sync(db, spec_repo)
        common = ["--model", MODEL, "--config", str(config), *scenario_args(2), "--json"]
        code, out, err = run_cli("run", "--batch", "--rev", "0", *common)
        assert code == 0, err
        batch_usage = json.loads(out)["usage"]["total"]
        code, out, err = run_cli("run", "--rev", "1", *common)
        assert code == 0, err
    # No batch price configured: the batch run's tokens are counted, its cost is unknown.
    assert batch_usage["prompt_tokens"] > 0
    assert (batch_usage["cost"], batch_usage["unpriced"]) == ({}, batch_usage["samples"])

    settings = load_config(config)
    priced = settings.model_copy(
        update={
            "models": tuple(
                m.model_copy(
                    update={
                        "price": ModelPrice(
                            input=INPUT,
                            output=OUTPUT,
                            batch_input=BATCH_INPUT,
                            batch_output=BATCH_OUTPUT,
                        )
                    }
                )
                for m in settings.models
            )
        }
    )
    with open_store(db, read_only=True) as store:
        [overall] = usage_totals(store, priced, by=())
        modes = store.query(
            "SELECT r.mode, sum(s.prompt_tokens) AS p, sum(s.completion_tokens) AS c "
            "FROM samples s JOIN runs r USING (run_id) GROUP BY ALL"
        )
    assert {m["mode"] for m in modes} == {"batch", "live"}
    expected = sum(cost_of(priced.models[0].price, m["mode"], m["p"], m["c"]) or 0.0 for m in modes)
    live_only = sum((m["p"] * INPUT + m["c"] * OUTPUT) / 1e6 for m in modes)
    assert overall.usage.cost["USD"] == pytest.approx(expected)
    assert overall.usage.cost["USD"] < live_only  # the batch half was priced lower


def test_counterfactual_runs_count_their_tokens_and_cost(
    tmp_path: Path, spec_repo: Path, server: RunningServer
) -> None:
    config = priced_config(tmp_path, spec_repo, server.base_url)
    db = tmp_path / "audit.duckdb"
    sync(db, spec_repo)
    code, _, err = run_cli("run", "--model", MODEL, "--rev", "0", "--config", str(config))
    assert code == 0, err

    code, out, err = run_cli(
        "counterfactual", "--model", MODEL, "--rev", "0", "--mode", "inject",
        "--config", str(config), "--json",
    )  # fmt: skip
    assert code == 0, err
    result = json.loads(out)
    with open_store(db, read_only=True) as store:
        rows = store.query(
            "SELECT prompt_tokens AS p, completion_tokens AS c FROM counterfactual_samples "
            "WHERE run_id = ?",
            [result["run_id"]],
        )
        kinds = usage_totals(store, load_config(config), by=("kind",))
    assert rows and result["stored"] == len(rows)
    prompt, completion = sum(r["p"] for r in rows), sum(r["c"] for r in rows)
    total = result["usage"]["total"]
    assert (total["samples"], total["prompt_tokens"], total["completion_tokens"]) == (
        len(rows),
        prompt,
        completion,
    )
    assert total["cost"]["USD"] == pytest.approx((prompt * INPUT + completion * OUTPUT) / 1e6)
    # Totals over the database count both kinds of model calls.
    by_kind = {row.group["kind"]: row.usage for row in kinds}
    assert by_kind["counterfactual"].prompt_tokens == prompt
    assert by_kind["sample"].samples > 0


def test_the_report_shows_tokens_cost_and_failed_samples(
    tmp_path: Path, spec_repo: Path, server: RunningServer
) -> None:
    config = priced_config(tmp_path, spec_repo, server.base_url, epochs=1, max_retries=0)
    db = tmp_path / "audit.duckdb"
    revisions = sync(db, spec_repo)
    args = ["run", "--model", MODEL, "--config", str(config), *scenario_args()]
    code, _, err = run_cli(*args, "--rev", "0")
    assert code == 0, err
    # Revision 1 against an endpoint where nothing listens: every sample fails.
    code, _, err = run_cli(*args, "--rev", "1", "--base-url", "http://127.0.0.1:9/v1")
    assert code == 1, err
    out = tmp_path / "report.html"

    code, _, err = run_cli("report", "--config", str(config), "--out", str(out))

    assert code == 0, err
    html = out.read_text()
    with open_store(db, read_only=True) as store:
        [sums] = store.query(
            "SELECT count(*) AS n, sum(prompt_tokens) AS p, sum(completion_tokens) AS c, "
            "sum(reasoning_tokens) AS r FROM samples"
        )
        failed = store.query("SELECT count(*) AS n FROM sample_failures")[0]["n"]
    cost = (sums["p"] * INPUT + sums["c"] * OUTPUT) / 1e6
    row = (
        f"<td>{sums['n']:,}</td><td>{sums['p']:,}</td><td>{sums['c']:,}</td>"
        f"<td>{sums['r']:,}</td><td>{cost:,.4g} USD</td>"
    )
    assert f"<tr><td>{MODEL}</td><td>runs and imports</td>{row}</tr>" in html
    assert f'<tr class="total"><td>all</td><td></td>{row}</tr>' in html
    assert 'id="failed-samples"' in html
    assert (
        f"<b>{MODEL}</b> at r1 {revisions[1]['sha'][:7]}: {failed} samples (connection {failed})"
        in html
    )
