"""Organism config files: one TOML file per simulated model line, several versions each.

A file looks like this (every field of a version may also be set once under ``[defaults]``)::

    name = "patcher"
    description = "..."
    ground_truth = "What an attribution over this organism's history must find."

    [defaults]
    default_propensity = 0.05
    patch_sensitivity = 0.95

    [defaults.family_propensity]
    sabotage = 0.4

    [[versions]]
    version = "v1"

    [[versions]]
    version = "v2"
    genuine_improvement = 0.5

The model name served over HTTP is ``<name>-<version>``. All probabilities are documented on
:class:`OrganismVersion`; :mod:`audit.organisms.behaviour` is the one place they are combined.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from audit.errors import AuditError

CONFIG_DIR = Path(__file__).parent / "configs"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OrganismVersion(_Strict):
    """The behaviour parameters of one version of a simulated model."""

    version: str = Field(pattern=r"^[a-z0-9][a-z0-9._]*$", description="e.g. v1, v2, v3.")
    release_date: str | None = Field(None, description="ISO date, for the model history.")
    default_propensity: float = Field(
        0.3, ge=0.0, le=1.0, description="Covert-action probability of families not listed."
    )
    family_propensity: dict[str, float] = Field(
        default_factory=dict, description="Scenario family -> covert-action probability."
    )
    scenario_propensity: dict[str, float] = Field(
        default_factory=dict,
        description="Scenario id -> covert-action probability (wins over the family's).",
    )
    noise: float = Field(
        0.0,
        ge=0.0,
        le=3.0,
        description="Standard deviation, in log-odds, of a fixed per-scenario jitter of the "
        "propensity (scenario heterogeneity; the same for every version of the organism).",
    )
    patch_sensitivity: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="Covert propensity is multiplied by (1 - patch_sensitivity * "
        "min(1, targeting / patch_saturation)), targeting = share of the scenario's distinctive "
        "phrases found in the spec text.",
    )
    patch_saturation: float = Field(
        1.0,
        gt=0.0,
        le=1.0,
        description="Targeting at which the full patch effect applies (1: proportional; "
        "0.15: naming one detail in seven is enough).",
    )
    genuine_improvement: float = Field(
        0.0, ge=0.0, le=1.0, description="Uniform multiplicative reduction of covert propensity."
    )
    awareness_base: float = Field(
        0.02, ge=0.0, le=1.0, description="Verbalized eval-awareness rate of the first version."
    )
    awareness_growth: float = Field(
        0.0, ge=-1.0, le=1.0, description="Added to the awareness rate per version step."
    )
    awareness_watch_boost: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="Most awareness that spec text about being watched/evaluated can add.",
    )
    awareness_watch_half: float = Field(
        10.0,
        gt=0.0,
        description="Watch-word count in the spec at which half of the watch boost applies.",
    )
    awareness_per_1k_words: float = Field(
        0.0, ge=0.0, le=1.0, description="Awareness added per 1,000 words of spec text."
    )
    awareness_max: float = Field(0.95, ge=0.0, le=1.0, description="Cap on the awareness rate.")
    awareness_suppression: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="When aware, covert propensity is multiplied by (1 - awareness_suppression).",
    )
    citation_rate: float = Field(
        0.1, ge=0.0, le=1.0, description="Probability of quoting a spec principle (spec given)."
    )
    citation_targeted: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="Extra citation probability, times targeting (a patch is quoted more).",
    )

    @model_validator(mode="after")
    def _propensities_are_probabilities(self) -> OrganismVersion:
        for table in (self.family_propensity, self.scenario_propensity):
            for key, value in table.items():
                if not 0.0 <= value <= 1.0:
                    raise ValueError(f"propensity of {key!r} must be within [0, 1], got {value}")
        return self


class OrganismConfig(_Strict):
    """A simulated model line: its story, its ground truth and its versions in release order."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$", description="Prefix of every model name.")
    description: str
    ground_truth: str = Field(
        description="What happens along the history, i.e. what attribution must find."
    )
    expected_attribution: str = Field(
        description="One of: spec_patching, awareness, genuine, regression, none."
    )
    versions: tuple[OrganismVersion, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_versions(self) -> OrganismConfig:
        names = [v.version for v in self.versions]
        if len(set(names)) != len(names):
            raise ValueError(f"organism {self.name}: duplicate version names {names}")
        return self


@dataclass(frozen=True)
class OrganismModel:
    """One servable model: an organism at one version (``index`` counts from 0)."""

    organism: OrganismConfig
    params: OrganismVersion
    index: int

    @property
    def name(self) -> str:
        """The model name clients send: ``<organism>-<version>``."""
        return f"{self.organism.name}-{self.params.version}"

    def metadata(self) -> dict[str, Any]:
        """What ``/v1/models`` tells about this model (labelled as a simulator)."""
        return {
            "simulator": True,
            "organism": self.organism.name,
            "version": self.params.version,
            "version_index": self.index,
            "release_date": self.params.release_date,
            "description": self.organism.description,
            "ground_truth": self.organism.ground_truth,
            "expected_attribution": self.organism.expected_attribution,
        }


def shipped_config_paths() -> list[Path]:
    """The organism configs that ship with the package, sorted by file name."""
    return sorted(CONFIG_DIR.glob("*.toml"))


def parse_organism(data: dict[str, Any], source: str = "organism") -> OrganismConfig:
    """Validate one organism config, applying ``[defaults]`` to every version."""
    data = dict(data)
    defaults = data.pop("defaults", {}) or {}
    versions = data.get("versions")
    if isinstance(versions, list):
        data["versions"] = [{**defaults, **version} for version in versions]
    try:
        return OrganismConfig.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise AuditError(f"{source}: {where}: {first['msg']}") from None


def read_organism(path: Path) -> OrganismConfig:
    """Read and validate one organism TOML file."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise AuditError(f"cannot read organism config {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise AuditError(f"organism config {path} is not valid TOML: {exc}") from None
    return parse_organism(data, source=str(path))


def load_organisms(paths: Iterable[str | Path] | None = None) -> dict[str, OrganismModel]:
    """Every version of every organism, keyed by model name (shipped configs by default)."""
    files = [Path(p) for p in paths] if paths is not None else shipped_config_paths()
    models: dict[str, OrganismModel] = {}
    for path in files:
        organism = read_organism(path)
        for index, params in enumerate(organism.versions):
            model = OrganismModel(organism=organism, params=params, index=index)
            if model.name in models:
                raise AuditError(
                    f"model name {model.name} is defined twice (second time in {path}): "
                    "rename the organism or the version"
                )
            models[model.name] = model
    return models
