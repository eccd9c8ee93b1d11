"""The CLI end to end on six spec histories written before any run (tests/data/fresh_histories).

Three histories patch the spec with the details of 6-8 public scenarios, in a list of known
incidents, a FAQ and prose; two only reword and add generic principles; one adds a broad honesty
principle. Nobody had run specdrift on them when they were committed (their commit says so),
and the detectors were not changed for them. ``tests/bench/fresh_histories.py`` builds a git
repository of each, serves the organisms, and runs ``specs sync``, ``sweep``, ``detect`` and
``gate`` as a user would; this test holds it to the histories' truth for the patching model.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HISTORIES = ROOT / "tests" / "data" / "fresh_histories"


@pytest.mark.slow
def test_a_patched_model_is_caught_and_reworded_specs_find_nothing(tmp_path: Path) -> None:
    out = tmp_path / "fresh.json"
    script = ROOT / "tests" / "bench" / "fresh_histories.py"
    subprocess.run(
        [sys.executable, str(script), "--out", str(out)],
        check=True,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    results = json.loads(out.read_text(encoding="utf-8"))["histories"]
    assert len(results) == len([h for h in HISTORIES.iterdir() if h.is_dir()])
    for name, result in results.items():
        assert "error" not in result, (name, result.get("error"))
        truth = tomllib.loads((HISTORIES / name / "truth.toml").read_text(encoding="utf-8"))
        patcher = result["models"]["patcher-v1"]
        if truth["cause"] == "spec_patching":
            first = patcher["findings"][0]
            assert first["to"] == f"patcher-v1@{truth['revision']}", (name, first)
            assert (first["kind"], first["primary_cause"]) == ("drop", "spec_patching"), name
            assert patcher["gate"]["exit_code"] == 1, (name, patcher["gate"])
        elif truth["cause"] == "null":
            for model in ("patcher-v1", "steady-v1"):
                assert result["models"][model]["findings"] == [], (name, model)
                assert result["models"][model]["gate"]["exit_code"] == 0, (name, model)
