"""Ingest a spec file's git history into DuckDB, and read it back.

:func:`sync_spec_history` stores every commit that changed the file's content (see
:mod:`audit.spec_history.git_source` for the first-parent order, renames and skipped commits),
with the line-level and clause-level changes against the previous revision. It is idempotent
and incremental: the history already stored must be a prefix of the history found now, and
only the new commits are read and stored, in one transaction, so a failed sync leaves the
database as it was. A source is recognised by that history, so a repository that moved (or was
cloned afresh) keeps its source id.

Limits: a revision larger than :data:`MAX_SPEC_BYTES` is refused from git's object sizes before
any content is read (specs are prose; a multi-megabyte file is almost certainly not one, and
diffing it at every revision would be slow), as is binary (NUL bytes) or non-UTF-8 content.
Contents are streamed from git and written in batches of about 32 MiB, inside the one
transaction, so memory does not grow with the length of the history.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from audit.errors import AuditError
from audit.progress import NullProgress, Progress
from audit.records import SpecRevision
from audit.spec_history.clauses import (
    ClauseChange,
    ClauseSplitter,
    diff_clauses,
    diff_lines,
    split_clauses,
    split_lines,
    split_lines_after,
    unified_line_diff,
)
from audit.spec_history.git_source import FileCommit, GitRepository
from audit.store import Store
from audit.store import rows as stored_rows
from audit.store.rows import SpecSourceRow

if TYPE_CHECKING:
    import pyarrow as pa

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
class RevisionDiff:
    """Differences between two revisions of one source."""

    old: SpecRevision
    new: SpecRevision
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


@dataclass(frozen=True)
class SpecFile:
    """A spec file at a resolved ref of a git repository, checked but not read yet.

    :func:`open_spec_file` makes one without touching any database, so a wrong repository, ref
    or path is refused before a database file is created or migrated.
    """

    source: GitRepository
    path: str
    ref: str
    tip: str

    @property
    def repo(self) -> str:
        """Absolute path of the repository (its top level, or the bare repository)."""
        return str(self.source.root)

    @cached_property
    def commits(self) -> list[FileCommit]:
        """Every commit that changed the file's content, oldest first (read on first use)."""
        commits = self.source.file_commits(self.tip, self.path)
        if not commits:
            raise AuditError(
                f"{self.path} has no content-changing commits on {self.ref} in {self.repo}"
            )
        return commits


def open_spec_file(repo: str | Path, path: str, ref: str = "HEAD") -> SpecFile:
    """Check that ``repo`` is a git repository, ``ref`` names a commit and ``path`` is a file
    there (relative to the repository root); AuditError naming the problem otherwise."""
    source = GitRepository(repo)
    rel_path = _normalise_path(path)
    tip = source.resolve_commit(ref)
    if not source.has_path(tip, rel_path):
        last = source.ever_had_path(tip, rel_path)
        if last is None:
            raise AuditError(
                f"{rel_path} is not in the history of {ref} in {source.root}: check --path "
                "(relative to the repository root)"
            )
        raise AuditError(
            f"{rel_path} does not exist at {ref} (last touched in {last[:_SHORT]}): pass the "
            "file's current path, or a --ref where it exists"
        )
    return SpecFile(source, rel_path, ref, tip)


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
    spec = open_spec_file(repo, path, ref)
    return sync_spec_file(store, spec, source_id, progress, max_bytes=max_bytes)


def sync_spec_file(
    store: Store,
    spec: SpecFile,
    source_id: str | None = None,
    progress: Progress | None = None,
    *,
    max_bytes: int = MAX_SPEC_BYTES,
) -> SyncResult:
    """:func:`sync_spec_history` for a file already opened with :func:`open_spec_file`.

    A source is known by its history, not by where the repository lives: a checkout that
    moved (or a fresh clone, as in CI) continues the stored history and the source's
    repository path is updated.
    """
    progress = progress or NullProgress()
    sid = source_id or default_source_id(spec.source.root, spec.path)
    rows = store.query("SELECT * FROM spec_sources WHERE source_id = ?", [sid])
    stored_source = rows[0] if rows else None

    if (
        stored_source
        and stored_source["tip_sha"] == spec.tip
        and stored_source["path"] == spec.path
    ):
        # Nothing new on the ref (the same tip commit is the same history wherever the
        # repository now is): refresh the tags and the source row only.
        total = _count(store, sid)
        with store.transaction():
            n_tags = _store_tags(store, spec.source, sid, spec.tip)
            _upsert_source(store, sid, spec, created=False)
        return SyncResult(sid, spec.repo, spec.path, spec.ref, spec.tip, 0, total, 0, n_tags)

    stored = store.query("SELECT sha FROM spec_revisions WHERE source_id = ? ORDER BY seq", [sid])
    stored_shas = [row["sha"] for row in stored]
    _check_history(sid, stored_source, stored_shas, spec)
    new_commits = spec.commits[len(stored_shas) :]
    _check_sizes(spec.source, new_commits, max_bytes)
    progress.start(len(new_commits), f"spec revisions of {spec.path}")
    try:
        previous = _last_revision(store, sid) if stored_shas else None
        writer = _RevisionWriter(store, sid, previous, len(stored_shas))
        with store.transaction():
            with spec.source.blob_stream([c.blob_sha for c in new_commits]) as blobs:
                for commit, (_, data) in zip(new_commits, blobs, strict=True):
                    writer.add(commit, data)
                    progress.advance()
            writer.flush()
            n_tags = _store_tags(store, spec.source, sid, spec.tip)
            _upsert_source(store, sid, spec, created=stored_source is None)
    finally:
        progress.finish()
    return SyncResult(
        sid,
        spec.repo,
        spec.path,
        spec.ref,
        spec.tip,
        len(new_commits),
        len(stored_shas) + len(new_commits),
        writer.clause_changes,
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


def _check_history(
    sid: str, stored_source: dict[str, Any] | None, stored_shas: list[str], spec: SpecFile
) -> None:
    """The revisions stored for ``sid`` must start the history found now.

    The repository may have moved and the file may have been renamed since the last sync:
    the stored history decides whether this is still the same spec.
    """
    if stored_source is None:
        return
    found = [c.sha for c in spec.commits[: len(stored_shas)]]
    if found == stored_shas:
        return
    if stored_source["repo"] != spec.repo:
        raise AuditError(
            f"source id {sid!r} already tracks {stored_source['path']} in "
            f"{stored_source['repo']}, and {spec.path} in {spec.repo} has another history: "
            "pass another --source for this spec"
        )
    if stored_source["path"] != spec.path:
        raise AuditError(
            f"source id {sid!r} tracks {stored_source['path']}, and {spec.path} has another "
            f"history (it is not that file renamed): pass another --source for {spec.path}"
        )
    raise AuditError(
        f"the history of {spec.path} at {spec.ref} no longer contains the revisions stored for "
        f"{sid!r} (rewritten history or another branch): sync it under a new --source"
    )


_MIB = 1024 * 1024


def _check_sizes(source: GitRepository, commits: Sequence[FileCommit], max_bytes: int) -> None:
    """Refuse an oversized revision from git's object sizes, before any content is read."""
    sizes = source.blob_sizes([c.blob_sha for c in commits])
    for commit in commits:
        size = sizes[commit.blob_sha]
        if size > max_bytes:
            raise AuditError(
                f"{commit.path} at {commit.sha[:_SHORT]} is {size / _MIB:.1f} MiB, over the "
                f"{max_bytes / _MIB:g} MiB limit for a spec: track a prose spec file, not "
                "generated or data files"
            )


def _decode(data: bytes, commit: FileCommit) -> str:
    """The blob as text; binary (NUL bytes) and non-UTF-8 content are refused."""
    where = f"{commit.path} at {commit.sha[:_SHORT]}"
    if b"\0" in data:
        raise AuditError(f"{where} is binary, not a text spec: pass --path a Markdown file")
    try:
        return str(data, "utf-8")
    except UnicodeDecodeError as exc:
        raise AuditError(
            f"{where} is not valid UTF-8 (byte {exc.start}): re-encode the spec as UTF-8"
        ) from None


def _last_revision(store: Store, sid: str) -> tuple[str, str]:
    row = store.query(
        "SELECT sha, content FROM spec_revisions WHERE source_id = ? ORDER BY seq DESC LIMIT 1",
        [sid],
    )[0]
    return row["sha"], row["content"]


_BATCH_BYTES = 32 * _MIB
"""Spec text gathered before a batch of rows goes to DuckDB: bounds the sync's own memory."""


class _RevisionWriter:
    """Turns each new revision into its rows (revision, line change, clause changes) and writes
    them to DuckDB in batches.

    Consecutive revisions are compared once: the common start and end of the two texts bound
    the lines split again (:func:`split_lines_after`), the unified diff and the part of the
    text whose clauses are read again (see :class:`ClauseSplitter`).
    """

    def __init__(
        self, store: Store, sid: str, previous: tuple[str, str] | None, start_seq: int
    ) -> None:
        self.store = store
        self.sid = sid
        self.seq = start_seq
        self.prev_sha: str | None
        self.prev_sha, self.prev_text = (None, "") if previous is None else previous
        self.prev_lines = split_lines(self.prev_text)
        self.splitter = ClauseSplitter()
        self.prev_clauses = self.splitter.split(self.prev_lines)
        self.clause_changes = 0
        self._reset()

    def _reset(self) -> None:
        self.revisions: list[tuple[FileCommit, str | None, int, str]] = []
        self.contents: list[bytes] = []
        self.changes: list[tuple[str, str | None, int, int, str]] = []
        self.clauses: list[tuple[str, str | None, int, ClauseChange]] = []
        self.pending_bytes = 0

    def add(self, commit: FileCommit, data: bytes) -> None:
        """Compare one new revision (the next one in order) with the previous one."""
        text = _decode(data, commit)
        lines, ends = split_lines_after(self.prev_text, self.prev_lines, text)
        line_diff = diff_lines(
            self.prev_lines,
            lines,
            f"a/{self.prev_sha[:_SHORT]}" if self.prev_sha else "/dev/null",
            f"b/{commit.sha[:_SHORT]}",
            ends,
        )
        clauses = self.splitter.split(lines, ends)
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        self.revisions.append((commit, self.prev_sha, self.seq, digest))
        self.contents.append(data)
        self.changes.append(
            (
                commit.sha,
                self.prev_sha,
                line_diff.lines_added,
                line_diff.lines_removed,
                line_diff.unified,
            )
        )
        for ordinal, change in enumerate(diff_clauses(self.prev_clauses, clauses)):
            self.clauses.append((commit.sha, self.prev_sha, ordinal, change))
        self.prev_sha, self.prev_text = commit.sha, text
        self.prev_lines, self.prev_clauses = lines, clauses
        self.seq += 1
        self.pending_bytes += len(data)
        if self.pending_bytes >= _BATCH_BYTES:
            self.flush()

    def flush(self) -> None:
        """Write the rows gathered so far (inside the caller's transaction)."""
        if not self.revisions:
            return
        self.store.insert_rows("spec_revisions", self._revision_table())
        self.store.insert_rows("spec_changes", self._change_table())
        if self.clauses:
            self.store.insert_rows("spec_clause_changes", self._clause_table())
        self.clause_changes += len(self.clauses)
        self._reset()

    def _revision_table(self) -> pa.Table:
        from audit.store import arrow_columns as columns

        commits = [commit for commit, _, _, _ in self.revisions]
        return columns.table(
            {
                "source_id": columns.strings([self.sid] * len(commits)),
                "sha": columns.strings([c.sha for c in commits]),
                "seq": columns.integers([seq for _, _, seq, _ in self.revisions], bits=32),
                "parent_shas": columns.string_lists([c.parent_shas for c in commits]),
                "prev_sha": columns.strings([prev for _, prev, _, _ in self.revisions]),
                "author_name": columns.strings([c.author_name for c in commits]),
                "author_email": columns.strings([c.author_email for c in commits]),
                "authored_at": columns.timestamps([c.authored_at for c in commits]),
                "committer_name": columns.strings([c.committer_name for c in commits]),
                "committed_at": columns.timestamps([c.committed_at for c in commits]),
                "message": columns.strings([c.message for c in commits]),
                "path": columns.strings([c.path for c in commits]),
                "content": columns.utf8_blobs(self.contents),
                "content_hash": columns.strings([digest for _, _, _, digest in self.revisions]),
                "size_bytes": columns.integers([len(c) for c in self.contents]),
            }
        )

    def _change_table(self) -> pa.Table:
        from audit.store import arrow_columns as columns

        shas, prevs, added, removed, diffs = zip(*self.changes, strict=True)
        return columns.table(
            {
                "source_id": columns.strings([self.sid] * len(shas)),
                "sha": columns.strings(shas),
                "prev_sha": columns.strings(prevs),
                "lines_added": columns.integers(added, bits=32),
                "lines_removed": columns.integers(removed, bits=32),
                "unified_diff": columns.strings(diffs),
            }
        )

    def _clause_table(self) -> pa.Table:
        from audit.store import arrow_columns as columns

        shas, prevs, ordinals, changes = zip(*self.clauses, strict=True)
        return columns.table(
            {
                "source_id": columns.strings([self.sid] * len(shas)),
                "sha": columns.strings(shas),
                "prev_sha": columns.strings(prevs),
                "ordinal": columns.integers(ordinals, bits=32),
                "change": columns.strings([c.change for c in changes]),
                "clause_kind": columns.strings([c.kind for c in changes]),
                "section": columns.strings([c.section for c in changes]),
                "old_text": columns.strings([c.old_text for c in changes]),
                "new_text": columns.strings([c.new_text for c in changes]),
                "similarity": columns.floats([c.similarity for c in changes]),
            }
        )


def _count(store: Store, sid: str) -> int:
    row = store.query("SELECT count(*) AS n FROM spec_revisions WHERE source_id = ?", [sid])
    return int(row[0]["n"])


def _store_tags(store: Store, source: GitRepository, sid: str, tip: str) -> int:
    """Replace the source's tags with those on the first-parent chain of ``tip``."""
    tags = source.tags()
    stored_rows.clear_spec_tags(store, sid)
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
    found = [(name, commit) for name, commit in sorted(tags.items()) if commit in in_effect]
    if found:
        from audit.store import arrow_columns as columns

        store.insert_rows(
            "spec_tags",
            columns.table(
                {
                    "source_id": columns.strings([sid] * len(found)),
                    "tag": columns.strings([name for name, _ in found]),
                    "commit_sha": columns.strings([commit for _, commit in found]),
                    "sha": columns.strings([in_effect[commit] for _, commit in found]),
                }
            ),
        )
    return len(found)


def _upsert_source(store: Store, sid: str, spec: SpecFile, *, created: bool) -> None:
    source = SpecSourceRow(
        source_id=sid,
        repo=spec.repo,
        path=spec.path,
        ref=spec.ref,
        last_synced_at=datetime.now(UTC),
        tip_sha=spec.tip,
    )
    stored_rows.save_spec_source(store, source, known=not created)


# -- reading back -------------------------------------------------------------------------------

_INTEGER = re.compile(r"-?\d+")
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
            f"{len(ids)} spec sources in this database ({', '.join(ids)}): pass --source"
        )
    return ids[0]


_REVISION_SQL = """
SELECT r.*{columns}, c.lines_added, c.lines_removed,
       coalesce((SELECT list(t.tag ORDER BY t.tag) FROM spec_tags t
                 WHERE t.source_id = r.source_id AND t.sha = r.sha), []) AS tags
FROM spec_revisions r
LEFT JOIN spec_changes c USING (source_id, sha)
WHERE {where}
ORDER BY r.source_id, r.seq
"""


def _query_revisions(
    store: Store, where: str, params: list[Any], *, with_content: bool
) -> list[SpecRevision]:
    columns = "" if with_content else " EXCLUDE (content), NULL AS content"
    rows = store.query(_REVISION_SQL.format(columns=columns, where=where), params)
    return [_to_revision(row, with_content) for row in rows]


def _to_revision(row: dict[str, Any], with_content: bool) -> SpecRevision:
    return SpecRevision(
        source_id=row["source_id"],
        seq=row["seq"],
        sha=row["sha"],
        parent_shas=tuple(row["parent_shas"]),
        prev_sha=row["prev_sha"],
        author_name=row["author_name"] or "",
        author_email=row["author_email"] or "",
        authored_at=_utc(row["authored_at"]),
        committer_name=row["committer_name"] or "",
        committed_at=_utc(row["committed_at"]),
        message=row["message"] or "",
        path=row["path"],
        content_hash=row["content_hash"],
        size_bytes=row["size_bytes"],
        lines_added=row["lines_added"],
        lines_removed=row["lines_removed"],
        tags=tuple(row["tags"] or ()),
        content=row["content"] if with_content else None,
    )


def _utc(moment: datetime | None) -> datetime | None:
    return moment.astimezone(UTC) if moment is not None else None


def list_revisions(
    store: Store, source_id: str | None = None, *, with_content: bool = False
) -> list[SpecRevision]:
    """Every stored revision of a source (the only one when None), oldest first."""
    return stored_revisions(store, pick_source(store, source_id), with_content=with_content)


def stored_revisions(
    store: Store, source_id: str | None, *, with_content: bool = False
) -> list[SpecRevision]:
    """Every stored revision of ``source_id`` (of every source when None), by source and seq.

    Unlike :func:`list_revisions` the source is not checked against ``spec_sources``: analysis
    reads whatever revisions are stored.
    """
    return _query_revisions(
        store, "? IS NULL OR r.source_id = ?", [source_id, source_id], with_content=with_content
    )


def resolve_revision(store: Store, ref: str | int, source_id: str | None = None) -> SpecRevision:
    """The revision ``ref`` names: an index (0 = oldest, -1 = newest), a tag or a sha prefix.

    The order decides ambiguous names: a whole number that is a valid index (``0..n-1`` or
    ``-1..-n``) is that index; otherwise a tag of that name; otherwise a sha prefix of at least
    four hex digits. So ``112565`` in a history of ten revisions is the commit ``112565a...``.
    Unknown or ambiguous names raise AuditError.
    """
    sid = pick_source(store, source_id)
    total = _count(store, sid)
    text = str(ref).strip()
    number = int(text) if _INTEGER.fullmatch(text) else None
    if number is not None and -total <= number < total:
        return _by_index(store, sid, number, total)
    tagged = store.query("SELECT sha FROM spec_tags WHERE source_id = ? AND tag = ?", [sid, text])
    if tagged:
        return _by_sha(store, sid, tagged[0]["sha"])
    if not _HEX.fullmatch(text):
        if number is not None:
            raise AuditError(
                f"revision index {number} is out of range: {sid!r} has {total} revisions "
                f"(0..{total - 1}, or -1..-{total} from the newest)"
            )
        raise AuditError(
            f"no revision {text!r} in {sid!r}: use an index, a tag or a sha prefix "
            "(see `audit specs log`)"
        )
    rows = store.query(
        "SELECT sha FROM spec_revisions WHERE source_id = ? AND starts_with(sha, ?) ORDER BY seq",
        [sid, text.lower()],
    )
    if not rows:
        as_index = (
            f"not an index of its {total} revisions (0..{total - 1}, -1..-{total}), "
            if number is not None
            else ""
        )
        raise AuditError(
            f"no revision of {sid!r} has a sha starting with {text!r} ({as_index}"
            "see `audit specs log` for the revisions)"
        )
    if len(rows) > 1:
        shas = ", ".join(row["sha"][:12] for row in rows[:5])
        raise AuditError(f"sha prefix {text!r} is ambiguous ({shas}): give more characters")
    return _by_sha(store, sid, rows[0]["sha"])


def _by_index(store: Store, sid: str, index: int, total: int) -> SpecRevision:
    seq = index if index >= 0 else total + index
    where = "r.source_id = ? AND r.seq = ?"
    return _query_revisions(store, where, [sid, seq], with_content=True)[0]


def _by_sha(store: Store, sid: str, sha: str) -> SpecRevision:
    found = revision_at(store, sid, sha)
    assert found is not None, "callers pass a sha they read from spec_revisions"
    return found


def revision_at(store: Store, source_id: str, sha: str) -> SpecRevision | None:
    """The stored revision ``sha`` (a full sha) of ``source_id`` with its text, or None."""
    found = _query_revisions(
        store, "r.source_id = ? AND r.sha = ?", [source_id, sha], with_content=True
    )
    return found[0] if found else None


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
