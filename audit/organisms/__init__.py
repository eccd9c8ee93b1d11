"""Model organisms: SIMULATED models with known, configurable propensities.

Real frontier models cannot be reached from this project's machines, and an attribution is only
trustworthy if it is checked against cases whose cause is known. An organism is a small TOML
file (``audit/organisms/configs/``) describing a simulated model line and its versions: how often
it takes covert actions per scenario family, how strongly spec text that names a scenario
suppresses covert action on that scenario (spec patching), how often it verbalizes evaluation
awareness and how much that suppresses covert action, and a uniform genuine improvement.

- :mod:`audit.organisms.config`: the config format and :func:`load_organisms`.
- :mod:`audit.organisms.behaviour`: the pure, seeded decision model (no HTTP), usable by the
  analysis to simulate histories.
- :mod:`audit.organisms.replay`: turns the decision into assistant turns replayed from a
  scenario's reference transcripts.
- :mod:`audit.organisms.server`: an OpenAI-compatible HTTP server (starlette + uvicorn) serving
  every organism version as a model named ``<organism>-<version>``.

Everything here is a simulator and says so in its output.
"""

from audit.organisms.config import (
    OrganismConfig,
    OrganismModel,
    OrganismVersion,
    load_organisms,
    shipped_config_paths,
)

__all__ = [
    "OrganismConfig",
    "OrganismModel",
    "OrganismVersion",
    "load_organisms",
    "shipped_config_paths",
]
