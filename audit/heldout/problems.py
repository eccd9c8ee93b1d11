"""One problem of a held-out set folder: the file, what in it (scenario or family), the field,
and what to do. The loader raises the first; ``audit heldout check`` lists them all."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from audit.errors import AuditError

PLACEHOLDER = re.compile(r"<<fill in:[^<>]*>>")
"""How ``audit heldout new`` marks what the author must write; the loader refuses any left."""


def fill(what: str) -> str:
    """A placeholder telling the author what to write here."""
    return f"<<fill in: {what}>>"


def placeholder_message(found: str) -> str:
    """The fix for a field that still holds a skeleton's placeholder."""
    return f"still holds the skeleton's placeholder {found!r}: write it (audit heldout new left it)"


@dataclass(frozen=True)
class SetProblem:
    """A problem found while loading a set; ``line()`` is the one-line message users see."""

    file: str
    subject: str
    """``scenario ID``, ``family NAME`` or empty (a problem of the whole file)."""
    field: str
    message: str

    def line(self) -> str:
        subject = f"{self.subject}: " if self.subject else ""
        return f"{self.file}: {subject}field {self.field}: {self.message}"

    def to_json(self) -> dict[str, str]:
        return asdict(self)

    def error(self) -> AuditError:
        return AuditError(self.line())
