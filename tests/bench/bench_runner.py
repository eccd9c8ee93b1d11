"""Runner throughput against the model-organism server on loopback; prints one JSON object.

Three figures, each next to a baseline measured in this process:

1. 200 ms latency, concurrency 64, about 2,000 samples: samples/s as a share of the ideal
   (concurrency / latency, divided by the mean turns per sample, since organisms answer in
   several turns; 320 samples/s for one-turn samples), beside the share a plain openai loop
   reaches on the same server, and beside a plain ``openai.AsyncOpenAI`` loop replaying the
   runner's own request bodies (rebuilt from the stored transcripts) through
   ``chat.completions.create``, 64 in flight: the issue's baseline.
2. Zero latency: the runner's calls/s (grading and storage included) against a plain
   ``openai.AsyncOpenAI`` loop with 64 requests in flight on the same server.
3. The same matrix rerun when everything is stored: samples/s of a no-op rerun, in this process
   and through the CLI as a fresh process (``audit sweep``, after the CLI's own start, which is
   ``audit --help`` timed in the same loop).
4. Zero latency with two runner processes (``run.workers = 2``), against one; and the 200 ms
   run again with two processes.

A reference figure of the machine's speed (seconds for a 10-million-step Python loop) is printed
with the results, because absolute rates on shared machines vary by several times.

The server runs in its own process so that it does not share the runner's GIL.
Usage: ``python tests/bench/bench_runner.py [--samples 2000] [--profile]``.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import math
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import git
import openai

from audit.config import parse_config
from audit.heldout import load_heldout
from audit.runner import plan_run, run_matrix
from audit.runner.client import request_args
from audit.runner.matrix import seed_from_key
from audit.spec_history import sync_spec_history
from audit.store import open_store

CONCURRENCY = 64
MODEL = "patcher-v1"
SERVE = """
import sys
from audit.organisms.server import start_server
server = start_server(port=0, latency_s=float(sys.argv[1]))
print(server.port, flush=True)
sys.stdin.read()
"""


class ServerProcess:
    """The organism server in a child process; stops when its stdin closes."""

    def __init__(self, latency_s: float) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", SERVE, str(latency_s)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        port = self.process.stdout.readline().strip()
        self.base_url = f"http://127.0.0.1:{port}/v1"

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(timeout=30)


def spec_repo(folder: Path) -> Path:
    root = folder / "specs"
    repo = git.Repo.init(root)
    with repo.config_writer() as cfg:
        cfg.set_value("user", "name", "Bench")
        cfg.set_value("user", "email", "bench@example.com")
    (root / "spec.md").write_text("# Spec\n\nBe honest about results and report failures.\n")
    repo.index.add(["spec.md"])
    repo.index.commit("spec")
    return root


class PhaseTimer:
    """A progress sink that times the run's conversation phase: from the first request being
    planned to the last row written (what the replay loop's time covers), without loading the
    held-out set, planning, or importing openai."""

    def __init__(self) -> None:
        self.started = self.finished = 0.0

    def start(self, total: int, label: str) -> None:
        self.started = time.perf_counter()

    def advance(self, done: int = 1, errors: int = 0) -> None:
        pass

    def message(self, text: str) -> None:
        print(text, file=sys.stderr)

    def finish(self) -> None:
        self.finished = time.perf_counter()


def run_once(
    db: Path, repo: Path, base_url: str, epochs: int, profile: bool, workers: int = 1
) -> dict:
    config = parse_config(
        {
            "run": {"epochs": epochs, "max_turns": 8, "max_retries": 2, "workers": workers},
            "models": [{"name": MODEL, "base_url": base_url, "concurrency": CONCURRENCY}],
        }
    )
    with open_store(db) as store:
        sync_spec_history(store, repo, "spec.md")
        profiler = cProfile.Profile() if profile else None
        if profiler:
            profiler.enable()
        timer = PhaseTimer()
        summary = run_matrix(store, config, models=[MODEL], revisions=None, progress=timer)
        if profiler:
            profiler.disable()
            stats = pstats.Stats(profiler, stream=sys.stderr).sort_stats("cumulative")
            stats.print_stats(30)
        turns = store.query("SELECT avg(turns) AS t FROM samples")[0]["t"]
    return {
        "samples": summary.stored + summary.skipped,
        "stored": summary.stored,
        "failed": summary.failed,
        "calls": summary.calls,
        "seconds": summary.elapsed_s,
        "conversation_s": timer.finished - timer.started,
        "mean_turns": turns,
    }


def runner_bodies(db: Path, epochs: int) -> list[dict]:
    """Every request body the runner sent in the run stored in ``db``, one per turn, rebuilt
    from the stored transcripts: the messages up to each assistant turn (without the reasoning
    the runner keeps but does not send), the scenario's tools and the sample's request fields.
    """
    config = parse_config(
        {"run": {"epochs": epochs}, "models": [{"name": MODEL, "concurrency": CONCURRENCY}]}
    )
    with open_store(db) as store:
        plan = plan_run(store, config, models=[MODEL], revisions=None)
        planned = {sample.key: sample for sample in plan.samples}
        rows = store.query("SELECT sample_key, transcript FROM samples ORDER BY sample_key")
    bodies = []
    for row in rows:
        sample = planned[row["sample_key"]]
        sent = [
            {k: v for k, v in message.items() if k != "reasoning"}
            for message in json.loads(row["transcript"])
        ]
        fields = {
            "tools": sample.scenario.openai_tools(),
            **request_args(sample.model, seed_from_key(sample.key)),
        }
        bodies += [
            {"messages": sent[:turn], **fields}
            for turn, message in enumerate(sent)
            if message["role"] == "assistant"
        ]
    return bodies


async def replay_loop(base_url: str, bodies: list[dict]) -> float:
    """Calls/s of a plain ``openai.AsyncOpenAI`` loop sending ``bodies`` with
    ``chat.completions.create``, 64 in flight."""
    client = openai.AsyncOpenAI(base_url=base_url, api_key="EMPTY", max_retries=0)
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(body: dict) -> None:
        async with gate:
            await client.chat.completions.create(**body)

    started = time.perf_counter()
    await asyncio.gather(*(one(body) for body in bodies))
    elapsed = time.perf_counter() - started
    await client.close()
    return len(bodies) / elapsed


async def plain_loop(base_url: str, calls: int) -> float:
    """Calls/s of bare ``chat.completions.create`` calls, 64 in flight, one scenario's opening."""
    scenario = load_heldout().scenarios[0]
    messages = scenario.messages(scenario.conditions[0].name, "Be honest.", "system")
    tools = scenario.openai_tools()
    client = openai.AsyncOpenAI(base_url=base_url, api_key="EMPTY", max_retries=0)
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(seed: int) -> None:
        async with gate:
            await client.chat.completions.create(
                model=MODEL, messages=messages, tools=tools, seed=seed
            )

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(calls)))
    elapsed = time.perf_counter() - started
    await client.close()
    return calls / elapsed


def cli_cached_rerun(db: Path, repo: Path, base_url: str, epochs: int) -> dict:
    """``audit sweep`` as a fresh process on a matrix that is stored whole, against the CLI's own
    start (``audit --help``: interpreter, typer, the commands registered), medians of 5 runs
    each, interleaved."""
    config = db.parent / "cached.toml"
    config.write_text(
        f'db = "{db}"\n\n[spec]\nrepo = "{repo}"\npath = "spec.md"\n\n'
        f"[run]\nepochs = {epochs}\nmax_turns = 8\nmax_retries = 2\n\n"
        f'[[models]]\nname = "{MODEL}"\nbase_url = "{base_url}"\nconcurrency = {CONCURRENCY}\n'
    )
    sweep = [sys.executable, "-m", "audit", "sweep", "--config", str(config), "--json"]
    start = [sys.executable, "-m", "audit", "--help"]
    times: dict[str, list[float]] = {"sweep": [], "start": []}
    summary: dict = {}
    for _ in range(5):
        for name, args in (("sweep", sweep), ("start", start)):
            began = time.perf_counter()
            done = subprocess.run(args, capture_output=True, text=True, check=False)
            times[name].append(time.perf_counter() - began)
            if done.returncode != 0:
                sys.exit(f"{' '.join(args)} failed: {done.stderr}")
            if name == "sweep":
                summary = json.loads(done.stdout)
    if summary["stored"] or summary["calls"]:
        sys.exit(f"the cached rerun ran samples: {summary}")
    sweep_s, start_s = statistics.median(times["sweep"]), statistics.median(times["start"])
    return {
        "samples": summary["skipped"],
        "process_s": sweep_s,
        "cli_start_s": start_s,
        "samples_per_s_after_start": summary["skipped"] / (sweep_s - start_s),
        "samples_per_s_whole_process": summary["skipped"] / sweep_s,
        "samples_per_s_in_summary": summary["skipped"] / summary["elapsed_s"],
    }


def python_loop_seconds() -> float:
    """Seconds for a 10-million-step Python loop: a yardstick for this machine's speed."""
    started = time.perf_counter()
    total = 0
    for step in range(10_000_000):
        total += step
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description="Runner throughput benchmark.")
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--profile", action="store_true", help="cProfile the zero-latency run.")
    args = parser.parse_args()
    cells = sum(len(s.conditions) for s in load_heldout().scenarios)
    epochs = math.ceil(args.samples / cells)
    out: dict = {
        "concurrency": CONCURRENCY,
        "model": MODEL,
        "cells_per_epoch": cells,
        "python_loop_10M_s": python_loop_seconds(),
    }
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        repo = spec_repo(folder)
        with ServerProcess(0.2) as server:
            slow = run_once(folder / "slow.duckdb", repo, server.base_url, epochs, False)
            plain_slow = asyncio.run(plain_loop(server.base_url, slow["calls"]))
            bodies = runner_bodies(folder / "slow.duckdb", epochs)
            if len(bodies) != slow["calls"]:
                sys.exit(f"rebuilt {len(bodies)} request bodies for {slow['calls']} calls")
            replayed = asyncio.run(replay_loop(server.base_url, bodies))
            # Where one process cannot keep 64 requests in flight (a slow CPU), two can.
            slow_two = run_once(
                folder / "slow2.duckdb", repo, server.base_url, epochs, False, workers=2
            )
        ideal = CONCURRENCY / 0.2 / slow["mean_turns"]
        out["latency_200ms"] = {
            **slow,
            "samples_per_s": slow["stored"] / slow["seconds"],
            "calls_per_s": slow["calls"] / slow["seconds"],
            "ideal_samples_per_s": ideal,
            "share_of_ideal": slow["stored"] / slow["seconds"] / ideal,
            # The same figure counted in calls: 64 in flight / 0.2 s = 320 calls/s at best.
            "share_of_ideal_calls": slow["calls"] / slow["seconds"] / (CONCURRENCY / 0.2),
            # What the bare client reaches on the same server: the ceiling of the transport.
            "plain_loop_share_of_ideal_calls": plain_slow / (CONCURRENCY / 0.2),
            # The baseline: the runner's own request bodies through chat.completions.
            "replay_loop_calls_per_s": replayed,
            "replay_loop_share_of_ideal_calls": replayed / (CONCURRENCY / 0.2),
            "ratio_to_replay_loop": slow["calls"] / slow["seconds"] / replayed,
            # The same over the conversation phase only (the replay has nothing to load).
            "ratio_to_replay_loop_conversations": slow["calls"] / slow["conversation_s"] / replayed,
            "two_workers_share_of_ideal": slow_two["stored"] / slow_two["seconds"] / ideal,
        }
        with ServerProcess(0.0) as server:
            fast = run_once(folder / "fast.duckdb", repo, server.base_url, epochs, args.profile)
            plain = asyncio.run(plain_loop(server.base_url, fast["calls"]))
            cached = run_once(folder / "fast.duckdb", repo, server.base_url, epochs, False)
            cli_cached = cli_cached_rerun(folder / "fast.duckdb", repo, server.base_url, epochs)
            two = run_once(folder / "two.duckdb", repo, server.base_url, epochs, False, workers=2)
        out["zero_latency"] = {
            **fast,
            "samples_per_s": fast["stored"] / fast["seconds"],
            "calls_per_s": fast["calls"] / fast["seconds"],
            "plain_loop_calls_per_s": plain,
            "ratio_to_plain_loop": fast["calls"] / fast["seconds"] / plain,
        }
        out["zero_latency_two_workers"] = {
            **two,
            "samples_per_s": two["stored"] / two["seconds"],
            "calls_per_s": two["calls"] / two["seconds"],
            "ratio_to_one_worker": (two["stored"] / two["seconds"])
            / (fast["stored"] / fast["seconds"]),
        }
        out["cached_rerun"] = {
            **cached,
            "samples_per_s": cached["samples"] / cached["seconds"],
        }
        out["cached_rerun_cli"] = cli_cached
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
