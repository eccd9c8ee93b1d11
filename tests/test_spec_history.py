"""Spec history sync against real git repositories built in each test (gitpython)."""

from __future__ import annotations

import hashlib
import subprocess
import tempfile
import tracemalloc
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import git
import pytest
from hypothesis import given, settings
from test_spec_history_clauses import _revisions

from audit.errors import AuditError
from audit.spec_history import (
    diff_revisions,
    list_revisions,
    resolve_revision,
    sync_spec_history,
)
from audit.spec_history.clauses import diff_clauses, split_clauses
from audit.store import Store, open_store

SPEC_V1 = "# Spec {#spec}\n\n## Rules {#rules}\n\n- Report test failures.\n- Keep logs on.\n"
SPEC_V2 = SPEC_V1 + "\n## Examples {#examples}\n\nA failing build is reported. Always.\n"
SPEC_V3 = SPEC_V2.replace("Keep logs on.", "Keep audit logs on.")
_TABLES = ("spec_sources", "spec_revisions", "spec_changes", "spec_clause_changes", "spec_tags")


class GitBuilder:
    """A real git repository with fixed identities and one-hour-apart dates."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.repo = git.Repo.init(path, initial_branch="main")
        self.clock = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)

    def env(self) -> dict[str, str]:
        self.clock += timedelta(hours=1)
        stamp = self.clock.isoformat()
        return {
            "GIT_AUTHOR_NAME": "Ada Author",
            "GIT_AUTHOR_EMAIL": "ada@example.org",
            "GIT_AUTHOR_DATE": stamp,
            "GIT_COMMITTER_NAME": "Cy Committer",
            "GIT_COMMITTER_EMAIL": "cy@example.org",
            "GIT_COMMITTER_DATE": stamp,
        }

    def write(self, files: dict[str, str | bytes | None]) -> None:
        for name, content in files.items():
            target = self.path / name
            if content is None:
                self.repo.git.rm("-q", name)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                target.write_bytes(content)
            else:
                target.write_text(content, encoding="utf-8")
            self.repo.git.add(name)

    def commit(self, message: str, files: dict[str, str | bytes | None] | None = None) -> str:
        self.write(files or {})
        self.repo.git.commit("-q", "--allow-empty", "-m", message, env=self.env())
        return self.repo.head.commit.hexsha

    def mv(self, old: str, new: str) -> None:
        (self.path / new).parent.mkdir(parents=True, exist_ok=True)
        self.repo.git.mv(old, new)

    def git(self, *args: str) -> str:
        return self.repo.git.execute(["git", *args], env={**self.env()})


@pytest.fixture
def builder(tmp_path: Path) -> Iterator[GitBuilder]:
    repo = GitBuilder(tmp_path / "specs")
    try:
        yield repo
    finally:
        repo.repo.close()


def snapshot(store: Store) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the spec-history tables, to prove a failed sync changed nothing."""
    return {t: store.con.execute(f"SELECT * FROM {t} ORDER BY ALL").fetchall() for t in _TABLES}


def revision_rows(store: Store, source_id: str) -> list[tuple[Any, ...]]:
    return store.con.execute(
        "SELECT seq, sha, parent_shas, prev_sha, path, message, content FROM spec_revisions "
        "WHERE source_id = ? ORDER BY seq",
        [source_id],
    ).fetchall()


# -- history shapes -----------------------------------------------------------------------------


def test_linear_history_keeps_content_changes_and_follows_renames(
    store: Store, builder: GitBuilder
) -> None:
    c1 = builder.commit("Add spec", {"spec.md": SPEC_V1, "README.md": "hi\n"})
    builder.commit("Touch README only", {"README.md": "hello\n"})
    c3 = builder.commit("Add examples", {"spec.md": SPEC_V2})
    builder.mv("spec.md", "docs/model-spec.md")
    builder.commit("Pure rename")  # same blob: not a revision, but the path is followed
    (builder.path / "docs/model-spec.md").chmod(0o755)
    builder.commit("Mode change only", {"docs/model-spec.md": SPEC_V2})
    builder.mv("docs/model-spec.md", "spec/model-spec.md")
    c6 = builder.commit("Rename with an edit", {"spec/model-spec.md": SPEC_V3})

    result = sync_spec_history(store, builder.path, "spec/model-spec.md", source_id="s")

    assert (result.added, result.total, result.tip_sha, result.path) == (
        3,
        3,
        c6,
        "spec/model-spec.md",
    )
    assert revision_rows(store, "s") == [
        (0, c1, [], None, "spec.md", "Add spec", SPEC_V1),
        (
            1,
            c3,
            [builder.repo.commit(c3).parents[0].hexsha],
            c1,
            "spec.md",
            "Add examples",
            SPEC_V2,
        ),
        (
            2,
            c6,
            [builder.repo.commit(c6).parents[0].hexsha],
            c3,
            "spec/model-spec.md",
            "Rename with an edit",
            SPEC_V3,
        ),
    ]
    meta = store.query(
        "SELECT author_name, author_email, committer_name, authored_at, content_hash, size_bytes "
        "FROM spec_revisions WHERE source_id = 's' AND seq = 0"
    )[0]
    assert meta["author_name"] == "Ada Author"
    assert meta["author_email"] == "ada@example.org"
    assert meta["committer_name"] == "Cy Committer"
    assert meta["authored_at"] == datetime(2025, 3, 1, 10, 0, tzinfo=UTC)
    assert meta["content_hash"] == "sha256:" + hashlib.sha256(SPEC_V1.encode()).hexdigest()
    assert meta["size_bytes"] == len(SPEC_V1.encode())
    source = store.query("SELECT repo, path, ref, tip_sha FROM spec_sources")[0]
    assert source == {
        "repo": str(builder.path.resolve()),
        "path": "spec/model-spec.md",
        "ref": "HEAD",
        "tip_sha": c6,
    }


def test_changes_between_consecutive_revisions_are_stored(
    store: Store, builder: GitBuilder
) -> None:
    c1 = builder.commit("v1", {"spec.md": SPEC_V1})
    c2 = builder.commit("v2", {"spec.md": SPEC_V2})
    c3 = builder.commit("v3", {"spec.md": SPEC_V3})
    sync_spec_history(store, builder.path, "spec.md", source_id="s")

    lines = store.con.execute(
        "SELECT sha, prev_sha, lines_added, lines_removed FROM spec_changes ORDER BY lines_added"
    ).fetchall()
    assert sorted(lines) == sorted([(c1, None, 6, 0), (c2, c1, 4, 0), (c3, c2, 1, 1)])
    unified = store.query("SELECT unified_diff FROM spec_changes WHERE sha = ?", [c3])[0]
    assert unified["unified_diff"].splitlines()[:2] == [f"--- a/{c2[:7]}", f"+++ b/{c3[:7]}"]
    assert "-- Keep logs on.\n+- Keep audit logs on.\n" in unified["unified_diff"]

    clauses = store.con.execute(
        "SELECT sha, ordinal, change, clause_kind, section, old_text, new_text, similarity "
        "FROM spec_clause_changes WHERE sha IN (?, ?) ORDER BY sha = ?, ordinal",
        [c2, c3, c3],
    ).fetchall()
    assert clauses == [
        (c2, 0, "added", "heading", "Spec", None, "Examples {#examples}", None),
        (c2, 1, "added", "sentence", "Spec > Examples", None, "A failing build is reported.", None),
        (c2, 2, "added", "sentence", "Spec > Examples", None, "Always.", None),
        (
            c3,
            0,
            "reworded",
            "bullet",
            "Spec > Rules",
            "Keep logs on.",
            "Keep audit logs on.",
            81.2,
        ),
    ]
    first = store.query("SELECT count(*) AS n FROM spec_clause_changes WHERE sha = ?", [c1])
    assert first == [{"n": 4}]  # two headings and two bullets, added against the empty text


def test_merge_is_one_revision_in_first_parent_order(store: Store, builder: GitBuilder) -> None:
    c1 = builder.commit("v1", {"spec.md": SPEC_V1})
    builder.git("checkout", "-q", "-b", "side")
    side = builder.commit("side edit", {"spec.md": SPEC_V2})
    builder.git("checkout", "-q", "main")
    other = builder.commit("other file on main", {"notes.txt": "n\n"})
    builder.git("merge", "-q", "--no-ff", "--no-edit", "side")
    merge = builder.repo.head.commit.hexsha

    sync_spec_history(store, builder.path, "spec.md", source_id="s")

    assert revision_rows(store, "s") == [
        (0, c1, [], None, "spec.md", "v1", SPEC_V1),
        (1, merge, [other, side], c1, "spec.md", "Merge branch 'side'", SPEC_V2),
    ]


def test_real_git_revert_restores_an_earlier_content_hash(
    store: Store, builder: GitBuilder
) -> None:
    builder.commit("v1", {"spec.md": SPEC_V1})
    c2 = builder.commit("v2", {"spec.md": SPEC_V2})
    builder.git("revert", "--no-edit", c2)
    revert = builder.repo.head.commit.hexsha

    sync_spec_history(store, builder.path, "spec.md", source_id="s")

    rows = store.con.execute(
        "SELECT seq, sha, content_hash, message FROM spec_revisions ORDER BY seq"
    ).fetchall()
    assert [r[0] for r in rows] == [0, 1, 2]
    assert rows[2][1] == revert
    assert rows[2][2] == rows[0][2]  # same text as v1, so samples are shared by content hash
    assert rows[2][3].startswith('Revert "v2"')
    removed = store.con.execute(
        "SELECT change, new_text, old_text FROM spec_clause_changes WHERE sha = ? ORDER BY ordinal",
        [revert],
    ).fetchall()
    assert removed == [
        ("removed", None, "Examples {#examples}"),
        ("removed", None, "A failing build is reported."),
        ("removed", None, "Always."),
    ]


def test_sync_is_idempotent_and_incremental(store: Store, builder: GitBuilder) -> None:
    c1 = builder.commit("v1", {"spec.md": SPEC_V1})
    first = sync_spec_history(store, builder.path, "spec.md", source_id="s")
    before = snapshot(store)
    again = sync_spec_history(store, builder.path, "spec.md", source_id="s")
    assert (first.added, first.total, again.added, again.total) == (1, 1, 0, 1)
    after = snapshot(store)
    # Only the sync timestamp of the source row may move.
    assert {t: v for t, v in after.items() if t != "spec_sources"} == {
        t: v for t, v in before.items() if t != "spec_sources"
    }

    builder.commit("other", {"x.txt": "x\n"})
    c3 = builder.commit("v2", {"spec.md": SPEC_V2})
    third = sync_spec_history(store, builder.path, "spec.md", source_id="s")
    assert (third.added, third.total, third.tip_sha) == (1, 2, c3)
    assert [(r[0], r[1], r[3]) for r in revision_rows(store, "s")] == [(0, c1, None), (1, c3, c1)]
    assert store.query("SELECT count(*) AS n FROM spec_changes") == [{"n": 2}]
    # Only the new revision's clause changes were added.
    new_clauses = store.query("SELECT count(*) AS n FROM spec_clause_changes WHERE sha = ?", [c3])
    assert new_clauses == [{"n": 3}]
    assert third.clause_changes == 3


def test_tags_name_revisions_and_commits_between_them(store: Store, builder: GitBuilder) -> None:
    c1 = builder.commit("v1", {"spec.md": SPEC_V1})
    builder.git("tag", "v1.0")
    builder.commit("other", {"x.txt": "x\n"})
    builder.git("tag", "-a", "-m", "annotated", "after-v1")
    builder.git("checkout", "-q", "-b", "side")
    builder.commit("side only", {"spec.md": SPEC_V3})
    builder.git("tag", "side-tag")
    builder.git("checkout", "-q", "main")
    c2 = builder.commit("v2", {"spec.md": SPEC_V2})

    result = sync_spec_history(store, builder.path, "spec.md", source_id="s")

    assert result.tags == 2
    tags = store.con.execute("SELECT tag, sha FROM spec_tags ORDER BY tag").fetchall()
    assert tags == [("after-v1", c1), ("v1.0", c1)]
    assert resolve_revision(store, "after-v1").sha == c1
    assert resolve_revision(store, "v1.0").seq == 0
    assert [r.tags for r in list_revisions(store)] == [("after-v1", "v1.0"), ()]
    assert resolve_revision(store, -1).sha == c2


def test_resolve_revision_by_index_prefix_and_errors(store: Store, builder: GitBuilder) -> None:
    shas = [builder.commit(f"v{n}", {"spec.md": f"# Spec\n\nVersion {n}.\n"}) for n in range(3)]
    sync_spec_history(store, builder.path, "spec.md", source_id="s")

    assert [resolve_revision(store, i).sha for i in (0, 1, 2, -1, -3)] == [
        shas[0],
        shas[1],
        shas[2],
        shas[2],
        shas[0],
    ]
    assert resolve_revision(store, "-2").sha == shas[1]
    assert resolve_revision(store, shas[1][:8].upper()).sha == shas[1]
    revision = resolve_revision(store, shas[2], source_id="s")
    assert (revision.seq, revision.content, revision.prev_sha) == (
        2,
        "# Spec\n\nVersion 2.\n",
        shas[1],
    )
    with pytest.raises(AuditError, match=r"revision index 3 is out of range: 's' has 3 revisions"):
        resolve_revision(store, 3)
    with pytest.raises(AuditError, match="no revision of 's' has a sha starting with 'abcdef0'"):
        resolve_revision(store, "abcdef0" if not shas[0].startswith("abcdef0") else "fffffff")
    with pytest.raises(AuditError, match="no revision 'main' in 's'"):
        resolve_revision(store, "main")
    with pytest.raises(AuditError, match=r"unknown spec source 'nope' \(known: s\)"):
        resolve_revision(store, 0, source_id="nope")


def test_ambiguous_sha_prefix_is_refused(store: Store, tmp_path: Path) -> None:
    repo = tmp_path / "many"
    _fast_import_history(repo, 700)
    sync_spec_history(store, repo, "spec.md", source_id="s")
    shas = [r["sha"] for r in store.query("SELECT sha FROM spec_revisions")]
    assert len(shas) == 700
    prefixes: dict[str, int] = {}
    for sha in shas:
        prefixes[sha[:4]] = prefixes.get(sha[:4], 0) + 1
    shared = sorted(p for p, n in prefixes.items() if n > 1)
    assert shared, "fixed dates make these SHAs deterministic; 700 revisions share a 4-hex prefix"
    with pytest.raises(AuditError, match=f"sha prefix '{shared[0]}' is ambiguous"):
        resolve_revision(store, shared[0])


def test_numbers_are_indexes_when_in_range_else_sha_prefixes(store: Store, tmp_path: Path) -> None:
    repo = tmp_path / "many"
    _fast_import_history(repo, 700)
    sync_spec_history(store, repo, "spec.md", source_id="s")
    rows = store.query("SELECT seq, sha FROM spec_revisions ORDER BY seq")
    seq_of = {row["sha"]: row["seq"] for row in rows}
    # Fixed dates make the SHAs deterministic, so these exist on every run.
    digits = [sha for sha in seq_of if sha[:6].isdigit() and int(sha[:6]) >= 700]
    in_range = [sha for sha in seq_of if sha[:4].isdigit() and int(sha[:4]) < 700]
    assert digits and in_range
    # A number past the last index is a sha prefix (it was "index out of range" before).
    assert resolve_revision(store, digits[0][:6]).sha == digits[0]
    # A number that is a valid index is that index, by the documented rule...
    number = in_range[0][:4]
    assert resolve_revision(store, number).seq == int(number)
    # ... and a longer prefix names the commit.
    assert resolve_revision(store, in_range[0][:7]).seq == seq_of[in_range[0]]
    assert resolve_revision(store, "-700").seq == 0
    with pytest.raises(AuditError, match=r"revision index -701 is out of range: 's' has 700"):
        resolve_revision(store, "-701")
    absent = next(
        str(n) for n in range(1000, 100_000) if not any(s.startswith(str(n)) for s in seq_of)
    )
    with pytest.raises(
        AuditError,
        match=f"no revision of 's' has a sha starting with '{absent}' \\(not an index of its 700",
    ):
        resolve_revision(store, absent)


def _fast_import_history(repo: Path, count: int) -> None:
    """A repository of ``count`` commits each changing spec.md, via git fast-import."""
    git.Repo.init(repo, initial_branch="main").close()
    chunks: list[bytes] = []
    for n in range(count):
        body = f"# Spec\n\nRevision {n}.\n".encode()
        message = f"rev {n}\n".encode()
        stamp = 1_700_000_000 + n * 60
        chunks.append(
            b"commit refs/heads/main\n"
            + f"committer Gen <gen@example.org> {stamp} +0000\n".encode()
            + f"data {len(message)}\n".encode()
            + message
            + f"M 100644 inline spec.md\ndata {len(body)}\n".encode()
            + body
            + b"\n"
        )
    subprocess.run(
        ["git", "-C", str(repo), "fast-import", "--quiet"], input=b"".join(chunks), check=True
    )
    subprocess.run(["git", "-C", str(repo), "reset", "-q", "--hard", "main"], check=True)


def test_two_sources_in_one_database(store: Store, builder: GitBuilder, tmp_path: Path) -> None:
    builder.commit("both", {"spec.md": SPEC_V1, "policy.md": "# Policy\n\nBe kind.\n"})
    builder.commit("spec only", {"spec.md": SPEC_V2})
    other = GitBuilder(tmp_path / "other-repo")
    other.commit("other spec", {"spec.md": "# Other\n\nText.\n"})

    a = sync_spec_history(store, builder.path, "spec.md")
    b = sync_spec_history(store, builder.path, "policy.md")
    c = sync_spec_history(store, other.path, "spec.md")
    other.repo.close()

    assert (a.source_id, b.source_id, c.source_id) == (
        "specs:spec.md",
        "specs:policy.md",
        "other-repo:spec.md",
    )
    assert (a.total, b.total, c.total) == (2, 1, 1)
    with pytest.raises(AuditError, match=r"3 spec sources in this database .*: pass --source"):
        resolve_revision(store, 0)
    assert [r.seq for r in list_revisions(store, "specs:spec.md")] == [0, 1]
    assert resolve_revision(store, -1, source_id="specs:policy.md").content == (
        "# Policy\n\nBe kind.\n"
    )
    with pytest.raises(AuditError, match=r"already tracks spec\.md in"):
        sync_spec_history(store, other.path, "spec.md", source_id="specs:spec.md")


def test_bare_repository(store: Store, builder: GitBuilder, tmp_path: Path) -> None:
    c1 = builder.commit("v1", {"spec.md": SPEC_V1})
    c2 = builder.commit("v2", {"spec.md": SPEC_V2})
    bare = tmp_path / "specs.git"
    git.Repo.clone_from(builder.path, bare, bare=True).close()

    result = sync_spec_history(store, bare, "spec.md")

    assert (result.source_id, result.repo, result.total) == ("specs:spec.md", str(bare), 2)
    assert [r.sha for r in list_revisions(store)] == [c1, c2]


@pytest.mark.slow
@settings(max_examples=25, deadline=None)
@given(texts=_revisions())
def test_stored_clause_changes_equal_the_batch_splitters_diff(texts: list[str]) -> None:
    # The sync splits and compares incrementally; `audit specs diff` splits both texts whole.
    with tempfile.TemporaryDirectory() as folder:
        builder = GitBuilder(Path(folder) / "specs")
        try:
            for n, text in enumerate(texts):
                builder.commit(f"r{n}", {"spec.md": text})
            with open_store(":memory:") as store:
                sync_spec_history(store, builder.path, "spec.md")
                revisions = list_revisions(store)
                for old, new in zip([None, *revisions], revisions, strict=False):
                    stored = store.query(
                        "SELECT change, clause_kind, section, old_text, new_text, similarity "
                        "FROM spec_clause_changes WHERE sha = ? ORDER BY ordinal",
                        [new.sha],
                    )
                    if old is None:
                        text = resolve_revision(store, new.seq).content or ""
                        batch = diff_clauses([], split_clauses(text))
                    else:
                        batch = diff_revisions(store, old.seq, new.seq).changes
                    assert stored == [change.as_dict() for change in batch]
        finally:
            builder.repo.close()


def test_diff_revisions_any_pair(store: Store, builder: GitBuilder) -> None:
    builder.commit("v1", {"spec.md": SPEC_V1})
    builder.commit("v2", {"spec.md": SPEC_V2})
    builder.commit("v3", {"spec.md": SPEC_V3})
    sync_spec_history(store, builder.path, "spec.md")

    diff = diff_revisions(store, 0, -1)

    assert (diff.old.seq, diff.new.seq, diff.lines_added, diff.lines_removed) == (0, 2, 5, 1)
    assert diff.counts() == {"added": 3, "removed": 0, "reworded": 1, "moved": 0}
    assert [(c.change, c.new_text) for c in diff.changes] == [
        ("reworded", "Keep audit logs on."),
        ("added", "Examples {#examples}"),
        ("added", "A failing build is reported."),
        ("added", "Always."),
    ]


# -- bad input: one-line AuditError, database untouched ------------------------------------------


@pytest.fixture
def seeded(store: Store, tmp_path: Path) -> Store:
    """A store that already holds one synced source, so failures can be shown to leave it be."""
    seed = GitBuilder(tmp_path / "seed")
    seed.commit("v1", {"spec.md": SPEC_V1})
    sync_spec_history(store, seed.path, "spec.md", source_id="seed")
    seed.repo.close()
    return store


def _assert_refused(store: Store, match: str, repo: Path, path: str, **kwargs: Any) -> None:
    before = snapshot(store)
    with pytest.raises(AuditError, match=match) as caught:
        sync_spec_history(store, repo, path, **kwargs)
    assert "\n" not in str(caught.value)
    assert snapshot(store) == before


def test_refuses_a_folder_that_is_not_a_repository(seeded: Store, tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    _assert_refused(seeded, "plain is not a git repository: pass --repo", plain, "spec.md")
    _assert_refused(seeded, "missing does not exist", tmp_path / "missing", "spec.md")


def test_refuses_a_folder_inside_a_repository(seeded: Store, builder: GitBuilder) -> None:
    # git is not allowed to search upwards: a sub-folder is not taken for the repository above.
    builder.commit("v1", {"spec.md": SPEC_V1, "docs/spec.md": SPEC_V1})
    _assert_refused(seeded, "docs is not a git repository", builder.path / "docs", "spec.md")
    plain = builder.path / "plain"
    plain.mkdir()
    _assert_refused(seeded, "plain is not a git repository", plain, "spec.md")


def test_the_git_folder_of_a_working_tree_stands_for_the_tree(
    store: Store, builder: GitBuilder
) -> None:
    c1 = builder.commit("v1", {"spec.md": SPEC_V1})
    result = sync_spec_history(store, builder.path / ".git", "spec.md")
    assert (result.repo, result.source_id) == (str(builder.path.resolve()), "specs:spec.md")
    assert [r.sha for r in list_revisions(store)] == [c1]


def test_refuses_an_unknown_ref(seeded: Store, builder: GitBuilder) -> None:
    builder.commit("v1", {"spec.md": SPEC_V1})
    _assert_refused(seeded, "unknown ref 'nope' in", builder.path, "spec.md", ref="nope")
    _assert_refused(seeded, "unknown ref '--all'", builder.path, "spec.md", ref="--all")


def test_refuses_a_path_never_present_or_deleted(seeded: Store, builder: GitBuilder) -> None:
    builder.commit("v1", {"spec.md": SPEC_V1, "old.md": "# Old\n"})
    dropped = builder.commit("drop old", {"old.md": None})
    _assert_refused(seeded, "ghost.md is not in the history of HEAD", builder.path, "ghost.md")
    _assert_refused(
        seeded,
        f"old.md does not exist at HEAD \\(last touched in {dropped[:7]}\\)",
        builder.path,
        "old.md",
    )
    _assert_refused(seeded, "must be relative to the repository root", builder.path, "../x.md")


def test_refuses_binary_and_non_utf8_content(seeded: Store, builder: GitBuilder) -> None:
    builder.commit("v1", {"spec.md": SPEC_V1, "logo.md": b"\x89PNG\r\n\x1a\n\x00\x00"})
    bad = builder.commit("latin-1", {"spec.md": "# Spécification\n".encode("latin-1")})
    _assert_refused(seeded, r"logo.md at \w{7} is binary, not a text spec", builder.path, "logo.md")
    # The older revision is fine; the newest is not: nothing at all is stored for the source.
    _assert_refused(
        seeded,
        f"spec.md at {bad[:7]} is not valid UTF-8 \\(byte 4\\): re-encode",
        builder.path,
        "spec.md",
    )


def test_batches_written_before_a_bad_revision_are_rolled_back(
    seeded: Store, builder: GitBuilder, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One revision per batch: the good revisions are inserted before the bad one is read; none
    # of them may stay.
    from audit.spec_history import sync

    monkeypatch.setattr(sync, "_BATCH_BYTES", 1)
    for n in range(6):
        builder.commit(f"v{n}", {"spec.md": SPEC_V1 + f"\nRule {n} holds.\n" * (n + 1)})
    bad = builder.commit("latin-1", {"spec.md": "# Spécification\n".encode("latin-1")})
    _assert_refused(seeded, f"spec.md at {bad[:7]} is not valid UTF-8", builder.path, "spec.md")
    # The same history without the bad revision is stored whole, batch by batch.
    result = sync_spec_history(seeded, builder.path, "spec.md", ref="HEAD~1")
    assert (result.added, result.total) == (6, 6)
    stored = seeded.query(
        "SELECT count(DISTINCT sha) AS revisions, count(*) AS clauses FROM spec_clause_changes "
        "WHERE source_id = ?",
        [result.source_id],
    )
    assert stored == [{"revisions": 6, "clauses": result.clause_changes}]


def test_refuses_a_10_mb_spec_with_its_limit(seeded: Store, builder: GitBuilder) -> None:
    line = "- A rule that is repeated to make a very large spec file for the size limit.\n"
    big = "# Huge\n\n" + line * (10_000_000 // len(line))
    builder.commit("huge", {"spec.md": big})
    tracemalloc.start()
    try:
        _assert_refused(
            seeded, r"spec.md at \w{7} is 9.5 MiB, over the 4 MiB limit", builder.path, "spec.md"
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # git's object size is checked first: the 10 MB text is never read into this process.
    assert peak < 2_000_000


def test_refuses_an_empty_history(seeded: Store, tmp_path: Path) -> None:
    git.Repo.init(tmp_path / "empty").close()
    _assert_refused(seeded, "has no commits yet \\(empty history\\)", tmp_path / "empty", "spec.md")


def test_refuses_a_shallow_clone(seeded: Store, builder: GitBuilder, tmp_path: Path) -> None:
    builder.commit("v1", {"spec.md": SPEC_V1})
    builder.commit("v2", {"spec.md": SPEC_V2})
    shallow = tmp_path / "shallow"
    git.Repo.clone_from(f"file://{builder.path}", shallow, depth=1).close()
    _assert_refused(seeded, "is a shallow clone.*git fetch --unshallow", shallow, "spec.md")


def test_refuses_rewritten_history(seeded: Store, builder: GitBuilder) -> None:
    builder.commit("v1", {"spec.md": SPEC_V1})
    builder.commit("v2", {"spec.md": SPEC_V2})
    sync_spec_history(seeded, builder.path, "spec.md", source_id="s")
    builder.git("reset", "-q", "--hard", "HEAD~1")
    builder.commit("v2 rewritten", {"spec.md": SPEC_V3})
    _assert_refused(
        seeded,
        "no longer contains the revisions stored for 's'",
        builder.path,
        "spec.md",
        source_id="s",
    )


class RecordingProgress:
    """Collects progress events (the CLI's rich bar is the real consumer)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, object]] = []

    def start(self, total: int, label: str) -> None:
        self.events.append(("start", (total, label)))

    def advance(self, done: int = 1, errors: int = 0) -> None:
        self.events.append(("advance", done))

    def message(self, text: str) -> None:
        self.events.append(("message", text))

    def finish(self) -> None:
        self.events.append(("finish", None))


def test_progress_reports_each_new_revision_and_finishes_on_error(
    store: Store, builder: GitBuilder
) -> None:
    builder.commit("v1", {"spec.md": SPEC_V1})
    builder.commit("v2", {"spec.md": SPEC_V2})
    progress = RecordingProgress()
    sync_spec_history(store, builder.path, "spec.md", progress=progress)
    assert progress.events == [
        ("start", (2, "spec revisions of spec.md")),
        ("advance", 1),
        ("advance", 1),
        ("finish", None),
    ]
    builder.commit("bad", {"spec.md": b"\xff\xfe"})
    failed = RecordingProgress()
    with pytest.raises(AuditError, match="not valid UTF-8"):
        sync_spec_history(store, builder.path, "spec.md", progress=failed)
    assert failed.events == [("start", (1, "spec revisions of spec.md")), ("finish", None)]


def test_source_follows_a_rename_made_after_the_first_sync(
    store: Store, builder: GitBuilder
) -> None:
    c1 = builder.commit("v1", {"spec.md": SPEC_V1})
    sync_spec_history(store, builder.path, "spec.md", source_id="s")
    builder.mv("spec.md", "spec/model-spec.md")
    c2 = builder.commit("move and edit", {"spec/model-spec.md": SPEC_V2})
    with pytest.raises(AuditError, match=r"spec\.md does not exist at HEAD \(last touched in"):
        sync_spec_history(store, builder.path, "spec.md", source_id="s")

    result = sync_spec_history(store, builder.path, "spec/model-spec.md", source_id="s")

    assert (result.added, result.total) == (1, 2)
    assert [(r[1], r[4]) for r in revision_rows(store, "s")] == [
        (c1, "spec.md"),
        (c2, "spec/model-spec.md"),
    ]
    assert store.query("SELECT path, tip_sha FROM spec_sources") == [
        {"path": "spec/model-spec.md", "tip_sha": c2}
    ]
    # Another file of the same repository under the same id has another history: refused.
    builder.commit("other", {"policy.md": "# Policy\n"})
    before = snapshot(store)
    with pytest.raises(AuditError) as caught:
        sync_spec_history(store, builder.path, "policy.md", source_id="s")
    # Not "rewritten history": the id names another file.
    assert str(caught.value) == (
        "source id 's' tracks spec/model-spec.md, and policy.md has another history (it is not "
        "that file renamed): pass another --source for policy.md"
    )
    assert snapshot(store) == before


def test_a_moved_checkout_continues_its_history(
    store: Store, builder: GitBuilder, tmp_path: Path
) -> None:
    c1 = builder.commit("v1", {"spec.md": SPEC_V1})
    first = sync_spec_history(store, builder.path, "spec.md")
    # CI clones into a fresh temporary folder every time: same history, another path.
    clone = tmp_path / "ci-run-2" / "specs"
    git.Repo.clone_from(builder.path, clone).close()

    again = sync_spec_history(store, clone, "spec.md")

    assert (first.source_id, again.source_id, again.added, again.total) == (
        "specs:spec.md",
        "specs:spec.md",
        0,
        1,
    )
    assert store.query("SELECT repo FROM spec_sources") == [{"repo": str(clone.resolve())}]

    moved = GitBuilder(clone)
    c2 = moved.commit("v2 in the clone", {"spec.md": SPEC_V2})
    moved.repo.close()
    later = sync_spec_history(store, clone, "spec.md")
    assert (later.added, later.total) == (1, 2)
    assert [(r[0], r[1], r[3]) for r in revision_rows(store, "specs:spec.md")] == [
        (0, c1, None),
        (1, c2, c1),
    ]
    # An explicit id works the same from a folder with another name.
    renamed = tmp_path / "checkout-with-another-name"
    git.Repo.clone_from(clone, renamed).close()
    assert sync_spec_history(store, renamed, "spec.md", source_id="specs:spec.md").total == 2
    # A repository with another history under that id is still refused, and nothing changes.
    other = GitBuilder(tmp_path / "unrelated")
    other.commit("other", {"spec.md": SPEC_V1})
    other.repo.close()
    before = snapshot(store)
    with pytest.raises(AuditError) as caught:
        sync_spec_history(store, other.path, "spec.md", source_id="specs:spec.md")
    assert str(caught.value) == (
        f"source id 'specs:spec.md' already tracks spec.md in {renamed.resolve()}, and spec.md "
        f"in {other.path.resolve()} has another history: pass another --source for this spec"
    )
    assert snapshot(store) == before


def test_a_path_reused_after_a_rename_starts_a_new_history(
    store: Store, builder: GitBuilder
) -> None:
    old = "# A\n\nThe first file called a.md.\n\n- Rule one.\n- Rule two.\n"
    c1 = builder.commit("old a", {"a.md": old})
    builder.mv("a.md", "archive.md")
    builder.commit("archive a.md")
    c3 = builder.commit("a new a.md", {"a.md": "# New A\n\nAnother file.\n"})
    c4 = builder.commit("edit the new a.md", {"a.md": "# New A\n\nAnother file, edited.\n"})

    sync_spec_history(store, builder.path, "a.md", source_id="a")
    sync_spec_history(store, builder.path, "archive.md", source_id="archive")

    # The old a.md's history belongs to archive.md only (as `git log --follow archive.md`).
    assert [(r[0], r[1], r[3], r[4]) for r in revision_rows(store, "a")] == [
        (0, c3, None, "a.md"),
        (1, c4, c3, "a.md"),
    ]
    assert [(r[0], r[1], r[4]) for r in revision_rows(store, "archive")] == [(0, c1, "a.md")]


def test_a_deleted_and_restored_file_keeps_its_history(store: Store, builder: GitBuilder) -> None:
    c1 = builder.commit("v1", {"spec.md": SPEC_V1})
    builder.commit("delete the spec by mistake", {"spec.md": None})
    c3 = builder.commit("restore it, edited", {"spec.md": SPEC_V2})

    sync_spec_history(store, builder.path, "spec.md", source_id="s")

    assert [(r[0], r[1], r[3]) for r in revision_rows(store, "s")] == [(0, c1, None), (1, c3, c1)]
