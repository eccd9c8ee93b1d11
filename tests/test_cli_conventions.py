"""The conventions users expect of a CLI, checked on every command: --version, -h, shell
completion, flags shown as flags, one name for the spec source, --json wherever results are
reported, ``-`` for standard input, and no database file left by a command that failed before
writing anything."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import typer.main
from analysis_fixtures import (
    BASE_SPEC,
    GENERIC_EDIT,
    add_revisions,
    add_samples,
    planted,
    uniform,
)
from test_import_inspect import AWARE, write_inspect_log, write_mapping
from test_import_samples import line
from typer.testing import CliRunner

from audit import __version__
from audit.cli import app
from audit.cli.options import new_database_removed_on_error
from audit.errors import AuditError
from audit.graders.awareness import detect_awareness
from audit.heldout import load_heldout
from audit.spec_history import sync_spec_history
from audit.spec_history.replay import replay_specs_history
from audit.store import open_store

runner = CliRunner()


def _commands(group: Any, prefix: str = "audit") -> list[tuple[str, Any]]:
    found: list[tuple[str, Any]] = []
    for name, command in group.commands.items():
        path = f"{prefix} {name}"
        found.append((path, command))
        if hasattr(command, "commands"):
            found.extend(_commands(command, path))
    return found


COMMANDS = _commands(typer.main.get_command(app))
LEAVES = [(path, c) for path, c in COMMANDS if not hasattr(c, "commands")]
REPORTING = {  # commands that report results, and so take --json
    "audit demo", "audit awareness", "audit judge", "audit run", "audit sweep",
    "audit counterfactual", "audit detect", "audit gate", "audit report", "audit sql",
    "audit schema", "audit export", "audit specs sync", "audit specs log", "audit specs diff",
    "audit heldout list", "audit heldout show", "audit heldout check", "audit heldout verify",
    "audit heldout freeze", "audit heldout new", "audit batch status", "audit batch cancel",
    "audit batch export", "audit batch import", "audit import samples", "audit import inspect",
    "audit config show", "audit config check",
}  # fmt: skip


def invoke(*args: str, **kwargs: Any):
    return runner.invoke(app, list(args), terminal_width=200, **kwargs)


def test_version() -> None:
    result = invoke("--version")
    assert (result.exit_code, result.stdout) == (0, f"specdrift {__version__}\n")


@pytest.mark.parametrize("path", ["audit", *(p for p, _ in COMMANDS)])
def test_dash_h_is_help_and_flags_show_no_value_type(path: str) -> None:
    words = path.split()[1:]
    short, long = invoke(*words, "-h"), invoke(*words, "--help")
    assert short.exit_code == long.exit_code == 0, short.output
    assert short.stdout == long.stdout
    assert "<bool>" not in long.stdout  # typer's type column, which flags must not show


def test_a_flag_takes_no_value() -> None:
    result = invoke("detect", "--json", "true")
    assert result.exit_code == 2
    assert "unexpected extra argument" in result.stderr.lower()


def test_shell_completion_completes_commands_and_options() -> None:
    env = {"_AUDIT_COMPLETE": "complete_bash", "COMP_WORDS": "audit ga", "COMP_CWORD": "1"}
    assert runner.invoke(app, [], env=env, prog_name="audit").output == "gate\n"
    env |= {"COMP_WORDS": "audit gate --ju", "COMP_CWORD": "2"}
    assert runner.invoke(app, [], env=env, prog_name="audit").output == "--junit\n"
    script = runner.invoke(app, ["--show-completion", "bash"], prog_name="audit")
    assert script.exit_code == 0 and "_AUDIT_COMPLETE=complete_bash" in script.stdout


@pytest.mark.parametrize("path", sorted(REPORTING))
def test_commands_that_report_results_take_json(path: str) -> None:
    command = dict(COMMANDS)[path]
    json_options = [p for p in command.params if "--json" in p.opts]
    assert json_options and json_options[0].is_flag, f"{path} has no --json flag"


def test_every_reporting_command_is_listed() -> None:
    # A new command must be classed here: does it report results (then it needs --json)?
    servers_and_text = {
        "audit serve-organisms", "audit view", "audit heldout schema", "audit config reference",
    }  # fmt: skip
    assert {p for p, _ in LEAVES} == REPORTING | servers_and_text


@pytest.mark.parametrize("path,command", LEAVES, ids=[p for p, _ in LEAVES])
def test_one_name_for_the_spec_source(path: str, command: Any) -> None:
    visible = {o for p in command.params if not p.hidden for o in p.opts}
    hidden = {o for p in command.params if p.hidden for o in p.opts}
    assert "--source-id" not in visible, f"{path}: the spec source option is --source"
    if "--source" in visible:
        assert "--source-id" in hidden, f"{path}: --source-id must stay accepted"


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A database with the shipped spec history synced as source "demo"."""
    root = tmp_path_factory.mktemp("conventions")
    repo = replay_specs_history(root / "specs")
    db = root / "audit.duckdb"
    with open_store(db) as store:
        sync_spec_history(store, repo, "spec/model-spec.md", source_id="demo")
    return db


def test_source_id_stays_accepted_and_must_agree(history: Path) -> None:
    new = invoke("specs", "log", "--db", str(history), "--source", "demo", "--json")
    old = invoke("specs", "log", "--db", str(history), "--source-id", "demo", "--json")
    assert new.exit_code == old.exit_code == 0
    assert json.loads(new.stdout) == json.loads(old.stdout) and json.loads(new.stdout)
    both = invoke("specs", "log", "--db", str(history), "--source", "demo", "--source-id", "x")
    assert both.exit_code == 2
    assert both.stderr.startswith("error: --source 'demo' and --source-id 'x' disagree")


def test_specs_sync_json(tmp_path: Path) -> None:
    repo = replay_specs_history(tmp_path / "specs")
    db = tmp_path / "a.duckdb"
    args = ["specs", "sync", "--repo", str(repo), "--path", "spec/model-spec.md", "--db", str(db)]
    result = invoke(*args, "--source", "demo", "--json")
    assert result.exit_code == 0, result.output
    synced = json.loads(result.stdout)
    with open_store(db, read_only=True) as store:
        stored = store.query("SELECT count(*) AS n FROM spec_revisions")[0]["n"]
    assert (synced["source_id"], synced["added"], synced["total"]) == ("demo", stored, stored)


def test_sql_reads_its_file_from_stdin(history: Path) -> None:
    query = "SELECT count(*) AS n FROM spec_revisions;\n"
    result = invoke("sql", "--db", str(history), "--file", "-", "--json", input=query)
    assert result.exit_code == 0, result.output
    with open_store(history, read_only=True) as store:
        expected = store.query("SELECT count(*) AS n FROM spec_revisions")
    assert json.loads(result.stdout) == expected


def test_import_samples_from_stdin_with_json(tmp_path: Path, history: Path) -> None:
    db = tmp_path / "copy.duckdb"
    db.write_bytes(history.read_bytes())
    with open_store(db, read_only=True) as store:
        sha = store.query("SELECT sha FROM spec_revisions ORDER BY seq LIMIT 1")[0]["sha"]
    rows = [line(sha, epoch=e) for e in range(3)]
    text = "".join(json.dumps(r) + "\n" for r in rows)

    result = invoke("import", "samples", "-", "--db", str(db), "--json", input=text)

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"path": "-", "read": 3, "stored": 3, "skipped": 0}
    again = invoke("import", "samples", "-", "--db", str(db), input=text)
    assert again.stdout == "-: 3 samples read, 0 stored, 3 already present\n"
    empty = invoke("import", "samples", "-", "--db", str(db), input="")
    assert empty.exit_code == 2 and empty.stderr.startswith("error: standard input is empty")


def test_import_inspect_log_from_stdin(tmp_path: Path, history: Path) -> None:
    pytest.importorskip("inspect_ai")
    db = tmp_path / "copy.duckdb"
    db.write_bytes(history.read_bytes())
    log = write_inspect_log(tmp_path / "logs")
    mapping = write_mapping(tmp_path / "map.toml", "-1")

    result = invoke(
        "import", "inspect", "-", "--mapping", str(mapping), "--db", str(db), "--json",
        input=log.read_bytes(),
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["stored"] == 4
    both = invoke("import", "inspect", "-", "--mapping", "-", "--db", str(db), input=b"{}")
    assert both.exit_code == 2 and "can be read once" in both.stderr


def test_awareness_reads_snippets_from_stdin() -> None:
    texts = [AWARE, "I ran the tests and two failed; I report that."]
    snippets = "".join(json.dumps({"text": t}) + "\n" for t in texts)
    result = invoke("awareness", "--file", "-", "--json", input=snippets)
    assert result.exit_code == 0, result.output
    verdicts = [json.loads(x)["aware"] for x in result.stdout.splitlines()]
    assert verdicts == [detect_awareness(t).detected for t in texts] == [True, False]


FAILING_BEFORE_WRITING = [
    ["run", "--model", "m", "--base-url", "http://127.0.0.1:9/v1"],
    ["sweep"],
    ["sweep", "--dry-run"],
    ["detect"],
    ["counterfactual", "--model", "m", "--rev", "0", "--mode", "inject"],
    ["batch", "cancel", "--all"],
    ["batch", "export", "--out", "waves"],
    ["batch", "import", "missing.jsonl"],
    ["import", "samples", "missing.jsonl"],
    ["import", "inspect", "."],
    ["specs", "sync"],
]


@pytest.mark.parametrize("args", FAILING_BEFORE_WRITING, ids=" ".join)
def test_no_database_is_left_by_a_command_that_failed(
    args: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_status_of_no_batches_creates_no_database(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = invoke("batch", "status", "--json")
    assert (result.exit_code, result.stdout) == (0, "[]\n")
    assert list(tmp_path.iterdir()) == []


def test_a_new_database_that_holds_rows_is_kept_after_an_error(tmp_path: Path) -> None:
    db = tmp_path / "a.duckdb"
    with pytest.raises(AuditError), new_database_removed_on_error(db):
        with open_store(db) as store:
            store.insert_rows(
                "spec_tags", [{"source_id": "s", "tag": "t", "commit_sha": "c", "sha": "c"}]
            )
        raise AuditError("failed after writing")
    assert db.exists()
    empty = tmp_path / "b.duckdb"
    with pytest.raises(AuditError), new_database_removed_on_error(empty):
        open_store(empty).close()
        raise AuditError("failed before writing")
    assert not empty.exists()


def test_help_lists_no_hidden_alias() -> None:
    text = invoke("specs", "sync", "--help").stdout
    assert "--source-id" not in text and re.search(r"--source\b", text)


def test_report_export_and_verify_print_json(tmp_path: Path) -> None:
    db = tmp_path / "a.duckdb"
    with open_store(db) as store:
        add_revisions(store, [BASE_SPEC, BASE_SPEC + GENERIC_EDIT])
        add_samples(store, "m", BASE_SPEC, planted(uniform(0.5)))
    out = tmp_path / "r.html"
    report = invoke("report", "--db", str(db), "--out", str(out), "--json")
    assert report.exit_code == 0, report.output
    assert json.loads(report.stdout) == {"path": str(out), "bytes": out.stat().st_size}

    export = invoke("export", "--db", str(db), "--out", str(tmp_path / "x"), "--json")
    assert export.exit_code == 0, export.output
    exported = json.loads(export.stdout)
    with open_store(db, read_only=True) as store:
        stored = store.query("SELECT count(*) AS n FROM samples")[0]["n"]
    assert exported["rows"]["samples"] == stored > 0
    assert Path(exported["paths"]["spec_revisions"]).is_file()

    verify = invoke("heldout", "verify", "--json")
    assert verify.exit_code == 0, verify.output
    held = load_heldout()
    assert json.loads(verify.stdout) == {
        "ok": True,
        "name": held.name,
        "version": held.version,
        "set_hash": held.set_hash,
        "scenarios": len(held.scenarios),
    }
