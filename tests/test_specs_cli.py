"""``audit specs sync|log|diff`` through typer's CliRunner (and one real subprocess)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import git
import pytest
from typer.testing import CliRunner

from audit.cli import app
from audit.spec_history.replay import replay_specs_history
from audit.store import open_store

runner = CliRunner()
TIP = "fc7daab"


@pytest.fixture(scope="module")
def shipped(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return replay_specs_history(tmp_path_factory.mktemp("cli") / "specs")


@pytest.fixture
def synced(shipped: Path, tmp_path: Path) -> Path:
    db = tmp_path / "audit.duckdb"
    result = runner.invoke(
        app,
        ["specs", "sync", "--repo", str(shipped), "--path", "spec/model-spec.md", "--db", str(db)],
    )
    assert result.exit_code == 0, result.output
    return db


def test_sync_prints_added_and_total_and_is_idempotent(shipped: Path, tmp_path: Path) -> None:
    db = tmp_path / "a.duckdb"
    args = ["specs", "sync", "--repo", str(shipped), "--path", "spec/model-spec.md"]
    first = runner.invoke(app, [*args, "--db", str(db)])
    again = runner.invoke(app, [*args, "--db", str(db)])
    assert first.exit_code == 0 and again.exit_code == 0
    assert first.output == (
        f"synced specs:spec/model-spec.md: 10 new revisions, 10 in total (tip {TIP}, 3 tags)\n"
    )
    assert again.output.startswith("synced specs:spec/model-spec.md: 0 new revisions, 10 in total")


def test_sync_reads_repo_and_path_from_audit_toml(
    shipped: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "audit.toml").write_text(
        f'db = "from-config.duckdb"\n[spec]\nrepo = "{shipped}"\npath = "spec/model-spec.md"\n'
        'ref = "v2.0"\nsource_id = "demo"\n'
    )
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["specs", "sync"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("synced demo: 10 new revisions, 10 in total")
    assert (tmp_path / "from-config.duckdb").is_file()
    # Flags override the config: an older ref, the file's old name, another source id.
    older = runner.invoke(
        app, ["specs", "sync", "--ref", "v1.1", "--path", "model_spec.md", "--source-id", "old"]
    )
    assert older.output.startswith("synced old: 3 new revisions, 3 in total")


def test_log_table_and_json(synced: Path) -> None:
    table = runner.invoke(app, ["specs", "log", "--db", str(synced)])
    assert table.exit_code == 0
    lines = table.output.splitlines()
    assert lines[0].split() == ["#", "sha", "date", "author", "+/-", "path", "message"]
    assert len(lines) == 11
    assert lines[1].startswith("  0  c988704  2025-01-13  Mara Lindqvist ")
    assert (
        "+63/-0  model_spec.md         Add model spec for honest action under delegation (v1.0)"
        in (lines[1])
    )
    assert lines[4].split()[:5] == ["3", "b3fde83", "2025-02-24", "Tobias", "Okafor"]
    assert "+61/-49" in lines[4]
    assert lines[10].endswith("Add rule: ask before actions that may need approval (v2.0)")

    as_json = runner.invoke(app, ["specs", "log", "--json", "--db", str(synced)])
    rows = json.loads(as_json.output)
    assert [r["seq"] for r in rows] == list(range(10))
    assert rows[-1]["sha"].startswith(TIP)
    assert rows[5]["path"] == "spec/model-spec.md"
    assert rows[7]["message"] == "Merge branch 'examples'"
    assert "content" not in rows[0]


def test_diff_clause_view_json_and_unified(synced: Path) -> None:
    out = runner.invoke(app, ["specs", "diff", "v1.1", "5", "--db", str(synced)])
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    assert lines[0] == "e91eba8 (#2) -> 013c2a9 (#5): 15 added, 0 removed, 1 reworded, 0 moved"
    assert lines[1] == (
        "~ reworded (79.7) sentence "
        "[Model Spec: Honest Action Under Delegation > Purpose and scope]"
    )
    assert (
        lines[2] == "    was: It does not cover content policy, which lives in a separate document."
    )
    assert lines[4] == "+ added heading [Model Spec: Honest Action Under Delegation]"
    assert lines[5] == "    When you suspect you are being tested {#being-observed}"

    as_json = json.loads(
        runner.invoke(app, ["specs", "diff", "3", "4", "--json", "--db", str(synced)]).output
    )
    assert as_json["counts"] == {"added": 15, "removed": 0, "reworded": 0, "moved": 0}
    assert as_json["old"]["seq"] == 3 and as_json["new"]["seq"] == 4
    assert as_json["changes"][0]["clause_kind"] == "heading"

    unified = runner.invoke(app, ["specs", "diff", "1", "2", "--unified", "--db", str(synced)])
    assert unified.output.startswith("--- a/model_spec.md@0acf106\n+++ b/model_spec.md@e91eba8\n")
    assert "+## Specific guidance {#specific-guidance}\n" in unified.output

    reformat = runner.invoke(app, ["specs", "diff", "2", "3", "--db", str(synced)])
    assert reformat.output == (
        "e91eba8 (#2) -> b3fde83 (#3): 0 added, 0 removed, 0 reworded, 0 moved\n"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["specs", "diff", "1", "zz"], "error: no revision 'zz' in 'specs:spec/model-spec.md'"),
        (["specs", "diff", "0", "42"], "error: revision index 42 is out of range"),
        (["specs", "log", "--source-id", "x"], "error: unknown spec source 'x'"),
    ],
)
def test_lookup_errors_are_one_line(synced: Path, args: list[str], message: str) -> None:
    result = runner.invoke(app, [*args, "--db", str(synced)])
    assert result.exit_code == 2
    assert result.output.startswith(message)
    assert result.output.count("\n") == 1


def test_log_without_a_database_is_a_clear_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["specs", "log", "--db", str(tmp_path / "none.duckdb")])
    assert result.exit_code == 2
    assert result.output.startswith("error: no database at")


def test_failed_sync_exits_2_and_leaves_the_database(synced: Path, tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    with open_store(synced) as store:
        before = store.con.execute("SELECT sha FROM spec_revisions ORDER BY seq").fetchall()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "audit",
            "specs",
            "sync",
            "--repo",
            str(plain),
            "--path",
            "x.md",
            "--db",
            str(synced),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr == (
        f"error: {plain} is not a git repository: pass --repo the folder of a git repository "
        "(its top level, or a bare .git folder)\n"
    )
    with open_store(synced) as store:
        after = store.con.execute("SELECT sha FROM spec_revisions ORDER BY seq").fetchall()
    assert after == before


def test_two_sources_need_a_source_id(synced: Path, shipped: Path) -> None:
    result = runner.invoke(
        app,
        ["specs", "sync", "--repo", str(shipped), "--path", "README.md", "--db", str(synced)],
    )
    assert result.output.startswith("synced specs:README.md: 2 new revisions, 2 in total")
    ambiguous = runner.invoke(app, ["specs", "log", "--db", str(synced)])
    assert ambiguous.exit_code == 2
    assert ambiguous.output == (
        "error: 2 spec sources in this database (specs:README.md, specs:spec/model-spec.md): "
        "pass --source\n"
    )
    chosen = runner.invoke(
        app, ["specs", "log", "--source-id", "specs:README.md", "--db", str(synced)]
    )
    assert chosen.exit_code == 0
    assert len(chosen.output.splitlines()) == 3
    assert git.Repo(shipped).head.commit.hexsha.startswith(TIP)


def test_diff_takes_negative_indexes_as_revisions(synced: Path) -> None:
    # The README's own example: -1 is the newest revision, not an option.
    readme = runner.invoke(app, ["specs", "diff", "v1.1", "-1", "--db", str(synced)])
    assert readme.exit_code == 0, readme.output
    assert readme.output.startswith("e91eba8 (#2) -> fc7daab (#9): ")
    both = runner.invoke(app, ["specs", "diff", "-2", "-1", "--json", "--db", str(synced)])
    assert both.exit_code == 0, both.output
    assert (json.loads(both.output)["old"]["seq"], json.loads(both.output)["new"]["seq"]) == (8, 9)
    unknown = runner.invoke(app, ["specs", "diff", "0", "--bogus", "--db", str(synced)])
    assert (unknown.exit_code, unknown.output) == (
        2,
        "error: unknown option --bogus: see `audit specs diff --help`\n",
    )
    assert "112565 names the commit 112565a" in " ".join(
        runner.invoke(app, ["specs", "diff", "--help"]).output.split()
    )


def test_diff_reads_a_number_past_the_last_index_as_a_sha_prefix(synced: Path) -> None:
    result = runner.invoke(app, ["specs", "diff", "112565", "0", "--db", str(synced)])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("112565a (#6) -> c988704 (#0): ")


def _sync(shipped: Path, db: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    args = ["specs", "sync", "--repo", str(shipped), "--path", "spec/model-spec.md", *extra]
    return subprocess.run(
        [sys.executable, "-m", "audit", *args, "--db", str(db)],
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.parametrize(
    ("extra", "error"),
    [
        (["--ref", "no-such-branch"], "error: unknown ref 'no-such-branch' in"),
        (["--path", "ghost.md"], "error: ghost.md is not in the history of HEAD in"),
    ],
)
def test_failed_sync_leaves_no_new_database_and_an_old_one_untouched(
    shipped: Path, synced: Path, tmp_path: Path, extra: list[str], error: str
) -> None:
    missing = tmp_path / "new.duckdb"
    result = _sync(shipped, missing, *extra)
    assert result.returncode == 2
    assert result.stderr.startswith(error) and result.stderr.count("\n") == 1
    assert list(tmp_path.glob("new.duckdb*")) == []

    before = synced.read_bytes()
    again = _sync(shipped, synced, *extra)
    assert again.returncode == 2 and again.stderr.startswith(error)
    assert synced.read_bytes() == before  # not even opened


def test_failed_first_sync_on_bad_content_removes_the_new_database(tmp_path: Path) -> None:
    repo = git.Repo.init(tmp_path / "specs", initial_branch="main")
    (tmp_path / "specs" / "spec.md").write_bytes("# Spécification\n".encode("latin-1"))
    repo.index.add(["spec.md"])
    repo.index.commit("latin-1 spec")
    repo.close()
    db = tmp_path / "new.duckdb"
    result = runner.invoke(
        app,
        ["specs", "sync", "--repo", str(tmp_path / "specs"), "--path", "spec.md", "--db", str(db)],
    )
    assert result.exit_code == 2
    assert "is not valid UTF-8 (byte 4)" in result.output
    assert list(tmp_path.glob("new.duckdb*")) == []


def test_a_symlinked_spec_is_refused_not_stored_as_its_target_path(tmp_path: Path) -> None:
    """git stores a symbolic link as the path it points to; that path is not the spec."""
    root = tmp_path / "specs"
    repo = git.Repo.init(root, initial_branch="main")
    (root / "real.md").write_text("# Spec\n\nBe honest.\n", encoding="utf-8")
    repo.index.add(["real.md"])
    repo.index.commit("the spec")
    (root / "spec.md").symlink_to("real.md")
    repo.git.add("spec.md")
    repo.git.commit("-m", "link the spec")
    repo.close()
    db = tmp_path / "new.duckdb"
    args = ["specs", "sync", "--repo", str(root), "--path", "spec.md", "--db", str(db)]
    result = runner.invoke(app, args)
    sha = git.Repo(root).head.commit.hexsha[:7]
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr == (
        f"error: spec.md is a symbolic link at commit {sha} (git mode 120000), not a text file: "
        "track the file it points to with --path (spec.path in audit.toml)\n"
    )
    assert list(tmp_path.glob("new.duckdb*")) == []
    result = runner.invoke(app, [*args[:5], "real.md", "--db", str(db)])
    assert result.exit_code == 0, result.output
