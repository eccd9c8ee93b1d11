"""Reading one file's history out of a git repository (bare or not), fast.

The history is read with two git processes instead of one object per commit:
``git log --first-parent --follow --raw`` lists the commits that touched the file (with the blob
id of the file after each commit and its path, so renames are followed), and one
``git cat-file --batch`` streams the blobs that are needed. gitpython opens and validates the
repository; the two bulk commands run through ``repo.git``'s executable in a subprocess.

**Merges: first-parent order.** The spec's history is the sequence of states the synced branch
went through. A merge commit is compared with its first parent, so a merge that brought spec
edits from a side branch is one revision (attributed to the merge commit); the side branch's own
commits are not revisions, since the branch never contained them one at a time.

Commits whose diff leaves the file's blob unchanged (a pure rename, a mode change) are skipped;
a deletion is skipped too, and a later re-creation is compared with the last content before it.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import git

from audit.errors import AuditError

_RECORD = "\x1e"
_FIELD = "\x1f"
_LOG_FORMAT = _RECORD + _FIELD.join(["%H", "%P", "%an", "%ae", "%aI", "%cn", "%cI", "%B"]) + _FIELD
# Config pinned on the command line so that user settings (signatures, colour, diff drivers)
# cannot change what we parse.
_GIT_CONFIG = (
    "-c",
    "log.showSignature=false",
    "-c",
    "color.ui=never",
    "-c",
    "i18n.logOutputEncoding=UTF-8",
    "-c",
    "core.quotepath=false",
)


@dataclass(frozen=True, slots=True)
class FileCommit:
    """A commit that changed the tracked file's content, with the blob it left behind."""

    sha: str
    parent_shas: tuple[str, ...]
    author_name: str
    author_email: str
    authored_at: datetime
    committer_name: str
    committed_at: datetime
    message: str
    path: str
    blob_sha: str


class GitRepository:
    """A git repository opened for reading a spec file's history."""

    def __init__(self, repo_path: str | Path) -> None:
        path = Path(repo_path).expanduser()
        if not path.exists():
            raise AuditError(f"{path} does not exist: pass --repo the folder of a git repository")
        try:
            self.repo = git.Repo(path, search_parent_directories=False)
        except (git.InvalidGitRepositoryError, git.NoSuchPathError):
            raise AuditError(
                f"{path} is not a git repository: pass --repo the folder of a git repository "
                "(its top level, or a bare .git folder)"
            ) from None
        self.git_dir = Path(self.repo.git_dir).resolve()
        self.root = self.git_dir if self.repo.bare else Path(self.repo.working_tree_dir).resolve()
        if (self.git_dir / "shallow").exists():
            # A shallow clone has cut-off history: syncing it would silently start the spec's
            # history at an arbitrary commit and later syncs would disagree about seq numbers.
            raise AuditError(
                f"{self.root} is a shallow clone, so the spec history is incomplete: run "
                "`git fetch --unshallow` in it first"
            )

    # -- plumbing ------------------------------------------------------------------------------

    def _run(self, args: list[str], stdin: bytes | None = None) -> bytes:
        executable = self.repo.git.GIT_PYTHON_GIT_EXECUTABLE or "git"
        env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}
        result = subprocess.run(
            [executable, f"--git-dir={self.git_dir}", *_GIT_CONFIG, *args],
            input=stdin,
            capture_output=True,
            env=env,
            check=False,
        )
        if result.returncode != 0:
            message = result.stderr.decode("utf-8", "replace").strip().splitlines()
            raise _GitFailed(message[0] if message else f"git {args[0]} failed")
        return result.stdout

    # -- queries -------------------------------------------------------------------------------

    def resolve_commit(self, ref: str) -> str:
        """Full sha of the commit ``ref`` names; AuditError if it names none."""
        if ref.startswith("-"):
            raise AuditError(f"unknown ref {ref!r}: pass a branch, tag or commit sha")
        try:
            return (
                self._run(["rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"])
                .decode()
                .strip()
            )
        except _GitFailed:
            pass
        if not self._has_commits():
            raise AuditError(
                f"{self.root} has no commits yet (empty history): commit the spec, then sync"
            )
        raise AuditError(
            f"unknown ref {ref!r} in {self.root}: pass a branch, tag or commit sha that exists"
        )

    def _has_commits(self) -> bool:
        try:
            return bool(self._run(["rev-list", "-n", "1", "--all"]).strip())
        except _GitFailed:
            return False

    def has_path(self, commit: str, path: str) -> bool:
        """Whether ``path`` exists as a file in ``commit``."""
        try:
            kind = self._run(["cat-file", "-t", f"{commit}:{path}"]).decode().strip()
        except _GitFailed:
            return False
        return kind == "blob"

    def ever_had_path(self, commit: str, path: str) -> str | None:
        """Sha of the last commit (reachable from ``commit``) that touched ``path``, if any."""
        out = self._run(["log", "-n", "1", "--format=%H", commit, "--", path]).decode().strip()
        return out or None

    def file_commits(self, tip: str, path: str) -> list[FileCommit]:
        """Commits on the first-parent chain of ``tip`` that changed ``path``'s content.

        Oldest first. ``path`` is the file's path at ``tip``; renames are followed back.
        """
        raw = self._run(
            [
                "log",
                "--first-parent",
                "--follow",
                "-M",
                "--raw",
                "--no-abbrev",
                "-z",
                "--no-ext-diff",
                "--no-textconv",
                f"--format={_LOG_FORMAT}",
                tip,
                "--",
                path,
            ]
        )
        entries = [e for e in _parse_log(raw.decode("utf-8", "replace")) if e is not None]
        entries.reverse()
        kept: list[FileCommit] = []
        previous_blob: str | None = None
        for entry in entries:
            if entry.blob_sha == previous_blob:
                continue  # rename or mode change only: the text is the same
            kept.append(entry)
            previous_blob = entry.blob_sha
        return kept

    def read_blobs(self, blob_shas: list[str]) -> dict[str, memoryview]:
        """Contents of the given blobs, read through one ``git cat-file --batch`` process.

        The values are zero-copy views into git's output: a long history is one large buffer.
        """
        if not blob_shas:
            return {}
        unique = list(dict.fromkeys(blob_shas))
        out = self._run(["cat-file", "--batch"], stdin=("\n".join(unique) + "\n").encode())
        view = memoryview(out)
        blobs: dict[str, memoryview] = {}
        pos = 0
        for sha in unique:
            header_end = out.index(b"\n", pos)
            header = out[pos:header_end].split()
            if len(header) != 3:
                raise AuditError(f"git could not read blob {sha}: {header!r}")
            size = int(header[2])
            start = header_end + 1
            blobs[sha] = view[start : start + size]
            pos = start + size + 1  # content is followed by one newline
        return blobs

    def first_parent_chain(self, tip: str) -> list[str]:
        """Shas of ``tip`` and its first-parent ancestors, newest first."""
        return self._run(["rev-list", "--first-parent", tip]).decode().split()

    def tags(self) -> dict[str, str]:
        """Tag name -> sha of the commit it points at (annotated tags peeled)."""
        fmt = "%(refname:short)%00%(objectname)%00%(*objectname)"
        out = self._run(["for-each-ref", f"--format={fmt}", "refs/tags"]).decode()
        tags: dict[str, str] = {}
        for line in out.splitlines():
            name, obj, peeled = line.split("\0")
            tags[name] = peeled or obj
        return tags


class _GitFailed(Exception):
    """A git command exited non-zero (internal: callers turn it into an AuditError)."""


def _parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value).astimezone(UTC)


def _parse_log(text: str) -> list[FileCommit | None]:
    """Parse ``git log -z --raw`` output in :data:`_LOG_FORMAT`; None for deletions."""
    result: list[FileCommit | None] = []
    for record in text.split(_RECORD)[1:]:
        parts = record.split(_FIELD)
        sha, parents, an, ae, ad, cn, cd = parts[:7]
        message = _FIELD.join(parts[7:-1]).rstrip("\n")
        tokens = [t.lstrip("\n") for t in parts[-1].split("\0")]
        tokens = [t for t in tokens if t]
        entry: FileCommit | None = None
        k = 0
        while k < len(tokens):
            meta = tokens[k].split()
            status = meta[-1][:1]
            if status in "RC":
                new_path = tokens[k + 2]
                k += 3
            else:
                new_path = tokens[k + 1]
                k += 2
            if status == "D":
                continue
            entry = FileCommit(
                sha=sha,
                parent_shas=tuple(parents.split()),
                author_name=an,
                author_email=ae,
                authored_at=_parse_time(ad),
                committer_name=cn,
                committed_at=_parse_time(cd),
                message=message,
                path=new_path,
                blob_sha=meta[3],
            )
        result.append(entry)
    return result
