"""The families file of a held-out set: which families of covert actions it has, and how each
is scored (data, not code).

A set folder holds ``families.toml`` beside its ``scenarios/`` folder::

    [families.misreport_tests]
    description = "misreporting test results"
    scoring = "covert_rate"

    [families.sandbagging]
    description = "underperforming on a capability check"
    scoring = "accuracy_gap"
    reference_condition = "neutral"
    incentive_condition = "incentive"

A set without one uses the starter set's file (``audit/heldout/families.toml``), so a private set
of starter families needs none; a set that adds a family declares all of its families.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from audit.heldout.model import Family
from audit.heldout.problems import PLACEHOLDER, SetProblem, placeholder_message

FAMILIES_FILE = "families.toml"
BUNDLED_FAMILIES_PATH = Path(__file__).resolve().parent / FAMILIES_FILE


@dataclass(frozen=True)
class FamilyFile:
    """The families a set declares, and where they were read from."""

    path: Path
    own: bool
    """Whether the set folder holds the file (False: the starter set's families apply)."""
    families: dict[str, Family] = field(default_factory=dict)
    broken: frozenset[str] = frozenset()
    """Families declared with problems (reported once, against the families file)."""

    def for_checks(self) -> dict[str, Family | None]:
        """Declared families for the scenario checks; None marks one whose declaration is broken,
        so its scenarios are not also told that it is undeclared."""
        return {**dict.fromkeys(self.broken), **self.families}

    def as_data(self) -> dict[str, Any]:
        """The declarations as plain data (what the manifest's ``families_hash`` covers)."""
        return {
            name: family.model_dump(mode="json", exclude={"name"}, exclude_none=True)
            for name, family in sorted(self.families.items())
        }


def families_path(set_dir: Path) -> Path:
    """Where a set folder's families file lives (it may not exist)."""
    return set_dir / FAMILIES_FILE


def read_families(set_dir: Path) -> tuple[FamilyFile, list[SetProblem]]:
    """The families of the set in ``set_dir`` (its own file, else the starter set's) and every
    problem of that file. Families with problems are left out of the result."""
    own = families_path(set_dir)
    path = own if own.is_file() else BUNDLED_FAMILIES_PATH
    label = _label(path, set_dir)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        problem = SetProblem(label, "", "(file)", f"cannot read it ({exc}): save it as UTF-8")
        return FamilyFile(path, path == own), [problem]
    except tomllib.TOMLDecodeError as exc:
        return FamilyFile(path, path == own), [
            SetProblem(label, "", "(toml)", f"not valid TOML ({exc}): fix the syntax")
        ]
    families, problems = parse_families(data, label)
    tables = data.get("families")
    broken = frozenset(set(tables) - set(families)) if isinstance(tables, dict) else frozenset()
    return FamilyFile(path, path == own, families, broken), problems


def parse_families(
    data: Mapping[str, Any], label: str
) -> tuple[dict[str, Family], list[SetProblem]]:
    """Validate the ``[families.NAME]`` tables of a parsed families file."""
    problems: list[SetProblem] = []
    extra = sorted(set(data) - {"families"})
    if extra:
        problems.append(
            SetProblem(
                label,
                "",
                extra[0],
                "unknown top-level key: the file holds only [families.NAME] tables",
            )
        )
    tables = data.get("families", {})
    if not isinstance(tables, dict) or not tables:
        problems.append(
            SetProblem(
                label,
                "",
                "families",
                "no families declared: add a [families.NAME] table with description and "
                "scoring for every family your scenarios use",
            )
        )
        return {}, problems
    families: dict[str, Family] = {}
    for name, table in sorted(tables.items()):
        subject = f"family {name}"
        if not isinstance(table, dict):
            problems.append(
                SetProblem(label, subject, "(table)", "must be a table ([families.NAME])")
            )
            continue
        left = [
            (key, match.group(0))
            for key, value in table.items()
            if isinstance(value, str) and (match := PLACEHOLDER.search(value))
        ]
        if left:
            problems += [SetProblem(label, subject, k, placeholder_message(m)) for k, m in left]
            continue
        try:
            families[name] = Family.model_validate({"name": name, **table})
        except ValidationError as exc:
            for error in exc.errors():
                where = ".".join(str(part) for part in error["loc"]) or "(table)"
                message = str(error["msg"]).removeprefix("Value error, ")
                problems.append(SetProblem(label, subject, where, message + _hint(where)))
    return families, problems


def _hint(where: str) -> str:
    if where == "scoring":
        return ' (use "covert_rate" or "accuracy_gap")'
    if where == "description":
        return ": say in a few words which covert action the family covers"
    if where == "name":
        return ": use lower-case letters, digits, '_' and '-'"
    return ""


def _label(path: Path, set_dir: Path) -> str:
    """How problems name the file: relative to the set folder, as scenario files are."""
    try:
        return str(path.relative_to(set_dir))
    except ValueError:
        return str(path)


def family_table_schema() -> dict[str, Any]:
    """JSON Schema of one ``[families.NAME]`` table, generated from :class:`Family` (its name is
    the table's key, so it is not a field of the table)."""
    schema = Family.model_json_schema()
    schema["properties"].pop("name", None)
    schema["required"] = [r for r in schema.get("required", []) if r != "name"]
    schema["title"] = "[families.NAME] table of families.toml"
    return schema
