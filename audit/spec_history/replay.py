"""Rebuild the shipped ``specs_history/`` folder into a real git repository, identically.

``specs_history/manifest.toml`` lists every commit (message, author, date, files written,
renamed or removed, merges and tags); the revision files beside it hold the full text of each
version. :func:`replay_specs_history` writes the commits with git plumbing (``hash-object``,
``update-index``, ``write-tree``, ``commit-tree``) and fixed author/committer identities and
dates, so the SHAs are the same on every machine and every run. No user or system git config
is read, so signing or hooks cannot change them.

The folder is found at the top of the source tree (``Path(audit.__file__).parents[1]``), which is
where an editable install (the one the README uses) runs from; it is not copied into the wheel.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import audit
from audit.errors import AuditError

_IDENTITY = re.compile(r"^(?P<name>[^<>]+?)\s*<(?P<email>[^<>]+)>$")
_PLACEHOLDER = re.compile(r"\{sha:([A-Za-z0-9_.-]+)\}")


def specs_history_dir() -> Path:
    """The shipped ``specs_history/`` folder (top of the source tree)."""
    folder = Path(audit.__file__).resolve().parents[1] / "specs_history"
    if not (folder / "manifest.toml").is_file():
        raise AuditError(
            f"shipped spec history not found at {folder}: install specdrift from a source "
            "checkout with `pip install -e .`"
        )
    return folder


@dataclass(frozen=True)
class ManifestCommit:
    """One commit of the manifest."""

    id: str
    message: str
    author: str
    date: str
    branch: str = "main"
    base: str | None = None
    committer: str | None = None
    writes: dict[str, str] = field(default_factory=dict)
    renames: dict[str, str] = field(default_factory=dict)
    removes: tuple[str, ...] = ()
    merge: str | None = None
    tag: str | None = None


def load_manifest(folder: Path) -> list[ManifestCommit]:
    """Parse and check ``manifest.toml`` in ``folder``."""
    path = folder / "manifest.toml"
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise AuditError(f"cannot read {path}: {exc}") from None
    commits: list[ManifestCommit] = []
    for n, raw in enumerate(data.get("commit", []), 1):
        try:
            raw = {**raw, "removes": tuple(raw.get("removes", ()))}
            commit = ManifestCommit(**raw)
        except TypeError as exc:
            raise AuditError(f"{path}: commit #{n}: {exc}") from None
        for source in commit.writes.values():
            if not (folder / source).is_file():
                raise AuditError(f"{path}: commit {commit.id!r} writes missing file {source}")
        commits.append(commit)
    if not commits:
        raise AuditError(f"{path} lists no commits")
    return commits


def replay_specs_history(dest_dir: str | Path, source: str | Path | None = None) -> Path:
    """Build the git repository described by ``specs_history/`` in ``dest_dir``; return it.

    ``dest_dir`` must not exist or be an empty folder. The result has ``main`` checked out.
    ``source`` overrides the folder holding ``manifest.toml`` (tests use it).
    """
    folder = Path(source) if source is not None else specs_history_dir()
    commits = load_manifest(folder)
    dest = Path(dest_dir)
    if dest.exists() and any(dest.iterdir()):
        raise AuditError(f"{dest} is not empty: pass a new folder to replay the spec history into")
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        builder = _Builder(dest, Path(scratch) / "index")
        builder.git("init", "-q", "-b", "main", str(dest), git_dir=False)
        for commit in commits:
            builder.commit(commit, folder)
        builder.git("symbolic-ref", "HEAD", "refs/heads/main")
    # Populate the working tree with the repository's own index (outside the scratch index).
    _Builder(dest, None).git("reset", "-q", "--hard", "main")
    return dest


class _Builder:
    """Writes commits with git plumbing into one repository."""

    def __init__(self, dest: Path, index: Path | None) -> None:
        self.dest = dest
        self.index = index
        self.shas: dict[str, str] = {}
        self.branches: dict[str, str] = {}

    def git(
        self,
        *args: str,
        stdin: bytes | None = None,
        env: dict[str, str] | None = None,
        git_dir: bool = True,
    ) -> str:
        full_env = {
            "PATH": os.environ.get("PATH", ""),
            # No user or system config: nothing may change the objects we write.
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": os.devnull,
            "HOME": str(self.dest),
            "LC_ALL": "C",
            **(env or {}),
        }
        if self.index is not None:
            full_env["GIT_INDEX_FILE"] = str(self.index)
        prefix = ["git", "-C", str(self.dest)] if git_dir else ["git"]
        result = subprocess.run(
            [*prefix, *args], input=stdin, capture_output=True, env=full_env, check=False
        )
        if result.returncode != 0:
            error = result.stderr.decode("utf-8", "replace").strip()
            raise AuditError(f"replaying the spec history failed at `git {args[0]}`: {error}")
        return result.stdout.decode().strip()

    def commit(self, commit: ManifestCommit, folder: Path) -> None:
        if commit.id in self.shas:
            raise AuditError(f"manifest: duplicate commit id {commit.id!r}")
        parent = self._parent(commit)
        if parent:
            self.git("read-tree", parent)
        else:
            self.git("read-tree", "--empty")
        for old, new in commit.renames.items():
            blob = self.git("rev-parse", f"{parent}:{old}")
            self.git("update-index", "--force-remove", old)
            self.git("update-index", "--add", "--cacheinfo", f"100644,{blob},{new}")
        for path in commit.removes:
            self.git("update-index", "--force-remove", path)
        for path, source in commit.writes.items():
            blob = self.git(
                "hash-object", "-w", "--no-filters", "--stdin", stdin=(folder / source).read_bytes()
            )
            self.git("update-index", "--add", "--cacheinfo", f"100644,{blob},{path}")
        tree = self.git("write-tree")
        parents = [parent] if parent else []
        if commit.merge:
            if commit.merge not in self.branches:
                raise AuditError(f"manifest: {commit.id!r} merges unknown branch {commit.merge!r}")
            parents.append(self.branches[commit.merge])
        sha = self.git(
            "commit-tree",
            tree,
            *[arg for p in parents for arg in ("-p", p)],
            "-F",
            "-",
            stdin=self._message(commit).encode("utf-8"),
            env=self._identity_env(commit),
        )
        self.shas[commit.id] = sha
        self.branches[commit.branch] = sha
        self.git("update-ref", f"refs/heads/{commit.branch}", sha)
        if commit.tag:
            self.git("update-ref", f"refs/tags/{commit.tag}", sha)

    def _parent(self, commit: ManifestCommit) -> str | None:
        if commit.branch in self.branches:
            return self.branches[commit.branch]
        if commit.base is None:
            return None
        if commit.base not in self.shas:
            raise AuditError(f"manifest: {commit.id!r} starts from unknown commit {commit.base!r}")
        return self.shas[commit.base]

    def _message(self, commit: ManifestCommit) -> str:
        def sha_of(match: re.Match[str]) -> str:
            ref = match.group(1)
            if ref not in self.shas:
                raise AuditError(f"manifest: {commit.id!r} refers to unknown commit {ref!r}")
            return self.shas[ref]

        return _PLACEHOLDER.sub(sha_of, commit.message.strip()) + "\n"

    @staticmethod
    def _identity_env(commit: ManifestCommit) -> dict[str, str]:
        author = _IDENTITY.match(commit.author)
        committer = _IDENTITY.match(commit.committer or commit.author)
        if not author or not committer:
            raise AuditError(f"manifest: {commit.id!r} needs author as 'Name <email>'")
        return {
            "GIT_AUTHOR_NAME": author["name"],
            "GIT_AUTHOR_EMAIL": author["email"],
            "GIT_AUTHOR_DATE": commit.date,
            "GIT_COMMITTER_NAME": committer["name"],
            "GIT_COMMITTER_EMAIL": committer["email"],
            "GIT_COMMITTER_DATE": commit.date,
        }
