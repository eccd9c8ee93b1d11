"""``audit config show`` (every key's value and where it came from), ``audit config check``
(every problem at once) and the README's reference of every key, generated from the model."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from audit.cli import app
from audit.config import AuditConfig
from audit.config_explain import config_reference, reference_rows
from audit.spec_history.replay import replay_specs_history

README = Path(__file__).resolve().parents[1] / "README.md"
runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args), terminal_width=200)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    (tmp_path / "audit.toml").write_text(
        '[run]\nepochs = 5\n\n[[models]]\nname = "m1"\nconcurrency = 4\n'
        "[models.price]\ninput = 2.0\noutput = 8.0\n"
    )
    return tmp_path


def test_show_says_where_each_value_came_from(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:8000/v1")
    result = invoke("config", "show", "--db", "other.duckdb", "--set", "detect.alpha=0.1", "--json")
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    entries = {e["key"]: e for e in shown["entries"]}
    assert shown["file"] == str(project / "audit.toml")
    assert entries["run.epochs"] == {
        "key": "run.epochs",
        "value": 5,
        "origin": "file",
        "from": str(project / "audit.toml"),
    }
    assert (entries["db"]["value"], entries["db"]["origin"]) == ("other.duckdb", "flag")
    assert (entries["detect.alpha"]["value"], entries["detect.alpha"]["origin"]) == (0.1, "flag")
    assert entries["run.max_turns"] == {**entries["run.max_turns"], "value": 8, "origin": "default"}
    assert entries["models.m1.concurrency"]["origin"] == "file"
    assert entries["models.m1.price.input"]["value"] == 2.0
    assert entries["models.m1.price.batch_input"]["origin"] == "default"
    assert entries["models.m1.base_url"] == {
        "key": "models.m1.base_url",
        "value": "http://127.0.0.1:8000/v1",
        "origin": "env",
        "from": "OPENAI_BASE_URL",
    }
    # Every key of the model is shown once, the model's entries under its name (its price set,
    # so the price's keys and not the table itself).
    expected = {k.replace("models.", "models.m1.", 1) for k, _, _ in reference_rows()}
    assert set(entries) == expected - {"models.m1.price"}

    text = invoke("config", "show")
    assert text.exit_code == 0
    assert f"# config file: {project / 'audit.toml'}" in text.stdout
    assert re.search(r"^run\.epochs +5 +\[file\]$", text.stdout, flags=re.MULTILINE)


@pytest.mark.parametrize(
    "assignment,message",
    [
        ("models.m1.concurrency=3", "unknown key 'models.m1.concurrency'"),
        ("run.bogus=1", "unknown key 'run.bogus'"),
        ("run.epochs", "--set 'run.epochs': write KEY=VALUE"),
        ("run.epochs=0", "options: run.epochs: Input should be greater than or equal to 1"),
    ],
)
def test_show_refuses_bad_assignments(project: Path, assignment: str, message: str) -> None:
    result = invoke("config", "show", "--set", assignment)
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: {message}")


def test_check_lists_every_problem(project: Path) -> None:
    (project / "audit.toml").write_text(
        '[run]\nepochs = 0\nworkers = 100\n\n[spec]\nrepo = "nowhere"\n'
    )
    result = invoke("config", "check", "--json")
    assert result.exit_code == 2
    problems = json.loads(result.stdout)["problems"]
    assert [(p["severity"], p["key"]) for p in problems] == [
        ("error", "run.epochs"),
        ("error", "run.workers"),
    ]
    # Valid values, but the spec repository is not there and no model is configured.
    (project / "audit.toml").write_text('[spec]\nrepo = "nowhere"\n')
    result = invoke("config", "check")
    assert result.exit_code == 2
    assert "error: spec: " in result.stderr and "nowhere" in result.stderr
    assert "warning: models: no model configured" in result.stdout


def test_check_passes_a_working_config_with_warnings(project: Path) -> None:
    replay_specs_history(project / "specs")
    (project / "audit.toml").write_text(
        '[spec]\nrepo = "specs"\npath = "spec/model-spec.md"\n\n'
        '[[models]]\nname = "m1"\nbase_url = "http://127.0.0.1:8000/v1"\n'
        "[models.price]\ninput = 1.0\noutput = 2.0\n"
    )
    result = invoke("config", "check")
    assert result.exit_code == 0, result.output
    assert "warning: models.m1.price: no batch prices" in result.stdout
    assert result.stdout.endswith(f"config {project / 'audit.toml'}: ok\n")


def test_every_key_has_a_meaning() -> None:
    rows = reference_rows()
    assert len(rows) == len({k for k, _, _ in rows})
    missing = [key for key, _, meaning in rows if not meaning.strip()]
    assert not missing, f"keys without a description in audit/config.py: {missing}"
    assert {k.split(".")[0] for k, _, _ in rows} == set(AuditConfig.model_fields)


def test_the_readme_documents_every_key_with_its_default() -> None:
    text = README.read_text(encoding="utf-8")
    start, end = "<!-- config-reference:start -->\n", "<!-- config-reference:end -->"
    assert start in text and end in text, "README.md lost its config reference markers"
    documented = text.split(start, 1)[1].split(end, 1)[0]
    # The table is generated: `audit config reference` prints it; paste its output there.
    assert documented == config_reference(), "README config reference is stale"
    for key, default, _ in reference_rows():
        assert f"| `{key}` | {default} |" in documented, f"{key} missing from README.md"


def test_a_config_on_standard_input(project: Path) -> None:
    repo = replay_specs_history(project / "specs")
    toml = f'db = "hist.duckdb"\n[spec]\nrepo = "{repo}"\npath = "spec/model-spec.md"\n'
    # The command reads its config twice (database path, settings): stdin is read once.
    synced = runner.invoke(app, ["specs", "sync", "--config", "-", "--json"], input=toml)
    assert synced.exit_code == 0, synced.output
    assert (project / "hist.duckdb").is_file()  # relative to the working folder
    shown = runner.invoke(app, ["config", "show", "--config", "-", "--json"], input=toml)
    entries = {e["key"]: e for e in json.loads(shown.stdout)["entries"]}
    assert entries["db"] == {"key": "db", "value": str(project / "hist.duckdb"), "origin": "file",
                             "from": "-"}  # fmt: skip
    bad = runner.invoke(app, ["config", "check", "--config", "-"], input="[run]\nepochs = 0\n")
    assert bad.exit_code == 2 and "error: run.epochs:" in bad.stderr
