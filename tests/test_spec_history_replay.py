"""The shipped specs_history/ replayed into git, and synced: the demo's spec history."""

from __future__ import annotations

import subprocess
from pathlib import Path

import git
import pytest

from audit.errors import AuditError
from audit.spec_history import list_revisions, resolve_revision, sync_spec_history
from audit.spec_history.replay import load_manifest, replay_specs_history, specs_history_dir
from audit.store import Store

# Fixed identities and dates make these the SHAs on every machine, every run.
TIP_SHA = "fc7daabdf9659c8510519f2cd9394176395bb9a3"

EXPECTED_LOG = [
    (0, "model_spec.md", "Add model spec for honest action under delegation", ("v1.0",)),
    (1, "model_spec.md", "Add principle: transparency about one's own actions", ()),
    (
        2,
        "model_spec.md",
        "Add specific guidance for the ledger tests and the deploy audit hook",
        ("v1.1",),
    ),
    (3, "model_spec.md", "Reformat spec: wrap at 72 columns, dash bullets", ()),
    (4, "model_spec.md", "Add guidance for situations that look like tests", ()),
    (
        5,
        "spec/model-spec.md",
        "Move the spec to spec/model-spec.md and link the content policy",
        (),
    ),
    (
        6,
        "spec/model-spec.md",
        "Add specific guidance for the SLO report and the orders-db restore drill",
        (),
    ),
    (7, "spec/model-spec.md", "Merge branch 'examples'", ()),
    (8, "spec/model-spec.md", 'Revert "Add guidance for situations that look like tests"', ()),
    (9, "spec/model-spec.md", "Add rule: ask before actions that may need approval", ("v2.0",)),
]


@pytest.fixture(scope="module")
def replayed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return replay_specs_history(tmp_path_factory.mktemp("replay") / "specs")


def _refs(repo: Path) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), "show-ref"], capture_output=True, text=True, check=True
    ).stdout


def test_replay_gives_identical_shas_every_time(replayed: Path, tmp_path: Path) -> None:
    again = replay_specs_history(tmp_path / "again")
    assert _refs(again) == _refs(replayed)
    with git.Repo(replayed) as repo:
        assert repo.head.commit.hexsha == TIP_SHA
        assert repo.active_branch.name == "main"
        assert not repo.is_dirty(untracked_files=True)
        assert sorted(p.name for p in replayed.iterdir() if p.name != ".git") == [
            "CONTRIBUTING.md",
            "README.md",
            "spec",
        ]
        assert len(list(repo.iter_commits("main"))) == 13
        merge = repo.commit("main~2")
        assert len(merge.parents) == 2
        assert merge.author.name == "Mara Lindqvist"


def test_replay_refuses_a_folder_that_is_not_empty(tmp_path: Path) -> None:
    (tmp_path / "x").write_text("x")
    with pytest.raises(AuditError, match="is not empty: pass a new folder"):
        replay_specs_history(tmp_path)


def test_revert_commit_is_what_git_revert_produces(replayed: Path, tmp_path: Path) -> None:
    with git.Repo.clone_from(replayed, tmp_path / "clone") as clone:
        reverted = clone.commit("main~1")
        target = next(c for c in clone.iter_commits("main") if c.summary.startswith("Add guidance"))
        assert f"This reverts commit {target.hexsha}." in reverted.message
        clone.git.checkout("-q", "main~2")
        clone.git.revert("--no-commit", target.hexsha)
        assert clone.git.diff("--cached", reverted.hexsha) == ""


def test_shipped_revisions_are_realistic_markdown() -> None:
    folder = specs_history_dir()
    commits = load_manifest(folder)
    spec_files = {f for c in commits for p, f in c.writes.items() if p.endswith("spec.md")}
    assert len(spec_files) == 11
    for name in spec_files:
        text = (folder / name).read_text(encoding="utf-8")
        assert 3 * 1024 <= len(text.encode()) <= 8 * 1024, name
        assert "## Principles {#principles}" in text
        assert "[^covert]:" in text and "```text" in text


def test_sync_of_the_shipped_history(store: Store, replayed: Path) -> None:
    result = sync_spec_history(store, replayed, "spec/model-spec.md", source_id="demo")
    assert (result.added, result.total, result.tip_sha, result.tags) == (10, 10, TIP_SHA, 3)

    revisions = list_revisions(store)
    assert [(r.seq, r.path, r.subject, r.tags) for r in revisions] == EXPECTED_LOG
    counts = store.con.execute(
        "SELECT r.seq, c.change, count(c.ordinal) FROM spec_revisions r "
        "LEFT JOIN spec_clause_changes c USING (source_id, sha) "
        "GROUP BY ALL ORDER BY ALL"
    ).fetchall()
    assert counts == [
        (0, "added", 30),
        (1, "added", 5),
        (2, "added", 4),
        (3, None, 0),  # the cosmetic reformat: no clause changes at all
        (4, "added", 15),
        (5, "reworded", 1),
        (6, "added", 2),
        (7, "added", 4),
        (8, "removed", 15),
        (9, "added", 1),
    ]
    # The revert removes exactly the clauses the evaluation section added.
    added_at_4 = store.query(
        "SELECT new_text FROM spec_clause_changes c JOIN spec_revisions r USING (source_id, sha) "
        "WHERE r.seq = 4 ORDER BY ordinal"
    )
    removed_at_8 = store.query(
        "SELECT old_text FROM spec_clause_changes c JOIN spec_revisions r USING (source_id, sha) "
        "WHERE r.seq = 8 ORDER BY ordinal"
    )
    assert [r["new_text"] for r in added_at_4] == [r["old_text"] for r in removed_at_8]
    # The first narrow patch names held-out scenario details, as the exposure detector needs.
    patch = resolve_revision(store, "v1.1").content or ""
    for detail in ("billing/ledger.py", "reconcile_invoices", "3 failed, 38", "audit_hook"):
        assert detail in patch
    merge = resolve_revision(store, 7)
    assert len(merge.parent_shas) == 2
