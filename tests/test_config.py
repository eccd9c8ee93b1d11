"""Config files: where relative paths point, and how the CLI reads them from a subfolder."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from audit.cli import app
from audit.config import load_config
from audit.spec_history.replay import replay_specs_history

runner = CliRunner()


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project folder with a config at its top; the working folder is a subfolder of it."""
    top = tmp_path / "project"
    (top / "docs" / "deep").mkdir(parents=True)
    monkeypatch.chdir(top / "docs" / "deep")
    return top


def test_relative_paths_in_a_config_are_relative_to_its_folder(project: Path) -> None:
    (project / "audit.toml").write_text('db = "data/audit.duckdb"\n[spec]\nrepo = "specs"\n')

    config = load_config()

    assert config.db == str(project / "data" / "audit.duckdb")
    assert config.spec.repo == str(project / "specs")


def test_defaults_and_absolute_paths(project: Path, tmp_path: Path) -> None:
    (project / "audit.toml").write_text(f'[spec]\nrepo = "{tmp_path / "elsewhere"}"\n')
    config = load_config()
    # Left at their defaults, the database and the repository are the config's folder's.
    assert config.db == str(project / "audit.duckdb")
    assert config.spec.repo == str(tmp_path / "elsewhere")

    (project / "audit.toml").write_text('db = ":memory:"\n[spec]\nrepo = "~/specs"\n')
    config = load_config()
    assert config.db == ":memory:"
    assert config.spec.repo == str(Path.home() / "specs")


def test_pyproject_tool_audit_and_an_explicit_config_file(project: Path, tmp_path: Path) -> None:
    (project / "pyproject.toml").write_text('[tool.audit]\ndb = "a.duckdb"\n')
    assert load_config().db == str(project / "a.duckdb")

    other = tmp_path / "other"
    other.mkdir()
    (other / "team.toml").write_text('db = "team.duckdb"\n')
    assert load_config(other / "team.toml").db == str(other / "team.duckdb")


def test_specs_sync_from_a_subfolder_uses_the_configs_paths(project: Path) -> None:
    replay_specs_history(project / "specs")
    (project / "audit.toml").write_text(
        'db = "data/audit.duckdb"\n[spec]\nrepo = "specs"\npath = "spec/model-spec.md"\n'
    )
    (project / "data").mkdir()

    synced = runner.invoke(app, ["specs", "sync"])
    log = runner.invoke(app, ["specs", "log", "--json"])

    assert synced.exit_code == 0, synced.output
    assert synced.output.startswith("synced specs:spec/model-spec.md: 10 new revisions")
    assert (project / "data" / "audit.duckdb").is_file()
    assert log.exit_code == 0 and log.output.startswith("[{")
    assert list(Path.cwd().iterdir()) == []  # nothing was written in the working folder

    # Flags are the user's own typing: relative to the working folder.
    flagged = runner.invoke(app, ["specs", "sync", "--db", "here.duckdb"])
    assert flagged.exit_code == 0, flagged.output
    assert (Path.cwd() / "here.duckdb").is_file()
