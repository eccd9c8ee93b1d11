"""Analysis: rates with intervals, paired changes, exposure, attribution, detection and the gate.

``detect()`` runs a whole pass over the stored history; ``gate()`` checks one candidate against a
baseline for CI. The submodules hold the pieces: estimates, compare, exposure and attribution;
points (what is compared), evaluate (the tests), findings (what is found and said) for both.

The four public names are imported on first use: detection brings numpy, rapidfuzz and wordfreq
(about 0.2 s here), which a command that only reads a run's failures or token totals
(:mod:`audit.analysis.failures`, :mod:`audit.analysis.usage`) does not need.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from audit.analysis.detect import detect
    from audit.analysis.findings import Finding
    from audit.analysis.gate import GateResult, gate

__all__ = ["Finding", "GateResult", "detect", "gate"]

_PUBLIC = {
    "Finding": "audit.analysis.findings",
    "detect": "audit.analysis.detect",
    "GateResult": "audit.analysis.gate",
    "gate": "audit.analysis.gate",
}


class _Package(types.ModuleType):
    """This package, its public names looked up in their modules on every access.

    ``detect`` and ``gate`` name both a function and the submodule defining it. Importing a
    submodule binds its name on the package, which would hide the function (PEP 562's module
    ``__getattr__`` is not asked once the name is bound); looking the public names up here
    keeps them the functions, as the former eager imports did.
    """

    def __getattribute__(self, name: str) -> Any:
        home = _PUBLIC.get(name)
        if home is None:
            return super().__getattribute__(name)
        return getattr(importlib.import_module(home), name)


sys.modules[__name__].__class__ = _Package
