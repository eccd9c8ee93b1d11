"""Analysis: rates with intervals, paired changes, exposure, attribution, detection and the gate.

``detect()`` runs a whole pass over the stored history; ``gate()`` checks one candidate against a
baseline for CI. The submodules hold the pieces (estimates, compare, exposure, attribution).
"""

from __future__ import annotations

from audit.analysis.detect import Finding, detect
from audit.analysis.gate import GateResult, gate

__all__ = ["Finding", "GateResult", "detect", "gate"]
