"""Ingest a spec file's git history into DuckDB, and read it back.

:func:`sync_spec_history` stores every commit that changed the file's content (see
:mod:`audit.spec_history.git_source` for the first-parent order, renames and skipped commits),
with the line-level and clause-level changes against the previous revision. It is idempotent
and incremental: the history already stored must be a prefix of the history found now, and
only the new commits are read and stored, in one transaction, so a failed sync leaves the
database as it was.

Limits, checked before anything is written: a revision larger than :data:`MAX_SPEC_BYTES` is
refused (specs are prose; a multi-megabyte file is almost certainly not one, and diffing it at
every revision would be slow), as is binary (NUL bytes) or non-UTF-8 content.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pyarrow as pa

from audit.errors import AuditError
from audit.progress import NullProgress, Progress
from audit.spec_history.clauses import (
    ClauseChange,
    ClauseSplitter,
    diff_clauses,
    diff_lines,
    split_clauses,
    split_lines,
    unified_line_diff,
)
from audit.spec_history.git_source import FileCommit, GitRepository
from audit.store import Store

MAX_SPEC_BYTES = 4 * 1024 * 1024
"""Largest spec revision accepted (4 MiB); larger content is refused with a one-line error."""

_SHORT = 7


@dataclass(frozen=True)
class SyncResult:
    """What one sync did."""

    source_id: str
    repo: str
    path: str
    ref: str
    tip_sha: str
    added: int
    total: int
    clause_changes: int
    tags: int


@dataclass(frozen=True)
class Revision:
    """One stored spec revision (``content`` is None when not requested)."""

    source_id: str
    seq: int
    sha: str
    parent_shas: tuple[str, ...]
    prev_sha: str | None
    author_name: str
    author_email: str
    authored_at: datetime
    committer_name: str
    committed_at: datetime
    message: str
    path: str
    content_hash: str
    size_bytes: int
    lines_added: int
    lines_removed: int
    tags: tuple[str, ...]
    content: str | None = None

    @property
    def short_sha(self) -> str:
        return self.sha[:_SHORT]

    @property
    def subject(self) -> str:
        """First line of the commit message."""
        return self.message.split("\n", 1)[0]

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (timestamps as ISO strings)."""
        out = {
            name: getattr(self, name)
            for name in self.__dataclass_fields__
            if name != "content" or self.content is not None
        }
        out["parent_shas"] = list(self.parent_shas)
        out["tags"] = list(self.tags)
        out["authored_at"] = self.authored_at.isoformat()
        out["committed_at"] = self.committed_at.isoformat()
        return out


@dataclass(frozen=True)
class RevisionDiff:
    """Differences between two revisions of one source."""

    old: Revision
    new: Revision
    changes: list[ClauseChange]
    unified: str
    lines_added: int
    lines_removed: int

    def counts(self) -> dict[str, int]:
        """Number of clause changes per kind of change."""
        out = {"added": 0, "removed": 0, "reworded": 0, "moved": 0}
        for change in self.changes:
            out[change.change] += 1
        return out


# -- sync ---------------------------------------------------------------------------------------


def sync_spec_history(
    store: Store,
    repo: str | Path,
    path: str,
    ref: str = "HEAD",
    source_id: str | None = None,
    progress: Progress | None = None,
    *,
    max_bytes: int = MAX_SPEC_BYTES,
) -> SyncResult:
    """Store every revision of ``path`` reachable from ``ref`` in ``repo``; return what changed.

    ``path`` is the file's path at ``ref`` (relative to the repository root); earlier names are
    followed. ``source_id`` defaults to ``<repo folder name>:<path>``.
    """
    progress = progress or NullProgress()
    source = GitRepository(repo)
    rel_path = _normalise_path(path)
    tip = source.resolve_commit(ref)
    sid = source_id or default_source_id(source.root, rel_path)
    stored_source = _check_source(store, sid, str(source.root))

    if stored_source and stored_source["tip_sha"] == tip and stored_source["path"] == rel_path:
        # Nothing new on the ref: refresh tags only (cheap) and stop.
        total = _count(store, sid)
        with store.transaction():
            n_tags = _store_tags(store, source, sid, tip)
            _upsert_source(store, sid, str(source.root), rel_path, ref, tip, created=False)
        return SyncResult(sid, str(source.root), rel_path, ref, tip, 0, total, 0, n_tags)

    commits = _file_commits(source, tip, rel_path, ref)
    stored = store.query("SELECT sha FROM spec_revisions WHERE source_id = ? ORDER BY seq", [sid])
    stored_shas = [row["sha"] for row in stored]
    _check_prefix(sid, stored_shas, commits, ref, rel_path)
    new_commits = commits[len(stored_shas) :]
    progress.start(len(new_commits), f"spec revisions of {rel_path}")
    try:
        blobs, texts = _read_texts(source, new_commits, max_bytes)

        previous = _last_revision(store, sid) if stored_shas else None
        revisions, changes, clause_rows = _build_rows(
            sid, new_commits, blobs, texts, previous, len(stored_shas), progress
        )

        with store.transaction():
            store.insert_rows("spec_revisions", revisions)
            store.insert_rows("spec_changes", changes)
            store.insert_rows("spec_clause_changes", clause_rows)
            n_tags = _store_tags(store, source, sid, tip)
            _upsert_source(
                store, sid, str(source.root), rel_path, ref, tip, created=stored_source is None
            )
    finally:
        progress.finish()
    return SyncResult(
        sid,
        str(source.root),
        rel_path,
        ref,
        tip,
        revisions.num_rows,
        len(stored_shas) + revisions.num_rows,
        len(clause_rows),
        n_tags,
    )


def default_source_id(root: Path, path: str) -> str:
    """``<repository folder name>:<path>``, e.g. ``specs:spec/model-spec.md``."""
    name = root.name.removesuffix(".git") or "repo"
    return f"{name}:{path}"


def _normalise_path(path: str) -> str:
    if not path or not path.strip():
        raise AuditError("empty spec path: pass --path the spec file's path inside the repository")
    posix = PurePosixPath(path.replace("\\", "/"))
    if posix.is_absolute() or ".." in posix.parts:
        raise AuditError(
            f"spec path {path!r} must be relative to the repository root, e.g. spec/model-spec.md"
        )
    return str(posix)


def _check_source(store: Store, sid: str, repo: str) -> dict[str, Any] | None:
    """The stored source row, if any. The path may differ (the file was renamed since the last
    sync); the stored history must then still be a prefix of the new one, which is checked."""
    rows = store.query("SELECT * FROM spec_sources WHERE source_id = ?", [sid])
    if not rows:
        return None
    row = rows[0]
    if row["repo"] != repo:
        raise AuditError(
            f"source id {sid!r} already tracks {row['path']} in {row['repo']}: pass another "
            "--source-id for this spec"
        )
    return row


def _file_commits(source: GitRepository, tip: str, path: str, ref: str) -> list[FileCommit]:
    if not source.has_path(tip, path):
        last = source.ever_had_path(tip, path)
        if last is None:
            raise AuditError(
                f"{path} is not in the history of {ref} in {source.root}: check --path "
                "(relative to the repository root)"
            )
        raise AuditError(
            f"{path} does not exist at {ref} (last touched in {last[:_SHORT]}): pass the "
            "file's current path, or a --ref where it exists"
        )
    commits = source.file_commits(tip, path)
    if not commits:
        raise AuditError(f"{path} has no content-changing commits on {ref} in {source.root}")
    return commits


def _check_prefix(
    sid: str, stored: list[str], commits: list[FileCommit], ref: str, path: str
) -> None:
    found = [c.sha for c in commits[: len(stored)]]
    if found != stored:
        raise AuditError(
            f"the history of {path} at {ref} no longer contains the revisions stored for {sid!r} "
            "(rewritten history or another branch): sync it under a new --source-id"
        )


def _read_texts(
    source: GitRepository, commits: Sequence[FileCommit], max_bytes: int
) -> tuple[dict[str, memoryview], dict[str, str]]:
    """The raw bytes and the decoded text of each new revision's blob, checked."""
    blobs = source.read_blobs([c.blob_sha for c in commits])
    texts: dict[str, str] = {}
    for commit in commits:
        if commit.blob_sha in texts:
            continue
        data = blobs[commit.blob_sha]
        where = f"{commit.path} at {commit.sha[:_SHORT]}"
        if len(data) > max_bytes:
            raise AuditError(
                f"{where} is {len(data) / 1e6:.1f} MB, over the {max_bytes // (1024 * 1024)} MiB "
                "limit for a spec: track a prose spec file, not generated or data files"
            )
        try:
            text = str(data, "utf-8")
        except UnicodeDecodeError as exc:
            if b"\0" in data.tobytes():
                raise AuditError(
                    f"{where} is binary, not a text spec: pass --path a Markdown file"
                ) from None
            raise AuditError(
                f"{where} is not valid UTF-8 (byte {exc.start}): re-encode the spec as UTF-8"
            ) from None
        if "\0" in text:
            raise AuditError(f"{where} is binary, not a text spec: pass --path a Markdown file")
        texts[commit.blob_sha] = text
    return blobs, texts


def _last_revision(store: Store, sid: str) -> tuple[str, str]:
    row = store.query(
        "SELECT sha, content FROM spec_revisions WHERE source_id = ? ORDER BY seq DESC LIMIT 1",
        [sid],
    )[0]
    return row["sha"], row["content"]


def _build_rows(
    sid: str,
    commits: Sequence[FileCommit],
    blobs: dict[str, memoryview],
    texts: dict[str, str],
    previous: tuple[str, str] | None,
    start_seq: int,
    progress: Progress,
) -> tuple[pa.Table, list[dict[str, Any]], list[dict[str, Any]]]:
    """Revision, line-change and clause-change rows for the new commits."""
    prev_sha, prev_text = (None, "") if previous is None else previous
    revisions: list[dict[str, Any]] = []
    changes: list[dict[str, Any]] = []
    clause_rows: list[dict[str, Any]] = []
    contents: list[memoryview] = []
    splitter = ClauseSplitter()
    prev_clauses = splitter.split(prev_text)
    prev_lines = split_lines(prev_text)
    for offset, commit in enumerate(commits):
        text = texts[commit.blob_sha]
        clauses = splitter.split(text)
        data = blobs[commit.blob_sha]
        revisions.append(_revision_row(sid, commit, data, prev_sha, start_seq + offset))
        contents.append(data)
        lines = split_lines(text)
        line_diff = diff_lines(
            prev_lines,
            lines,
            f"a/{prev_sha[:_SHORT]}" if prev_sha else "/dev/null",
            f"b/{commit.sha[:_SHORT]}",
        )
        changes.append(
            {
                "source_id": sid,
                "sha": commit.sha,
                "prev_sha": prev_sha,
                "lines_added": line_diff.lines_added,
                "lines_removed": line_diff.lines_removed,
                "unified_diff": line_diff.unified,
            }
        )
        for ordinal, change in enumerate(diff_clauses(prev_clauses, clauses)):
            row = change.as_dict()
            row.update(source_id=sid, sha=commit.sha, prev_sha=prev_sha, ordinal=ordinal)
            clause_rows.append(row)
        prev_sha, prev_lines, prev_clauses = commit.sha, lines, clauses
        progress.advance()
    return _revisions_table(revisions, contents), changes, clause_rows


def _revision_row(
    sid: str, commit: FileCommit, data: memoryview, prev_sha: str | None, seq: int
) -> dict[str, Any]:
    return {
        "source_id": sid,
        "sha": commit.sha,
        "seq": seq,
        "parent_shas": list(commit.parent_shas),
        "prev_sha": prev_sha,
        "author_name": commit.author_name,
        "author_email": commit.author_email,
        "authored_at": commit.authored_at,
        "committer_name": commit.committer_name,
        "committed_at": commit.committed_at,
        "message": commit.message,
        "path": commit.path,
        "content_hash": "sha256:" + hashlib.sha256(data).hexdigest(),
        "size_bytes": len(data),
    }


def _count(store: Store, sid: str) -> int:
    row = store.query("SELECT count(*) AS n FROM spec_revisions WHERE source_id = ?", [sid])
    return int(row[0]["n"])


def _store_tags(store: Store, source: GitRepository, sid: str, tip: str) -> int:
    """Replace the source's tags with those on the first-parent chain of ``tip``."""
    tags = source.tags()
    store.con.execute("DELETE FROM spec_tags WHERE source_id = ?", [sid])
    if not tags:
        return 0
    revision_shas = {
        row["sha"]
        for row in store.query("SELECT sha FROM spec_revisions WHERE source_id = ?", [sid])
    }
    in_effect: dict[str, str] = {}
    current: str | None = None
    for commit in reversed(source.first_parent_chain(tip)):
        if commit in revision_shas:
            current = commit
        if current is not None:
            in_effect[commit] = current
    rows = [
        {"source_id": sid, "tag": name, "commit_sha": commit, "sha": in_effect[commit]}
        for name, commit in sorted(tags.items())
        if commit in in_effect
    ]
    store.insert_rows("spec_tags", rows)
    return len(rows)


def _upsert_source(
    store: Store, sid: str, repo: str, path: str, ref: str, tip: str, *, created: bool
) -> None:
    now = datetime.now(UTC)
    if created:
        store.insert_rows(
            "spec_sources",
            [
                {
                    "source_id": sid,
                    "repo": repo,
                    "path": path,
                    "ref": ref,
                    "last_synced_at": now,
                    "tip_sha": tip,
                }
            ],
        )
    else:
        store.con.execute(
            "UPDATE spec_sources SET path = ?, ref = ?, last_synced_at = ?, tip_sha = ? "
            "WHERE source_id = ?",
            [path, ref, now, tip, sid],
        )


# -- reading back -------------------------------------------------------------------------------

_INDEX = re.compile(r"-?\d{1,6}")
_HEX = re.compile(r"[0-9a-fA-F]{4,40}")


def pick_source(store: Store, source_id: str | None = None) -> str:
    """The source id to use: the given one (checked), or the only one in the database."""
    rows = store.query("SELECT source_id FROM spec_sources ORDER BY source_id")
    ids = [row["source_id"] for row in rows]
    if source_id is not None:
        if source_id not in ids:
            known = ", ".join(ids) or "none"
            raise AuditError(f"unknown spec source {source_id!r} (known: {known})")
        return source_id
    if not ids:
        raise AuditError("no spec history in this database: run `audit specs sync` first")
    if len(ids) > 1:
        raise AuditError(
            f"{len(ids)} spec sources in this database ({', '.join(ids)}): pass --source-id"
        )
    return ids[0]


_REVISION_SQL = """
SELECT r.*, c.lines_added, c.lines_removed,
       coalesce((SELECT list(t.tag ORDER BY t.tag) FROM spec_tags t
                 WHERE t.source_id = r.source_id AND t.sha = r.sha), []) AS tags
FROM spec_revisions r
LEFT JOIN spec_changes c USING (source_id, sha)
WHERE r.source_id = ?
"""


def _to_revision(row: dict[str, Any], with_content: bool) -> Revision:
    return Revision(
        source_id=row["source_id"],
        seq=row["seq"],
        sha=row["sha"],
        parent_shas=tuple(row["parent_shas"]),
        prev_sha=row["prev_sha"],
        author_name=row["author_name"],
        author_email=row["author_email"],
        authored_at=row["authored_at"].astimezone(UTC),
        committer_name=row["committer_name"],
        committed_at=row["committed_at"].astimezone(UTC),
        message=row["message"],
        path=row["path"],
        content_hash=row["content_hash"],
        size_bytes=row["size_bytes"],
        lines_added=row["lines_added"] or 0,
        lines_removed=row["lines_removed"] or 0,
        tags=tuple(row["tags"] or ()),
        content=row["content"] if with_content else None,
    )


def list_revisions(
    store: Store, source_id: str | None = None, *, with_content: bool = False
) -> list[Revision]:
    """Every stored revision of a source, oldest first."""
    sid = pick_source(store, source_id)
    columns = "" if with_content else " EXCLUDE (content), NULL AS content"
    sql = _REVISION_SQL.replace("SELECT r.*", f"SELECT r.*{columns}") + " ORDER BY r.seq"
    return [_to_revision(row, with_content) for row in store.query(sql, [sid])]


def resolve_revision(store: Store, ref: str | int, source_id: str | None = None) -> Revision:
    """The revision ``ref`` names: an index (0 = oldest, -1 = newest), a tag or a sha prefix.

    A string of up to six digits (optionally negative) is an index; tags win over sha prefixes.
    Unknown or ambiguous names raise AuditError.
    """
    sid = pick_source(store, source_id)
    text = str(ref).strip()
    if isinstance(ref, int) or _INDEX.fullmatch(text):
        return _by_index(store, sid, int(text))
    tagged = store.query("SELECT sha FROM spec_tags WHERE source_id = ? AND tag = ?", [sid, text])
    if tagged:
        return _by_sha(store, sid, tagged[0]["sha"])
    if not _HEX.fullmatch(text):
        raise AuditError(
            f"no revision {text!r} in {sid!r}: use an index, a tag or a sha prefix "
            "(see `audit specs log`)"
        )
    rows = store.query(
        "SELECT sha FROM spec_revisions WHERE source_id = ? AND starts_with(sha, ?) ORDER BY seq",
        [sid, text.lower()],
    )
    if not rows:
        raise AuditError(
            f"no revision of {sid!r} has a sha starting with {text!r}: "
            "see `audit specs log` for the revisions"
        )
    if len(rows) > 1:
        shas = ", ".join(row["sha"][:12] for row in rows[:5])
        raise AuditError(f"sha prefix {text!r} is ambiguous ({shas}): give more characters")
    return _by_sha(store, sid, rows[0]["sha"])


def _by_index(store: Store, sid: str, index: int) -> Revision:
    total = _count(store, sid)
    seq = index if index >= 0 else total + index
    if not 0 <= seq < total:
        raise AuditError(
            f"revision index {index} is out of range: {sid!r} has {total} revisions "
            f"(0..{total - 1}, or -1..-{total} from the newest)"
        )
    rows = store.query(_REVISION_SQL + " AND r.seq = ?", [sid, seq])
    return _to_revision(rows[0], True)


def _by_sha(store: Store, sid: str, sha: str) -> Revision:
    rows = store.query(_REVISION_SQL + " AND r.sha = ?", [sid, sha])
    return _to_revision(rows[0], True)


def diff_revisions(
    store: Store, a: str | int, b: str | int, source_id: str | None = None
) -> RevisionDiff:
    """Clause-level and line-level changes from revision ``a`` to revision ``b``."""
    old = resolve_revision(store, a, source_id)
    new = resolve_revision(store, b, old.source_id)
    old_text, new_text = old.content or "", new.content or ""
    changes = diff_clauses(split_clauses(old_text), split_clauses(new_text))
    lines = unified_line_diff(
        old_text, new_text, f"a/{old.path}@{old.short_sha}", f"b/{new.path}@{new.short_sha}"
    )
    return RevisionDiff(old, new, changes, lines.unified, lines.lines_added, lines.lines_removed)


_REVISION_SCHEMA = pa.schema(
    [
        ("source_id", pa.string()),
        ("sha", pa.string()),
        ("seq", pa.int32()),
        ("parent_shas", pa.list_(pa.string())),
        ("prev_sha", pa.string()),
        ("author_name", pa.string()),
        ("author_email", pa.string()),
        ("authored_at", pa.timestamp("us", tz="UTC")),
        ("committer_name", pa.string()),
        ("committed_at", pa.timestamp("us", tz="UTC")),
        ("message", pa.string()),
        ("path", pa.string()),
        ("content_hash", pa.string()),
        ("size_bytes", pa.int64()),
    ]
)


def _revisions_table(rows: list[dict[str, Any]], contents: list[memoryview]) -> pa.Table:
    """Arrow batch of revision rows.

    The spec texts (already checked as UTF-8) are joined into one buffer and wrapped as an
    Arrow string column without converting each large Python string: on a long history of a
    large spec this is the difference between one copy and several.
    """
    table = pa.Table.from_pylist(rows, schema=_REVISION_SCHEMA)
    offsets = np.zeros(len(contents) + 1, dtype=np.int64)
    np.cumsum([len(c) for c in contents], out=offsets[1:])
    column = pa.Array.from_buffers(
        pa.large_string(),
        len(contents),
        [None, pa.py_buffer(offsets), pa.py_buffer(b"".join(contents))],
    )
    return table.append_column("content", column)
