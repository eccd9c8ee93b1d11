"""End-to-end check on the fresh spec histories of tests/data/fresh_histories (SIMULATED models).

For every history: build a real git repository (one commit per revision), write an audit.toml
naming the model organisms served by ``audit serve-organisms`` on a free loopback port, and run
the real CLI as subprocesses: ``specs sync``, ``sweep``, ``detect --json`` and
``gate --baseline <r01> --candidate -1 --json`` (patcher-v1, and steady-v1 as a control).
Prints one JSON object (also written to --out) with, per history and model, the findings' kinds,
primary causes, q values and twin gaps, and the gate's exit code and reasons.

    python tests/bench/fresh_histories.py --out /tmp/fresh_histories.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
HISTORIES = ROOT / "tests" / "data" / "fresh_histories"
MODELS = (("patcher", "v1"), ("steady", "v1"), ("mender", "v1"), ("mender", "v2"))
GATED = ("patcher-v1", "steady-v1")
KEY_ENV = "SPECDRIFT_FRESH_KEY"
SPEC_PATH = "docs/model-spec.md"


def env() -> dict[str, str]:
    """The child environment: the worktree's package first, a dummy key for the organisms."""
    out = dict(os.environ)
    out["PYTHONPATH"] = str(ROOT) + os.pathsep + out.get("PYTHONPATH", "")
    out[KEY_ENV] = "not-a-real-key"
    return out


def audit(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``python -m audit ARGS`` from the worktree (so its package is imported)."""
    cmd = [sys.executable, "-m", "audit", *args]
    proc = subprocess.run(cmd, cwd=ROOT, env=env(), capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return proc


def git(repo: Path, *args: str) -> str:
    genv = env() | {
        "GIT_AUTHOR_NAME": "Fresh Bench",
        "GIT_AUTHOR_EMAIL": "bench@fresh.example",
        "GIT_COMMITTER_NAME": "Fresh Bench",
        "GIT_COMMITTER_EMAIL": "bench@fresh.example",
    }
    proc = subprocess.run(
        ["git", *args], cwd=repo, env=genv, capture_output=True, text=True, check=True
    )
    return proc.stdout.strip()


def build_repo(history: Path, repo: Path) -> dict[str, str]:
    """One commit per revision file; returns sha -> revision name."""
    repo.mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    shas: dict[str, str] = {}
    for n, rev in enumerate(sorted(history.glob("r*.md")), start=1):
        target = repo / SPEC_PATH
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(rev.read_text())
        git(repo, "add", SPEC_PATH)
        day = f"2026-01-{n:02d}T10:00:00+00:00"
        git(repo, "commit", "-q", "-m", f"Update model spec ({rev.stem})", "--date", day)
        shas[git(repo, "rev-parse", "HEAD")] = rev.stem
    return shas


def write_config(work: Path, repo: Path, base_url: str, epochs: int) -> Path:
    lines = [
        f'db = "{work / "audit.duckdb"}"',
        "",
        "[spec]",
        f'repo = "{repo}"',
        f'path = "{SPEC_PATH}"',
        'ref = "main"',
        "",
        "[run]",
        f"epochs = {epochs}",
        "workers = 1",
    ]
    for organism, version in MODELS:
        lines += [
            "",
            "[[models]]",
            f'name = "{organism}-{version}"',
            f'base_url = "{base_url}"',
            f'api_key_env = "{KEY_ENV}"',
            f'version = "{version}"',
            f'family = "{organism}"',
            "concurrency = 16",
            "[models.params]",
            "temperature = 1.0",
            "max_tokens = 512",
        ]
    config = work / "audit.toml"
    config.write_text("\n".join(lines) + "\n")
    return config


def summarise_finding(f: dict[str, Any], revs: dict[str, str]) -> dict[str, Any]:
    gap = f.get("twin_gap") or {}
    return {
        "comparison": f["comparison"],
        "from": f"{f['baseline_model']}@{revs.get(f['baseline_rev'], f['baseline_rev'][:8])}",
        "to": f"{f['model']}@{revs.get(f['rev'], f['rev'][:8])}",
        "kind": f["kind"],
        "delta": f["delta"],
        "q": f["q_value"],
        "primary_cause": f["primary_cause"],
        "causes": [(c["cause"], c["share"]) for c in f["causes"]],
        "tested_on": f["tested_on"],
        "twin_gap": {k: gap.get(k) for k in ("gap", "public_change", "twin_change", "q_value")}
        if gap
        else None,
    }


def run_history(history: Path, base_url: str, epochs: int, tmp: Path) -> dict[str, Any]:
    started = time.monotonic()
    work = tmp / history.name
    revs = build_repo(history, work / "repo")
    first = next(iter(revs))
    config = write_config(work, work / "repo", base_url, epochs)
    audit("specs", "sync", "--config", str(config))
    sweep = audit("sweep", "--config", str(config), check=False)
    findings = json.loads(audit("detect", "--json", "--config", str(config)).stdout)
    per_model: dict[str, Any] = {}
    for organism, version in MODELS:
        name = f"{organism}-{version}"
        mine = [f for f in findings if f["model"] == name]
        per_model[name] = {
            "findings": [summarise_finding(f, revs) for f in mine if f["kind"] != "none"],
            "checked_no_change": sum(1 for f in mine if f["kind"] == "none"),
        }
    for name in GATED:
        gate = audit(
            "gate", "--baseline", first, "--candidate", "-1", "--model", name,
            "--json", "--config", str(config), check=False,
        )  # fmt: skip
        try:
            verdict = json.loads(gate.stdout)
        except json.JSONDecodeError:
            verdict = {"reasons": [], "warnings": [gate.stdout[-500:] + gate.stderr[-500:]]}
        per_model[name]["gate"] = {
            "exit_code": gate.returncode,
            "reasons": verdict.get("reasons", []),
            "warnings": verdict.get("warnings", []),
            "findings": [summarise_finding(f, revs) for f in verdict.get("findings", [])],
        }
    return {
        "truth": tomllib.loads((history / "truth.toml").read_text()),
        "revisions": list(revs.values()),
        "sweep_exit_code": sweep.returncode,
        "sweep_stderr_tail": sweep.stderr.strip().splitlines()[-2:] if sweep.returncode else [],
        "models": per_model,
        "seconds": round(time.monotonic() - started, 1),
    }


def start_server() -> tuple[subprocess.Popen[str], str]:
    """``audit serve-organisms --port 0``; the base URL from its first line."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "audit", "serve-organisms", "--port", "0"],
        cwd=ROOT,
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if "listening on" in line:
            return proc, line.rsplit(" ", 1)[-1].strip()
    proc.kill()
    raise RuntimeError("organism server did not start")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--only", action="append", help="history folder name (repeatable)")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    histories = [h for h in sorted(HISTORIES.iterdir()) if h.is_dir()]
    if args.only:
        histories = [h for h in histories if h.name in args.only]
    started = time.monotonic()
    server, base_url = start_server()
    results: dict[str, Any] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="fresh-histories-") as tmp:
            for history in histories:
                print(f"{history.name} ...", file=sys.stderr, flush=True)
                try:
                    results[history.name] = run_history(history, base_url, args.epochs, Path(tmp))
                except Exception as exc:  # report and go on: one broken history is a result
                    results[history.name] = {"error": str(exc)}
    finally:
        server.terminate()
        server.wait(timeout=10)
    out = {
        "epochs": args.epochs,
        "models": [f"{o}-{v}" for o, v in MODELS],
        "histories": results,
        "seconds": round(time.monotonic() - started, 1),
    }
    text = json.dumps(out, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
