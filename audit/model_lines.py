"""Model lines: which models are versions of one another.

Detection compares consecutive versions of a line at each spec revision; the report draws a
line's versions as one family (one hue, newer versions darker, one menu entry). Both read lines
from here, so a line is drawn as it is compared. A model belongs to the line its configuration
names (``ModelConfig.family``), else to the line its name gives by a ``-vN`` or ``_vN`` suffix
("backslider-v3" is version 3 of "backslider", "gpt_v1.2" version 1.2 of "gpt"); any other model
is in no line and is a family of its own in the report.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from audit.config import AuditConfig

VERSIONED_NAME = re.compile(r"^(?P<line>.+?)[-_]v(?P<version>\d+(?:\.\d+)*)$")
"""A model name with a version suffix: ``<line>-v<version>`` or ``<line>_v<version>``."""


def configured_lines(config: AuditConfig) -> dict[str, str]:
    """Model name -> the line its configuration names (models without ``family`` left out)."""
    return {m.name: m.family for m in config.models if m.family}


def line_of(model: str, configured: Mapping[str, str] | None = None) -> str | None:
    """The line ``model`` belongs to (configured first, then its name's suffix), or None."""
    if configured and configured.get(model):
        return configured[model]
    match = VERSIONED_NAME.match(model)
    return match["line"] if match else None


def version_key(model: str) -> tuple[int, ...]:
    """Sort key of a model within its line: its name's version (``()`` without a suffix)."""
    match = VERSIONED_NAME.match(model)
    return tuple(int(p) for p in match["version"].split(".")) if match else ()


def model_lines(models: Sequence[str], config: AuditConfig) -> dict[str, list[str]]:
    """Lines of two or more of ``models``, each oldest first: what detection compares."""
    configured = configured_lines(config)
    lines: dict[str, list[str]] = {}
    for model in models:  # lines in the order their first model comes in
        line = line_of(model, configured)
        if line is not None:
            lines.setdefault(line, []).append(model)
    return {
        line: sorted(members, key=lambda m: (version_key(m), m))
        for line, members in lines.items()
        if len(members) > 1
    }


def model_families(
    models: Sequence[str], configured: Mapping[str, str] | None = None
) -> dict[str, list[str]]:
    """Every model in its family for drawing: its line, else a family of its own.

    Families come in name order, versions oldest first. A model in no line whose name is also a
    line's name (``gpt`` beside ``gpt-v2``) is not a version of that line, so it is not drawn as
    one: its family is named ``gpt (no version)``.
    """
    lined = {m: line for m in models if (line := line_of(m, configured)) is not None}
    families: dict[str, list[str]] = {}
    for model in models:
        family = lined.get(model) or family_of(model, configured)
        if model not in lined and family in lined.values():
            family = f"{family} (no version)"
        families.setdefault(family, []).append(model)
    return {
        family: sorted(members, key=lambda m: (version_key(m), m))
        for family, members in sorted(families.items())
    }


def family_of(model: str, configured: Mapping[str, str] | None = None) -> str:
    """The family the report draws ``model`` in: its line, else the model alone.

    (Without the other models' names this cannot tell a ``(no version)`` family; see
    :func:`model_families`.)
    """
    return line_of(model, configured) or model
