"""Benchmark: sync a 5,000-commit repository in which 2,000 commits change a 50 KB spec.

Run with ``python tests/bench/bench_spec_sync.py``. Prints one JSON object: spec revisions per
second of ``sync_spec_history`` (git read, clause and line diffs, DuckDB write), a naive baseline
measured in the same process (one gitpython Commit object and one blob read per commit, no
diffing or storage at all), their ratio, the same figures for our git read phase alone (the
like-for-like comparison with the baseline), and the time of a re-sync with nothing new.
The repository is generated with ``git fast-import`` (seconds, not minutes).
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import git

from audit.spec_history import sync_spec_history
from audit.spec_history.git_source import GitRepository
from audit.store import open_store

COMMITS = 5_000
SPEC_COMMITS = 2_000
SPEC_BYTES = 50_000
SEED = 7

_WORDS = [
    "assistant",
    "report",
    "tests",
    "failing",
    "oversight",
    "audit",
    "hook",
    "deploy",
    "honest",
    "covert",
    "action",
    "tool",
    "result",
    "summary",
    "evidence",
    "reviewer",
    "monitor",
    "log",
    "metric",
    "checklist",
    "restore",
    "snapshot",
    "latency",
    "target",
    "principal",
    "approval",
    "rollback",
    "migration",
    "partial",
    "error",
    "quote",
    "disclose",
]


def _sentence(rng: random.Random) -> str:
    words = [rng.choice(_WORDS) for _ in range(rng.randint(8, 18))]
    return " ".join(words).capitalize() + "."


def _initial_spec(rng: random.Random) -> list[str]:
    """Spec as a list of lines (~50 KB): sections with paragraphs and bullets."""
    lines = ["# Generated spec {#top}", ""]
    section = 0
    while sum(len(line) + 1 for line in lines) < SPEC_BYTES:
        section += 1
        lines += [f"## Section {section} {{#s{section}}}", ""]
        lines += [" ".join(_sentence(rng) for _ in range(3)), ""]
        lines += [f"- {_sentence(rng)}" for _ in range(4)] + [""]
    return lines


def _edit(lines: list[str], rng: random.Random) -> None:
    """One realistic edit: reword a line, add a bullet, or drop one."""
    choice = rng.random()
    candidates = [i for i, line in enumerate(lines) if line.startswith(("- ", "A", "T", "R"))]
    index = rng.choice(candidates)
    if choice < 0.6:
        words = lines[index].split()
        words[rng.randrange(1, len(words))] = rng.choice(_WORDS)
        lines[index] = " ".join(words)
    elif choice < 0.85:
        lines.insert(index + 1, f"- {_sentence(rng)}")
    elif lines[index].startswith("- "):
        del lines[index]
    else:
        lines[index] = lines[index] + " " + _sentence(rng)


def generate_repo(path: Path) -> None:
    """Write the repository with one git fast-import stream."""
    rng = random.Random(SEED)
    git.Repo.init(path, initial_branch="main").close()
    spec_at = set(rng.sample(range(1, COMMITS), SPEC_COMMITS - 1)) | {0}
    lines = _initial_spec(rng)
    chunks: list[bytes] = []
    for n in range(COMMITS):
        if n in spec_at:
            before = list(lines)
            while n and lines == before:  # every spec commit must change the text
                _edit(lines, rng)
            name, body = "spec.md", ("\n".join(lines) + "\n").encode()
        else:
            name, body = f"src/module_{n % 50}.py", f"VALUE = {n}\n".encode()
        message = f"commit {n}\n".encode()
        chunks.append(
            b"commit refs/heads/main\n"
            + f"committer Bench <bench@example.org> {1_700_000_000 + n * 60} +0000\n".encode()
            + f"data {len(message)}\n".encode()
            + message
            + f"M 100644 inline {name}\ndata {len(body)}\n".encode()
            + body
            + b"\n"
        )
    subprocess.run(
        ["git", "-C", str(path), "fast-import", "--quiet"], input=b"".join(chunks), check=True
    )
    subprocess.run(["git", "-C", str(path), "reset", "-q", "--hard", "main"], check=True)


def naive_revisions(path: Path, spec: str) -> int:
    """The baseline: walk Commit objects, read the spec blob of each, keep content changes."""
    count = 0
    previous: bytes | None = None
    with git.Repo(path) as repo:
        for commit in repo.iter_commits("main", first_parent=True, reverse=True):
            try:
                data = (commit.tree / spec).data_stream.read()
            except KeyError:
                continue
            if data != previous:
                count += 1
                previous = data
    return count


def read_phase_revisions(path: Path, spec: str) -> int:
    """Our git access alone (log + one cat-file batch + UTF-8 decode), to compare like with like."""
    source = GitRepository(path)
    commits = source.file_commits(source.resolve_commit("HEAD"), spec)
    blobs = source.read_blobs([c.blob_sha for c in commits])
    texts = {sha: str(data, "utf-8") for sha, data in blobs.items()}
    return len(commits) if len(texts) <= len(commits) else -1


def main() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        repo = Path(scratch) / "repo"
        started = time.perf_counter()
        generate_repo(repo)
        generate_s = time.perf_counter() - started

        started = time.perf_counter()
        naive_count = naive_revisions(repo, "spec.md")
        naive_s = time.perf_counter() - started

        started = time.perf_counter()
        read_count = read_phase_revisions(repo, "spec.md")
        read_s = time.perf_counter() - started

        with open_store(Path(scratch) / "bench.duckdb") as store:
            started = time.perf_counter()
            result = sync_spec_history(store, repo, "spec.md")
            sync_s = time.perf_counter() - started
            started = time.perf_counter()
            again = sync_spec_history(store, repo, "spec.md")
            resync_s = time.perf_counter() - started
            clause_rows = store.query("SELECT count(*) AS n FROM spec_clause_changes")[0]["n"]

    if not result.total == naive_count == read_count == SPEC_COMMITS or again.added != 0:
        sys.exit(f"mismatch: sync found {result.total}, naive found {naive_count}")
    ours = result.total / sync_s
    naive = naive_count / naive_s
    print(
        json.dumps(
            {
                "commits": COMMITS,
                "spec_revisions": result.total,
                "spec_kb": SPEC_BYTES // 1000,
                "generate_s": round(generate_s, 2),
                "sync_s": round(sync_s, 3),
                "revisions_per_s": round(ours, 1),
                "naive_s": round(naive_s, 3),
                "naive_revisions_per_s": round(naive, 1),
                "ratio_vs_naive": round(ours / naive, 2),
                "read_phase_s": round(read_s, 3),
                "read_phase_revisions_per_s": round(read_count / read_s, 1),
                "read_phase_ratio_vs_naive": round((read_count / read_s) / naive, 2),
                "resync_nothing_new_s": round(resync_s, 3),
                "clause_change_rows": clause_rows,
            }
        )
    )


if __name__ == "__main__":
    main()
