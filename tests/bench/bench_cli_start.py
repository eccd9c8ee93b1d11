"""Benchmark: how long the ``audit`` command takes to start, against ``python -c pass``.

Run with ``python tests/bench/bench_cli_start.py [--runs 20]``. Prints one JSON object. Each
command is run ``--runs`` times as a fresh process, the commands interleaved so that a burst of
load on a shared machine hits all of them alike:

- ``python``: ``python -c pass``, the interpreter's own start (site and the venv's path hooks
  included), the floor no command can go under;
- ``help``: ``python -m audit --help`` (the typer app built, every command registered, the help
  rendered with rich);
- ``sub_help``: ``python -m audit specs sync --help``, one sub-command's help;
- ``import``: ``python -c "import audit.cli"``, the CLI's imports alone.

The commands run in the checkout this file belongs to, so they time its ``audit`` package. For
each: the minimum and median wall seconds, and the median CPU seconds of the child (user +
system, from ``getrusage``), which is steadier than wall time when other processes compete for
the cores. ``help_vs_python`` is the ratio of the medians. Target: ``audit --help`` under
0.25 s of wall time (issue 16).

The check that importing ``audit.cli`` leaves the heavy libraries out is a test
(tests/test_cli_start.py), not a timing.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

TARGET_HELP_S = 0.25
ROOT = Path(__file__).resolve().parents[2]
"""The checkout this file is in: ``python -m audit`` run from there imports its ``audit``."""

COMMANDS = {
    "python": [sys.executable, "-c", "pass"],
    "help": [sys.executable, "-m", "audit", "--help"],
    "sub_help": [sys.executable, "-m", "audit", "specs", "sync", "--help"],
    "import": [sys.executable, "-c", "import audit.cli"],
}


def children_cpu() -> float:
    """CPU seconds used by the ended child processes so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_once(args: list[str]) -> tuple[float, float]:
    """Wall and CPU seconds of one run of ``args``; exits if the command fails."""
    cpu_before = children_cpu()
    started = time.perf_counter()
    done = subprocess.run(
        args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"{' '.join(args)} failed: {done.stderr.decode()}")
    return wall, children_cpu() - cpu_before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=20)
    runs = parser.parse_args().runs
    for args in COMMANDS.values():  # warm the file cache and the bytecode caches
        run_once(args)
    wall: dict[str, list[float]] = {name: [] for name in COMMANDS}
    cpu: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(runs):
        for name, args in COMMANDS.items():
            seconds, used = run_once(args)
            wall[name].append(seconds)
            cpu[name].append(used)
    median = {name: statistics.median(values) for name, values in wall.items()}
    print(
        json.dumps(
            {
                "runs": runs,
                "load_average": [round(x, 2) for x in os.getloadavg()],
                "min_s": {name: round(min(values), 3) for name, values in wall.items()},
                "median_s": {name: round(value, 3) for name, value in median.items()},
                "median_cpu_s": {
                    name: round(statistics.median(values), 3) for name, values in cpu.items()
                },
                "help_vs_python": round(median["help"] / median["python"], 1),
                "help_over_python_s": round(median["help"] - median["python"], 3),
                "target_help_s": TARGET_HELP_S,
                "help_meets_target": median["help"] < TARGET_HELP_S,
            }
        )
    )


if __name__ == "__main__":
    main()
