"""Benchmark: sync a 5,000-commit repository in which 2,000 commits change a 50 KB spec.

Run with ``python tests/bench/bench_spec_sync.py [--rounds 3]``. Prints one JSON object. Three
ways of getting the spec's revisions out of the same generated repository are timed in the same
process, interleaved, ``--rounds`` times each (medians are printed):

- ``naive``: the baseline the issue names: gitpython, one Commit object and one blob read per
  commit on the first-parent chain, keeping the commits whose spec content changed. It reads
  and hashes the contents and does nothing else (no diffs, no storage).
- ``read``: our git access alone, the like-for-like comparison: ``git log --follow --raw``,
  blob sizes, the streamed ``git cat-file --batch``, UTF-8 checks and the content hash.
- ``sync``: ``sync_spec_history`` into a fresh DuckDB file: the read, line and clause diffs
  of every revision, and writing about 120 MB of spec text plus the changes (commit included).

Wall time is what the targets are about; CPU time (this process's threads and the git processes)
is printed too, because on a shared machine it does not count the waits for a free core.
Imports and caches are warmed by a small sync first; a fresh process running ``python -m audit
specs sync`` (interpreter start and imports included) is timed separately, for a first sync and
for a re-sync with nothing new. The generated repository uses ``git fast-import`` (seconds).

Checks (the benchmark exits non-zero if one fails): all three ways find exactly 2,000
revisions with the same content hashes in the same order; every revision has a line change and
at least one clause change stored; the stored clause changes of sampled revisions equal what
``audit specs diff`` computes from the two texts; a re-sync adds nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import git

from audit.spec_history import diff_revisions, sync_spec_history
from audit.spec_history.git_source import GitRepository
from audit.store import open_store

T = TypeVar("T")
COMMITS = 5_000
SPEC_COMMITS = 2_000
SPEC_BYTES = 50_000
SEED = 7
CHECKED_DIFFS = 40
TARGETS = {
    "sync_revisions_per_s": 1000,
    "sync_vs_naive": 5.0,
    "resync_s": 1.0,
    # Issue 16: through the CLI, as a fresh process (interpreter start and imports included).
    "cli_sync_revisions_per_s": 1000,
    "cli_cold_resync_s": 0.5,
}

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


def naive_revisions(path: Path, spec: str) -> list[str]:
    """The baseline: walk Commit objects, read the spec blob of each, keep content changes.

    Returns the sha256 of each revision's content, oldest first.
    """
    hashes: list[str] = []
    previous: bytes | None = None
    with git.Repo(path) as repo:
        for commit in repo.iter_commits("main", first_parent=True, reverse=True):
            try:
                data = (commit.tree / spec).data_stream.read()
            except KeyError:
                continue
            if data != previous:
                hashes.append("sha256:" + hashlib.sha256(data).hexdigest())
                previous = data
    return hashes


def read_revisions(path: Path, spec: str) -> list[str]:
    """Our git access alone: commits, sizes, streamed contents, UTF-8 check and hash."""
    source = GitRepository(path)
    commits = source.file_commits(source.resolve_commit("HEAD"), spec)
    shas = [c.blob_sha for c in commits]
    sizes = source.blob_sizes(shas)
    hashes: list[str] = []
    with source.blob_stream(shas) as blobs:
        for sha, data in blobs:
            if len(data) != sizes[sha]:
                sys.exit(f"blob {sha}: {len(data)} bytes read, git said {sizes[sha]}")
            str(data, "utf-8")
            hashes.append("sha256:" + hashlib.sha256(data).hexdigest())
    return hashes


def stored_hashes(db: Path) -> list[str]:
    with open_store(db, read_only=True) as store:
        rows = store.query("SELECT content_hash FROM spec_revisions ORDER BY seq")
    return [row["content_hash"] for row in rows]


def sync_into(repo: Path, db: Path) -> int:
    """``sync_spec_history`` as a user runs it: open the database, sync, close (checkpoint)."""
    with open_store(db) as store:
        return sync_spec_history(store, repo, "spec.md").added


def cpu_seconds() -> float:
    """CPU time of this process (all its threads, DuckDB's included) and of its ended children
    (git)."""
    own, children = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def timed(run: Callable[[], T]) -> tuple[float, float, T]:
    """Wall seconds, CPU seconds and the result of ``run()``."""
    started, cpu_started = time.perf_counter(), cpu_seconds()
    result = run()
    return time.perf_counter() - started, cpu_seconds() - cpu_started, result


def cli_sync(repo: Path, db: Path) -> tuple[float, str]:
    """Wall time of ``python -m audit specs sync`` in a fresh process, and what it printed."""
    args = ["specs", "sync", "--repo", str(repo), "--path", "spec.md", "--db", str(db)]
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "audit", *args],
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"audit specs sync failed: {done.stderr}")
    return elapsed, done.stdout


def check_stored(db: Path, expected: list[str]) -> int:
    """Exit unless the database holds the expected revisions and consistent changes."""
    if stored_hashes(db) != expected:
        sys.exit("the stored content hashes differ from the naive reader's")
    with open_store(db, read_only=True) as store:
        counts = store.query(
            "SELECT (SELECT count(*) FROM spec_changes) AS lines, "
            "(SELECT count(DISTINCT sha) FROM spec_clause_changes) AS revised, "
            "(SELECT count(*) FROM spec_clause_changes) AS clauses"
        )[0]
        if counts["lines"] != SPEC_COMMITS or counts["revised"] != SPEC_COMMITS:
            sys.exit(f"expected line and clause changes for every revision, got {counts}")
        for seq in random.Random(SEED).sample(range(1, SPEC_COMMITS), CHECKED_DIFFS):
            stored = store.query(
                "SELECT change, clause_kind, section, old_text, new_text, similarity "
                "FROM spec_clause_changes c JOIN spec_revisions r USING (source_id, sha) "
                "WHERE r.seq = ? ORDER BY ordinal",
                [seq],
            )
            shown = [c.as_dict() for c in diff_revisions(store, seq - 1, seq).changes]
            if stored != shown:
                sys.exit(f"revision {seq}: stored clause changes differ from `audit specs diff`")
    return int(counts["clauses"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=3)
    rounds = parser.parse_args().rounds
    with tempfile.TemporaryDirectory() as scratch_name:
        scratch = Path(scratch_name)
        repo = scratch / "repo"
        started = time.perf_counter()
        generate_repo(repo)
        generate_s = time.perf_counter() - started

        warm = scratch / "warm"
        warm_repo = git.Repo.init(warm, initial_branch="main")
        (warm / "spec.md").write_text("# Warm-up\n\nImports and caches.\n")
        warm_repo.index.add(["spec.md"])
        warm_repo.index.commit("warm-up")
        warm_repo.close()
        sync_into(warm, scratch / "warm.duckdb")

        times: dict[str, list[float]] = {"naive": [], "read": [], "sync": []}
        cpu: dict[str, list[float]] = {"naive": [], "read": [], "sync": []}
        expected: list[str] = []
        for n in range(rounds):
            naive_s, naive_cpu, naive = timed(lambda: naive_revisions(repo, "spec.md"))
            read_s, read_cpu, read = timed(lambda: read_revisions(repo, "spec.md"))
            db = scratch / f"round-{n}.duckdb"
            sync_s, sync_cpu, added = timed(lambda: sync_into(repo, db))  # noqa: B023
            if added != SPEC_COMMITS:
                sys.exit(f"the sync added {added} revisions")
            if len(naive) != SPEC_COMMITS or read != naive:
                sys.exit(f"naive found {len(naive)} revisions, our reader {len(read)}")
            expected = naive
            for name, wall, used in (
                ("naive", naive_s, naive_cpu),
                ("read", read_s, read_cpu),
                ("sync", sync_s, sync_cpu),
            ):
                times[name].append(wall)
                cpu[name].append(used)
        clause_rows = check_stored(db, expected)
        resync_s, _, added = timed(lambda: sync_into(repo, db))
        if added != 0 or stored_hashes(db) != expected:
            sys.exit("the re-sync changed the stored revisions")

        cli_db = scratch / "cli.duckdb"
        cli_sync_s, first = cli_sync(repo, cli_db)
        cli_resync_s, again = cli_sync(repo, cli_db)
        if not (f"{SPEC_COMMITS} new revisions" in first and " 0 new revisions" in again):
            sys.exit(f"unexpected CLI output: {first!r} then {again!r}")

    median = {name: statistics.median(values) for name, values in times.items()}
    rate = {name: SPEC_COMMITS / seconds for name, seconds in median.items()}
    cpu_median = {name: statistics.median(values) for name, values in cpu.items()}
    print(
        json.dumps(
            {
                "commits": COMMITS,
                "spec_revisions": SPEC_COMMITS,
                "spec_kb": SPEC_BYTES // 1000,
                "rounds": rounds,
                "generate_s": round(generate_s, 2),
                "naive_s": round(median["naive"], 3),
                "read_s": round(median["read"], 3),
                "sync_s": round(median["sync"], 3),
                "naive_revisions_per_s": round(rate["naive"]),
                "read_revisions_per_s": round(rate["read"]),
                "sync_revisions_per_s": round(rate["sync"]),
                "read_vs_naive": round(rate["read"] / rate["naive"], 2),
                "sync_vs_naive": round(rate["sync"] / rate["naive"], 2),
                # CPU time is steadier than wall time on a shared machine (no waiting for a core).
                "cpu_s": {k: round(v, 3) for k, v in cpu_median.items()},
                "read_vs_naive_cpu": round(cpu_median["naive"] / cpu_median["read"], 2),
                "sync_vs_naive_cpu": round(cpu_median["naive"] / cpu_median["sync"], 2),
                "resync_s": round(resync_s, 3),
                "load_average": [round(x, 2) for x in os.getloadavg()],
                "cli_cold_sync_s": round(cli_sync_s, 3),
                "cli_sync_revisions_per_s": round(SPEC_COMMITS / cli_sync_s),
                "cli_cold_resync_s": round(cli_resync_s, 3),
                "clause_change_rows": clause_rows,
                "checked_diffs": CHECKED_DIFFS,
                "all_times_s": {k: [round(v, 3) for v in vs] for k, vs in times.items()},
                "targets": TARGETS,
            }
        )
    )


if __name__ == "__main__":
    main()
