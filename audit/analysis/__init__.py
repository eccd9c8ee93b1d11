"""Analysis: rates with intervals, paired changes, exposure, attribution, detection and the gate.

``detect()`` runs a whole pass over the stored history; ``gate()`` checks one candidate against a
baseline for CI. The submodules hold the pieces: estimates, compare, exposure and attribution;
points (what is compared), evaluate (the tests), findings (what is found and said) for both.
"""

from __future__ import annotations

from audit.analysis.detect import detect
from audit.analysis.findings import Finding
from audit.analysis.gate import GateResult, gate

__all__ = ["Finding", "GateResult", "detect", "gate"]
