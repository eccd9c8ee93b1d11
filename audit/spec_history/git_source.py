"""Reading one file's history out of a git repository (bare or not), fast.

The history is read with two git processes instead of one object per commit:
``git log --first-parent --follow --raw`` lists the commits that touched the file (with the blob
id of the file after each commit and its path, so renames are followed), and one
``git cat-file --batch`` streams the blobs that are needed. gitpython opens the repository (and
tells a bare one, a working tree and its ``.git`` folder apart); it is imported only then.

**Merges: first-parent order.** The spec's history is the sequence of states the synced branch
went through. A merge commit is compared with its first parent, so a merge that brought spec
edits from a side branch is one revision (attributed to the merge commit); the side branch's own
commits are not revisions, since the branch never contained them one at a time.

Commits whose diff leaves the file's blob unchanged (a pure rename, a mode change) are skipped;
a deletion is skipped too, and a later re-creation is compared with the last content before it.

**Renames are followed backwards only**, from the file at the tip, as it was named in each older
commit. If a commit renamed the tracked path *away* (``a.md`` became ``archive.md``) and a new
``a.md`` was created later, the history starts at that new file: the older ``a.md`` lives on as
``archive.md`` and is another file's history.

Blob sizes are read (``git cat-file --batch-check``) before any content, so an oversized file is
refused without loading it; contents are then streamed one blob at a time.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

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
    mode: str = "100644"
    """Git file mode after the commit: 100644 or 100755 for a file, 120000 for a symbolic link
    (whose blob is the link's target path), 160000 for a submodule."""


_REGULAR_FILE_MODES = ("100644", "100755")


class GitRepository:
    """A git repository opened for reading a spec file's history."""

    def __init__(self, repo_path: str | Path) -> None:
        path = Path(repo_path).expanduser()
        if not path.exists():
            raise AuditError(f"{path} does not exist: pass --repo the folder of a git repository")
        found = _discover(path)
        if found is None:
            raise AuditError(
                f"{path} is not a git repository: pass --repo the folder of a git repository "
                "(its top level, or a bare .git folder)"
            )
        self.git_dir, self.root = found
        if (self.git_dir / "shallow").exists():
            # A shallow clone has cut-off history: syncing it would silently start the spec's
            # history at an arbitrary commit and later syncs would disagree about seq numbers.
            raise AuditError(
                f"{self.root} is a shallow clone, so the spec history is incomplete: run "
                "`git fetch --unshallow` in it first"
            )

    # -- plumbing ------------------------------------------------------------------------------

    def _run(self, args: list[str], stdin: bytes | None = None) -> bytes:
        result = subprocess.run(
            [_git_executable(), f"--git-dir={self.git_dir}", *_GIT_CONFIG, *args],
            input=stdin,
            capture_output=True,
            env=_git_env(),
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
        kept: list[FileCommit] = []
        previous_blob: str | None = None
        for entry in reversed(self._follow_back(_parse_log(raw.decode("utf-8", "replace")), path)):
            _check_regular_file(entry)
            if entry.blob_sha == previous_blob:
                continue  # rename or mode change only: the text is the same
            kept.append(entry)
            previous_blob = entry.blob_sha
        return kept

    def _follow_back(self, logged: list[_LoggedCommit], path: str) -> list[FileCommit]:
        """The versions of the file named ``path`` at the tip, newest first.

        Walks the log from the tip, switching to a file's old name at the commit that renamed
        it, and stops at a commit that renamed the tracked name away to another file.
        """
        current = path
        found: list[FileCommit] = []
        for commit in logged:
            change = next((c for c in commit.changes if c.new_path == current), None)
            if change is not None and change.status != "D":
                found.append(commit.version(change))
                if change.status in "RC":
                    current = change.old_path
                continue
            # The path was deleted here: a plain deletion (a later re-creation continues the
            # history) or a rename to another file, whose history is not ours.
            deleted = any(c.old_path == current for c in commit.changes)
            if (
                deleted
                and commit.parents
                and self._renamed_away(commit.parents[0], commit.sha, current)
            ):
                break
        return found

    def _renamed_away(self, parent: str, commit: str, path: str) -> bool:
        """Whether ``commit`` renamed ``path`` to another path (compared with ``parent``)."""
        out = self._run(
            ["diff-tree", "-r", "-M", "--name-status", "-z", "--no-ext-diff", parent, commit]
        )
        tokens = out.decode("utf-8", "replace").split("\0")
        k = 0
        while k < len(tokens) - 1:
            status = tokens[k]
            if status[:1] in "RC":
                if status[:1] == "R" and tokens[k + 1] == path:
                    return True
                k += 3
            else:
                k += 2
        return False

    def blob_sizes(self, blob_shas: Sequence[str]) -> dict[str, int]:
        """Size in bytes of each blob (``git cat-file --batch-check``), without reading it."""
        unique = list(dict.fromkeys(blob_shas))
        if not unique:
            return {}
        out = self._run(["cat-file", "--batch-check"], stdin=("\n".join(unique) + "\n").encode())
        sizes: dict[str, int] = {}
        for sha, line in zip(unique, out.decode().splitlines(), strict=True):
            parts = line.split()
            if len(parts) != 3 or parts[1] != "blob":
                raise AuditError(f"git could not read blob {sha} in {self.root}: {line}")
            sizes[sha] = int(parts[2])
        return sizes

    @contextlib.contextmanager
    def blob_stream(self, blob_shas: Sequence[str]) -> Iterator[Iterator[tuple[str, bytes]]]:
        """Stream (sha, content) of the given blobs, in order, from one ``git cat-file --batch``.

        One blob is in memory at a time (plus what the caller keeps). Leaving the block early
        stops git.
        """
        process = subprocess.Popen(
            [_git_executable(), f"--git-dir={self.git_dir}", *_GIT_CONFIG, "cat-file", "--batch"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=_git_env(),
            bufsize=1 << 20,
        )
        assert process.stdin is not None and process.stdout is not None  # PIPE was asked for
        _widen_pipe(process.stdout)
        # A writer thread: git answers while it reads, so writing every name first could fill
        # both pipes and stall the two processes on each other.
        request = ("\n".join(blob_shas) + "\n").encode() if blob_shas else b""
        writer = threading.Thread(target=_feed, args=(process.stdin, request), daemon=True)
        writer.start()
        try:
            yield _read_batch(process.stdout, blob_shas, self.root)
        finally:
            process.kill()
            process.stdout.close()
            process.wait()
            writer.join()

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


def _git_executable() -> str:
    # The variable gitpython honours, so a setup that points it at another git keeps working.
    return os.environ.get("GIT_PYTHON_GIT_EXECUTABLE") or "git"


def _git_env(**extra: str) -> dict[str, str]:
    return {**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C", **extra}


def _discover(path: Path) -> tuple[Path, Path] | None:
    """(git dir, root) of the repository at ``path``, or None if ``path`` is not one.

    gitpython opens it, not searching the folders above, so a plain folder or a sub-folder
    inside some repository is not taken for that repository: ``path`` must be a working tree's
    top level, its ``.git`` folder or a bare repository. The root is the bare repository itself,
    or the top level of the working tree. Reading the history then goes through two plain git
    processes (module docstring), which is where the time is.
    """
    import git  # gitpython: about 50 ms to import, so only when a repository is opened

    folder = path.resolve()
    try:
        repo = git.Repo(folder, search_parent_directories=False)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        return None
    except git.GitError as exc:  # e.g. a repository owned by another user
        raise AuditError(f"git refuses {folder}: {str(exc).splitlines()[0]}") from None
    git_dir = Path(repo.git_dir).resolve()
    if repo.bare:
        return git_dir, git_dir
    if folder == git_dir:
        # The .git folder of a working tree was given: the tree is the folder holding it.
        return git_dir, git_dir.parent
    top = Path(repo.working_tree_dir or folder).resolve()
    return (git_dir, folder) if top == folder else None


class _GitFailed(Exception):
    """A git command exited non-zero (internal: callers turn it into an AuditError)."""


def _check_regular_file(entry: FileCommit) -> None:
    """Refuse a version that is not a file's text: git stores a symbolic link as its target
    path, which would otherwise be synced as the spec's content."""
    if entry.mode in _REGULAR_FILE_MODES:
        return
    what = {"120000": "a symbolic link", "160000": "a submodule"}.get(entry.mode, "not a file")
    raise AuditError(
        f"{entry.path} is {what} at commit {entry.sha[:7]} (git mode {entry.mode}), not a text "
        "file: track the file it points to with --path (spec.path in audit.toml)"
    )


def _parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value).astimezone(UTC)


_PIPE_BYTES = 1 << 20


def _widen_pipe(pipe: IO[bytes]) -> None:
    """Let git run about a megabyte ahead of the reader (Linux; the default pipe holds 64 KiB).

    git then unpacks the next blobs on another core while this process diffs the current one.
    """
    # Elsewhere, or with a lower limit in /proc/sys/fs/pipe-max-size, the default pipe stays.
    with contextlib.suppress(ImportError, AttributeError, OSError):
        import fcntl

        fcntl.fcntl(pipe.fileno(), fcntl.F_SETPIPE_SZ, _PIPE_BYTES)


def _feed(pipe: IO[bytes], data: bytes) -> None:
    try:
        pipe.write(data)
        pipe.close()
    except (BrokenPipeError, ValueError, OSError):
        pass  # the reader stopped early and git was stopped


def _read_batch(
    stdout: IO[bytes], blob_shas: Sequence[str], root: Path
) -> Iterator[tuple[str, bytes]]:
    for sha in blob_shas:
        header = stdout.readline().split()
        if len(header) != 3:
            raise AuditError(f"git could not read blob {sha} in {root}: {header!r}")
        size = int(header[2])
        data = stdout.read(size)
        stdout.read(1)  # content is followed by one newline
        if len(data) != size:
            raise AuditError(f"git stopped while reading blob {sha} in {root}")
        yield sha, data


@dataclass(frozen=True, slots=True)
class _Change:
    """One file of a commit's raw diff."""

    status: str  # first letter: A, M, T, D, R or C
    old_path: str
    new_path: str
    blob_sha: str  # after the commit
    mode: str  # after the commit


@dataclass(frozen=True, slots=True)
class _LoggedCommit:
    """One commit of ``git log --raw`` output with the changes to the followed file."""

    sha: str
    parents: tuple[str, ...]
    author_name: str
    author_email: str
    authored_at: datetime
    committer_name: str
    committed_at: datetime
    message: str
    changes: tuple[_Change, ...]

    def version(self, change: _Change) -> FileCommit:
        return FileCommit(
            sha=self.sha,
            parent_shas=self.parents,
            author_name=self.author_name,
            author_email=self.author_email,
            authored_at=self.authored_at,
            committer_name=self.committer_name,
            committed_at=self.committed_at,
            message=self.message,
            path=change.new_path,
            blob_sha=change.blob_sha,
            mode=change.mode,
        )


def _parse_log(text: str) -> list[_LoggedCommit]:
    """Parse ``git log -z --raw`` output in :data:`_LOG_FORMAT`, newest first."""
    result: list[_LoggedCommit] = []
    for record in text.split(_RECORD)[1:]:
        parts = record.split(_FIELD)
        sha, parents, an, ae, ad, cn, cd = parts[:7]
        message = _FIELD.join(parts[7:-1]).rstrip("\n")
        tokens = [t.lstrip("\n") for t in parts[-1].split("\0")]
        tokens = [t for t in tokens if t]
        changes: list[_Change] = []
        k = 0
        while k < len(tokens):
            meta = tokens[k].split()
            status = meta[-1][:1]
            if status in "RC":
                old_path, new_path = tokens[k + 1], tokens[k + 2]
                k += 3
            else:
                old_path = new_path = tokens[k + 1]
                k += 2
            changes.append(_Change(status, old_path, new_path, meta[3], meta[1]))
        result.append(
            _LoggedCommit(
                sha=sha,
                parents=tuple(parents.split()),
                author_name=an,
                author_email=ae,
                authored_at=_parse_time(ad),
                committer_name=cn,
                committed_at=_parse_time(cd),
                message=message,
                changes=tuple(changes),
            )
        )
    return result
