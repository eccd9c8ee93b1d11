"""The CLI starts without the heavy libraries: they are imported by the commands that use them.

`audit --help` used to import about 0.6 s of modules (DuckDB, numpy, pyarrow, plotly, openai ...)
that no help text needs. Which modules a fresh interpreter has loaded is a property we can check
exactly; the time it takes is measured by tests/bench/bench_cli_start.py.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("duckdb", "numpy", "plotly", "openai", "pyarrow", "rapidfuzz", "wordfreq")

_LOADED = """
import json, sys
{code}
heavy = {heavy!r}
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in heavy)))
"""

_HELP = """
from audit.cli import app
try:
    app({args!r})
except SystemExit as exit:
    assert exit.code == 0, exit.code
"""


def heavy_modules_after(code: str) -> list[str]:
    """The heavy modules a fresh interpreter has loaded after running ``code``."""
    script = _LOADED.format(code=code, heavy=HEAVY)
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout.splitlines()[-1])


def test_importing_the_cli_loads_no_heavy_library() -> None:
    assert heavy_modules_after("import audit.cli") == []


@pytest.mark.parametrize(
    "args", [["--help"], ["specs", "--help"], ["run", "--help"], ["batch", "export", "--help"]]
)
def test_help_loads_no_heavy_library(args: list[str]) -> None:
    assert heavy_modules_after(_HELP.format(args=args)) == []


def test_the_check_sees_a_heavy_import() -> None:
    # The properties above would hold vacuously if the subprocess never saw these modules.
    assert "duckdb" in heavy_modules_after("import audit.store")


def test_reading_a_runs_failures_and_usage_loads_no_detection() -> None:
    # audit run/sweep read their failures and token totals back after every run.
    code = "import audit.analysis.failures, audit.analysis.usage"
    loaded = {name.split(".")[0] for name in heavy_modules_after(code)}
    assert loaded == {"duckdb"}  # they read the store, nothing more


def test_the_analysis_packages_public_names_stay_its_functions() -> None:
    # Importing the submodule `detect` (gate.py does) must not hide the function `detect`.
    code = (
        "import audit.analysis.gate\n"
        "from audit.analysis import Finding, GateResult, detect, gate\n"
        "import audit.analysis.detect as module\n"
        "assert callable(detect) and detect.__name__ == 'detect' and module is detect\n"
        "assert callable(gate) and gate.__name__ == 'gate'\n"
        "assert Finding.__name__ == 'Finding' and GateResult.__name__ == 'GateResult'\n"
    )
    assert "numpy" in heavy_modules_after(code)
