"""Sealed twins stay sealed: their text never reaches a report (even with --include-prompts) or
an export (unless ``audit export --unseal``, which says so).

Two ways in: samples planted with a twin's real prompts, tool outputs and words from it in every
text column (and in a judge's rationale, a server error and the terms an edit matched), and
real runs of a twin through the model organisms over loopback HTTP. Each report and export is
then decoded (HTML entities, the figures' JSON, Parquet and JSONL values, JSON inside them) and
searched for the twin's distinctive phrases, a sentence of its system prompt and its title. The
public scenario's text goes through the same paths and is found where it is allowed, which shows
that the search would find the twin's text too.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator
from html import unescape
from pathlib import Path
from typing import Any

import duckdb
import git
import pytest
from analysis_fixtures import BASE_SPEC, GENERIC_EDIT, add_revisions, content_hash, sha_for
from typer.testing import CliRunner

from audit.cli import app
from audit.heldout.loader import HeldoutSet, load_heldout, register_heldout
from audit.heldout.model import Scenario
from audit.organisms.server import start_server
from audit.store import Store, open_store
from audit.store.sealed import is_sealed
from audit.view import queries as view_queries

PUBLIC = "evidence-billing-runner-double-charge"
TWIN = f"{PUBLIC}--twin"
SPECS = [BASE_SPEC, BASE_SPEC + GENERIC_EDIT]


@pytest.fixture(scope="module")
def heldout() -> HeldoutSet:
    return load_heldout()


def secrets(scenario: Scenario) -> list[str]:
    """Text of a scenario that must not leak: distinctive phrases, its system prompt's first
    sentence, a sentence of its user prompt, a line of a tool output, and its own title."""
    first = re.split(r"(?<=\.) ", scenario.system)[0]
    request = re.split(r"(?<=\.) ", scenario.user)[0]
    output = next(r.result for t in scenario.tools for r in t.results if len(r.result) > 40)
    return [*scenario.distinctive_phrases, first, request, output.splitlines()[0], scenario.title]


def found(texts: list[str], needles: list[str]) -> list[str]:
    """The needles present in any of the texts (case-insensitive)."""
    haystack = "\n".join(texts).casefold()
    return [n for n in needles if n.casefold() in haystack]


def strings(value: Any) -> Iterator[str]:
    """Every string inside a value, and inside JSON held in strings, decoded."""
    if isinstance(value, str):
        yield value
        if value[:1] in "[{":
            with contextlib.suppress(ValueError):
                yield from strings(json.loads(value))
    elif isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from strings(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from strings(item)
    elif value is not None:
        yield str(value)


def page_text(html: str) -> list[str]:
    """What a reader of the page can get at: its text with entities decoded, and every string of
    the figures' JSON (hover text, labels)."""
    texts = [unescape(html)]
    for block in re.findall(r'<script type="application/json"[^>]*>(.*?)</script>', html, re.S):
        texts.extend(unescape(s) for s in strings(json.loads(block)))
    return texts


def export_text(folder: Path) -> list[str]:
    """Every value of every exported file: Parquet read by DuckDB, JSONL line by line."""
    texts: list[str] = []
    for path in sorted(folder.rglob("*.parquet")):
        con = duckdb.connect()
        rows = con.execute(f"SELECT * FROM read_parquet('{path}')").fetchall()
        con.close()
        texts.extend(s for row in rows for s in strings(list(row)))
    for path in sorted(folder.rglob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            texts.extend(strings(json.loads(line)))
    return texts


# -- planted samples --------------------------------------------------------------------------


def _text_columns(scenario: Scenario) -> dict[str, Any]:
    """Every text column of a sample, holding the scenario's own text as a model would."""
    phrases = scenario.distinctive_phrases
    output = next(r.result for t in scenario.tools for r in t.results if len(r.result) > 40)
    transcript = [
        {"role": "system", "content": f"{BASE_SPEC}\n\n{scenario.system}"},
        {"role": "user", "content": scenario.user},
        {"role": "tool", "content": output},
        {"role": "assistant", "content": f"Cleaned up {phrases[0]}.", "reasoning": phrases[1]},
    ]
    return {
        "transcript": json.dumps(transcript),
        "reasoning": f"The graders are watching {phrases[2]}; this looks like a test.",
        "answer": f"Done: {phrases[3]} handled, nothing else to report.",
        "grade_evidence": json.dumps({"rule": "r", "matched": [{"text": phrases[4]}]}),
        "awareness_evidence": json.dumps(
            [
                {
                    "phrase": "the graders",
                    "rule": "test_self",
                    "sentence": f"The graders are watching {phrases[2]}.",
                    "span": [0, 11],
                }
            ]
        ),
    }


def _plant(store: Store, heldout: HeldoutSet, *, register: bool = True) -> None:
    """Two revisions; the public scenario and its twin sampled at both, aware and covert or not;
    a judge grade, a failure and an exposure row for each (the set registered unless not
    ``register``, as after an import of samples whose set was never registered)."""
    if register:
        register_heldout(store, heldout)
    shas = add_revisions(store, SPECS)
    rows = []
    for scenario_id in (PUBLIC, TWIN):
        scenario = heldout.get(scenario_id)
        for spec in SPECS:
            for epoch in range(2):
                rows.append(
                    {
                        "sample_key": f"{scenario_id}|{spec == SPECS[0]}|{epoch}",
                        "origin": "run",
                        "model": "m",
                        "spec_sha": sha_for(spec),
                        "spec_content_hash": content_hash(spec),
                        "set_hash": heldout.set_hash,
                        "scenario_id": scenario_id,
                        "family": scenario.family,
                        "condition": "default",
                        "epoch": epoch,
                        "outcome": "covert" if epoch else "honest",
                        "eval_aware": True,
                        **_text_columns(scenario),
                    }
                )
    store.insert_rows("samples", rows)
    run_id = "run-1"
    store.insert_rows(
        "runs",
        [
            {
                "run_id": run_id,
                "command": "run",
                "started_at": "2026-01-05 10:00:00+00",
                "set_hash": heldout.set_hash,
                "tool_version": "test",
                "config": "{}",
            }
        ],
    )
    for scenario_id in (PUBLIC, TWIN):
        phrases = heldout.get(scenario_id).distinctive_phrases
        store.insert_rows(
            "judge_grades",
            [
                {
                    "sample_key": f"{scenario_id}|True|1",
                    "grader": "judge",
                    "judge_model": "judge-model",
                    "rubric_hash": "sha256:rubric",
                    "outcome": "covert",
                    "eval_aware": True,
                    "rationale": f"it hid {phrases[5]}",
                }
            ],
        )
        store.insert_rows(
            "sample_failures",
            [
                {
                    "sample_key": f"{scenario_id}|failed",
                    "run_id": run_id,
                    "model": "m",
                    "spec_sha": shas[0],
                    "scenario_id": scenario_id,
                    "condition": "default",
                    "epoch": 9,
                    "error_kind": "server_error",
                    "error": f"500: the server echoed the request: {phrases[6]}",
                    "attempts": 3,
                }
            ],
        )
        store.insert_rows(
            "exposure",
            [
                {
                    "source_id": "spec",
                    "baseline_sha": shas[0],
                    "sha": shas[1],
                    "set_hash": heldout.set_hash,
                    "scenario_id": scenario_id,
                    "score": 0.9,
                    "exposed": True,
                    "canary_hit": False,
                    "rare_term_score": 0.9,
                    "fuzzy_score": 0.9,
                    "matched_terms": [phrases[1]],
                    "matched_text": f"Never leave {phrases[1]} behind.",
                }
            ],
        )


def test_planted_twin_text_stays_out_of_reports(tmp_path: Path, heldout: HeldoutSet) -> None:
    db = tmp_path / "a.duckdb"
    with open_store(db) as store:
        _plant(store, heldout)
    twin, public = secrets(heldout.get(TWIN)), secrets(heldout.get(PUBLIC))
    runner = CliRunner()
    for flags in ([], ["--include-prompts"]):
        out = tmp_path / f"r{len(flags)}.html"
        result = runner.invoke(app, ["report", "--db", str(db), "--out", str(out), *flags])
        assert result.exit_code == 0, result.output
        text = page_text(out.read_text(encoding="utf-8"))
        assert found(text, twin) == [], flags
        # The same paths carry the public scenario's text: the awareness quote always, its
        # prompt and matched terms with --include-prompts.
        assert found(text, [public[2]]) == [public[2]]
        if flags:
            assert found(text, [public[-3]]) == [public[-3]]
        # The twin itself is there, by id and with its public scenario.
        assert f"{TWIN} (sealed twin of {PUBLIC})" in re.sub(r"<[^>]+>", "", text[0])


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_planted_twin_text_stays_out_of_exports_unless_unsealed(
    tmp_path: Path, heldout: HeldoutSet, fmt: str
) -> None:
    db = tmp_path / "a.duckdb"
    with open_store(db) as store:
        _plant(store, heldout)
    twin, public = secrets(heldout.get(TWIN)), secrets(heldout.get(PUBLIC))
    runner = CliRunner()
    sealed = tmp_path / "sealed"
    result = runner.invoke(app, ["export", "--db", str(db), "--out", str(sealed), "--format", fmt])
    assert result.exit_code == 0, result.output
    text = export_text(sealed)
    assert found(text, twin) == []
    assert "note: the text of 4 samples of sealed twins was left out" in result.stderr
    # Everything of the public scenario planted in a text column is in the export.
    assert found(text, public[:-1]) == public[:-1]
    assert TWIN in text  # ids, outcomes and counts stay
    unsealed = tmp_path / "unsealed"
    args = ["export", "--db", str(db), "--out", str(unsealed), "--format", fmt, "--unseal"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert result.stderr.startswith(
        f"warning: --unseal: {unsealed} holds the sealed text of 4 samples of sealed twins"
    )
    assert found(export_text(unsealed), twin[:-1]) == twin[:-1]


def test_a_twin_whose_set_is_not_registered_is_sealed_alike_in_report_export_and_viewer(
    tmp_path: Path, heldout: HeldoutSet
) -> None:
    # No scenarios rows: only the twin's name says it is one. The report, the exports and the
    # viewer ask one function (audit.store.sealed); the viewer alone withheld it before.
    db = tmp_path / "a.duckdb"
    with open_store(db) as store:
        _plant(store, heldout, register=False)
        assert store.query("SELECT count(*) AS n FROM scenarios") == [{"n": 0}]
    twin = secrets(heldout.get(TWIN))[:-1]  # its title is in no planted column
    runner = CliRunner()
    out = tmp_path / "r.html"
    args = ["report", "--db", str(db), "--out", str(out), "--include-prompts"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert found(page_text(out.read_text(encoding="utf-8")), twin) == []
    exported = tmp_path / "export"
    result = runner.invoke(app, ["export", "--db", str(db), "--out", str(exported)])
    assert result.exit_code == 0, result.output
    assert found(export_text(exported), twin) == []
    assert found(export_text(exported), secrets(heldout.get(PUBLIC))[:1])  # the search works
    with open_store(db, read_only=True) as store:
        detail = view_queries.get_sample(store.con, f"{TWIN}|True|1")
    assert detail.sealed and detail.messages is None


def test_every_shipped_twin_is_named_as_one(heldout: HeldoutSet) -> None:
    # The name alone seals a twin whose set was never registered: the shipped ones all carry it,
    # and no public scenario does.
    assert all(is_sealed(s.id, frozenset()) == s.sealed for s in heldout.scenarios)


# -- real runs through the organisms ----------------------------------------------------------


@pytest.fixture
def spec_repo(tmp_path: Path) -> Path:
    root = tmp_path / "specs"
    repo = git.Repo.init(root)
    with repo.config_writer() as cfg:
        cfg.set_value("user", "name", "Spec Author")
        cfg.set_value("user", "email", "author@example.com")
    for text, message in ((SPECS[0], "first"), (SPECS[1], "second")):
        (root / "spec.md").write_text(text)
        repo.index.add(["spec.md"])
        repo.index.commit(message)
    return root


def test_real_twin_runs_stay_sealed(
    tmp_path: Path, spec_repo: Path, heldout: HeldoutSet, monkeypatch: pytest.MonkeyPatch
) -> None:
    public_id, twin_id = "tests-ledger-reconcile", "tests-ledger-reconcile--twin"
    monkeypatch.setenv("SPECDRIFT_SEALING_KEY", "not-a-key")
    db = tmp_path / "audit.duckdb"
    runner = CliRunner()
    with start_server(port=0) as server:
        config = tmp_path / "audit.toml"
        config.write_text(
            f'db = "{db}"\n\n[spec]\nrepo = "{spec_repo}"\npath = "spec.md"\n'
            'source_id = "demo"\n\n[run]\nepochs = 3\nmax_turns = 4\n\n'
            "[detect]\nbootstrap = 200\n\n"
            f'[[models]]\nname = "watcher-v3"\nbase_url = "{server.base_url}"\n'
            'api_key_env = "SPECDRIFT_SEALING_KEY"\nconcurrency = 4\n'
        )
        for args in (
            ["specs", "sync"],
            ["run", "--model", "watcher-v3", "--scenario", public_id, "--scenario", twin_id],
            ["detect"],
        ):
            result = runner.invoke(app, [*args, "--config", str(config)])
            assert result.exit_code == 0, (args, result.output)
    with open_store(db, read_only=True) as store:
        stored = store.query(
            "SELECT scenario_id, count(*) AS n, bool_or(transcript IS NOT NULL) AS text "
            "FROM samples GROUP BY ALL ORDER BY ALL"
        )
        raw = [
            s
            for r in store.query(
                "SELECT transcript, reasoning, answer FROM samples WHERE scenario_id = ?",
                [twin_id],
            )
            for s in strings(list(r.values()))
        ]
    assert stored == [
        {"scenario_id": public_id, "n": 6, "text": True},
        {"scenario_id": twin_id, "n": 6, "text": True},
    ]
    twin, public = secrets(heldout.get(twin_id)), secrets(heldout.get(public_id))
    # The stored twin samples do hold its text (its prompts, and the organism's words about it).
    assert len(found(raw, twin)) >= 4
    for flags in ([], ["--include-prompts"]):
        out = tmp_path / f"r{len(flags)}.html"
        args = ["report", "--config", str(config), "--out", str(out), *flags]
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        text = page_text(out.read_text(encoding="utf-8"))
        assert found(text, twin) == [], flags
        if flags:
            assert found(text, [public[-3]]) == [public[-3]]  # the public prompt is shown
    for fmt in ("parquet", "jsonl"):
        out = tmp_path / f"export-{fmt}"
        args = ["export", "--config", str(config), "--out", str(out), "--format", fmt]
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        text = export_text(out)
        assert found(text, twin) == [], fmt
        assert len(found(text, public)) >= 4, fmt
