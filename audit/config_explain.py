"""The configuration explained: the effective value of every key and where it came from
(``audit config show``), problems found before a run would meet them (``audit config check``),
and the reference of every key with its default, generated from the pydantic model for the
README (``audit config reference``), so the documentation cannot drift from the code.
"""

from __future__ import annotations

import os
import tomllib
import types
import typing
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticUndefined

from audit.config import (
    STDIN,
    AuditConfig,
    anchor_paths,
    config_data,
    find_config_file,
    load_config,
    with_overrides,
)
from audit.errors import AuditError

Origin = Literal["default", "file", "flag", "env"]


@dataclass(frozen=True)
class ConfigEntry:
    """One key of the effective configuration."""

    key: str
    value: Any
    origin: Origin
    #: The config file for origin ``file``, the variable for ``env``; else None.
    detail: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "value": self.value, "origin": self.origin, "from": self.detail}


@dataclass(frozen=True)
class ExplainedConfig:
    """The effective configuration of a folder, key by key."""

    file: Path | None
    entries: tuple[ConfigEntry, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "file": None if self.file is None else str(self.file),
            "entries": [e.to_json() for e in self.entries],
        }


def parse_assignments(assignments: Sequence[str]) -> dict[str, Any]:
    """``["run.epochs=5", "db=x.duckdb"]`` as overrides; values are read as TOML values
    (``5``, ``true``, ``0.5``, ``"text"``) and otherwise taken as plain text."""
    overrides: dict[str, Any] = {}
    for assignment in assignments:
        key, sep, raw = assignment.partition("=")
        if not sep or not key.strip():
            raise AuditError(f"--set {assignment!r}: write KEY=VALUE, e.g. --set run.epochs=5")
        try:
            value = tomllib.loads(f"value = {raw.strip()}")["value"]
        except tomllib.TOMLDecodeError:
            value = raw.strip()
        overrides[key.strip()] = value
    return overrides


def explain_config(
    path: str | Path | None = None, overrides: Mapping[str, Any] | None = None
) -> ExplainedConfig:
    """The effective configuration, each key with its origin: ``default``, ``file`` (the config
    file set it), ``flag`` (an override, as a command's flags give them) or ``env`` (a model's
    endpoint left to ``OPENAI_BASE_URL``).

    ``overrides`` are dotted paths (``{"run.epochs": 5}``), ``None`` values ignored, as in
    :func:`audit.config.with_overrides`; per-model keys (``models.<name>.concurrency``) are
    not overridable here, as no flag names one model's setting.
    """
    flags = {k: v for k, v in (overrides or {}).items() if v is not None}
    file = Path(path) if path is not None else find_config_file()
    config = load_config(file) if file is not None else AuditConfig()
    if flags:
        _refuse_unknown_keys(flags)
        config = with_overrides(config, **flags)
    raw = _raw_section(file) if file is not None else {}
    entries = []
    for key, value in _flatten(config):
        entries.append(_entry(key, value, raw, flags, file))
    shown = None if file is None else file if file == STDIN else file.resolve()
    return ExplainedConfig(file=shown, entries=tuple(entries))


def _refuse_unknown_keys(flags: Mapping[str, Any]) -> None:
    known = {key for key, _, _ in reference_rows()}
    for key in flags:
        if key not in known or key.startswith("models."):
            raise AuditError(
                f"unknown key {key!r}: see `audit config reference` for the keys "
                "(per-model keys are set in the config file)"
            )


def _raw_section(file: Path) -> dict[str, Any]:
    return config_data(file)


def _flatten(config: BaseModel, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, value) of every leaf; models are keyed by name: ``models.<name>.<field>``."""
    for name in type(config).model_fields:
        value = getattr(config, name)
        key = f"{prefix}{name}"
        if isinstance(value, BaseModel):
            yield from _flatten(value, key + ".")
        elif name == "models" and not prefix:
            for model in value:
                yield from _flatten(model, f"models.{model.name}.")
        else:
            yield key, value


def _entry(
    key: str, value: Any, raw: Mapping[str, Any], flags: Mapping[str, Any], file: Path | None
) -> ConfigEntry:
    if key in flags:
        return ConfigEntry(key, value, "flag")
    if _lookup(raw, key) is not _MISSING:
        return ConfigEntry(key, value, "file", str(file))
    is_endpoint = key.startswith("models.") and key.endswith(".base_url")
    if is_endpoint and value is None and os.environ.get("OPENAI_BASE_URL"):
        return ConfigEntry(key, os.environ["OPENAI_BASE_URL"], "env", "OPENAI_BASE_URL")
    return ConfigEntry(key, value, "default")


_MISSING = object()


def _lookup(raw: Mapping[str, Any], key: str) -> Any:
    """The raw file's value at a dotted key (``models.<name>.x`` finds the model by name)."""
    parts = key.split(".")
    node: Any = raw
    if parts[0] == "models" and len(parts) > 2:
        models = raw.get("models", [])
        matches = [m for m in models if isinstance(m, dict) and m.get("name") == parts[1]]
        if not matches:
            return _MISSING
        node, parts = matches[0], parts[2:]
    for part in parts:
        if not isinstance(node, Mapping) or part not in node:
            return _MISSING
        node = node[part]
    return node


# -- config check ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConfigProblem:
    """Something ``audit config check`` found: an error stops commands, a warning may not."""

    severity: Literal["error", "warning"]
    key: str
    message: str

    def line(self) -> str:
        return f"{self.severity}: {self.key}: {self.message}"

    def to_json(self) -> dict[str, str]:
        return {"severity": self.severity, "key": self.key, "message": self.message}


def check_config(path: str | Path | None = None) -> tuple[Path | None, list[ConfigProblem]]:
    """Every problem of the configuration at once: invalid keys and values (all of them, not the
    first), and what a command would fail on later: a spec repository or file that is not
    there, a held-out set that does not load, a database folder that does not exist, two models
    of one name, a key variable that is not set for a remote endpoint, prices without batch
    prices while batch runs are possible."""
    file = Path(path) if path is not None else find_config_file()
    if file is None:
        return None, [
            ConfigProblem(
                "warning", "(file)", "no audit.toml or [tool.audit] found: defaults apply"
            )
        ]
    try:
        raw = _raw_section(file)
    except AuditError as exc:
        if not (file == STDIN or file.is_file()):
            raise
        return file, [ConfigProblem("error", "(file)", str(exc))]
    try:
        config = AuditConfig.model_validate(raw)
    except ValidationError as exc:
        return file, [
            ConfigProblem("error", ".".join(str(p) for p in e["loc"]) or "(file)", e["msg"])
            for e in exc.errors()
        ]
    config = anchor_paths(config, Path.cwd() if file == STDIN else file.resolve().parent)
    return file, [*_spec_problems(config), *_other_problems(config)]


def _spec_problems(config: AuditConfig) -> list[ConfigProblem]:
    from audit.spec_history import open_spec_file

    try:
        open_spec_file(config.spec.repo, config.spec.path, config.spec.ref)
    except AuditError as exc:
        return [ConfigProblem("error", "spec", str(exc))]
    return []


def _other_problems(config: AuditConfig) -> list[ConfigProblem]:
    from audit.runner.client import is_loopback

    problems = []
    if config.heldout.path is not None:
        from audit.heldout import load_heldout

        try:
            load_heldout(config.heldout.path)
        except AuditError as exc:
            problems.append(ConfigProblem("error", "heldout.path", str(exc)))
    if config.db != ":memory:" and not Path(config.db).parent.is_dir():
        problems.append(
            ConfigProblem("error", "db", f"folder {Path(config.db).parent} does not exist")
        )
    names = [m.name for m in config.models]
    for name in sorted({n for n in names if names.count(n) > 1}):
        problems.append(ConfigProblem("error", f"models.{name}", "two models share this name"))
    if not config.models:
        problems.append(
            ConfigProblem("warning", "models", "no model configured: audit sweep has nothing")
        )
    for model in config.models:
        base_url = model.base_url or os.environ.get("OPENAI_BASE_URL") or ""
        if not os.environ.get(model.api_key_env) and not (base_url and is_loopback(base_url)):
            problems.append(
                ConfigProblem(
                    "warning",
                    f"models.{model.name}.api_key_env",
                    f"environment variable {model.api_key_env} is not set here",
                )
            )
        if model.price is not None and (
            model.price.batch_input is None or model.price.batch_output is None
        ):
            problems.append(
                ConfigProblem(
                    "warning",
                    f"models.{model.name}.price",
                    "no batch prices: the cost of batch runs will be unknown",
                )
            )
    return problems


# -- reference ---------------------------------------------------------------------------------


def reference_rows(
    model: type[BaseModel] = AuditConfig, prefix: str = ""
) -> list[tuple[str, str, str]]:
    """(dotted key, default, description) of every key of the configuration, in model order;
    the keys of each ``[[models]]`` entry are ``models.<key>``."""
    rows = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        nested = _nested_model(field.annotation)
        if nested is not None:
            if nested is not AuditConfig and _is_optional(field.annotation):
                rows.append((key, _default_text(field), field.description or ""))
            rows.extend(reference_rows(nested, key + "."))
            continue
        rows.append((key, _default_text(field), field.description or ""))
    return rows


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    """The config model a field holds (alone, optional, or as a tuple of them), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType, tuple):
        for arg in typing.get_args(annotation):
            found = _nested_model(arg)
            if found is not None:
                return found
    return None


def _is_optional(annotation: Any) -> bool:
    return type(None) in typing.get_args(annotation)


def _default_text(field: Any) -> str:
    if field.default is PydanticUndefined:
        return "required"
    value = field.default
    if value is None:
        return "unset"
    if isinstance(value, BaseModel):
        return "see below"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, str):
        return f'`"{value}"`'
    if isinstance(value, tuple) and not value:
        return "none"
    return f"`{value}`"


def config_reference() -> str:
    """The Markdown table of every key, its default and its meaning (the README's)."""
    lines = ["| key | default | meaning |", "| --- | --- | --- |"]
    for key, default, description in reference_rows():
        text = description.replace("|", "\\|").replace("\n", " ")
        lines.append(f"| `{key}` | {default} | {text} |")
    return "\n".join(lines) + "\n"
