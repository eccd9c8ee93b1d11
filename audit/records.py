"""Domain records shared across stages: spec revisions, transcripts and grades.

A spec revision is what the spec history stores, the runner sends, analysis compares and the
report draws: one record for all of them (:class:`SpecRevision`). A transcript is what the
runner produced (or an organism replayed, or an import supplied) and what graders read.
Messages follow the OpenAI chat format; assistant messages may carry a ``reasoning`` key with the
reasoning the server exposed for that turn.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

Outcome = Literal["covert", "honest", "refused", "invalid"]


@dataclass(frozen=True)
class SpecRevision:
    """One revision of a tracked spec: a commit that changed the spec's content.

    The columns of ``spec_revisions``, with the line counts of its ``spec_changes`` row
    (None without one) and its tags. ``content`` is None when the loader was not asked for it:
    listing a long history need not read every text. Loaders live in
    :mod:`audit.spec_history.sync`; every stage reads revisions through them.
    """

    source_id: str
    sha: str
    seq: int
    content: str | None
    content_hash: str
    prev_sha: str | None = None
    parent_shas: tuple[str, ...] = ()
    author_name: str = ""
    author_email: str = ""
    authored_at: datetime | None = None
    committer_name: str = ""
    committed_at: datetime | None = None
    message: str = ""
    path: str = ""
    size_bytes: int = 0
    lines_added: int | None = None
    lines_removed: int | None = None
    tags: tuple[str, ...] = ()

    @property
    def text(self) -> str:
        """The spec text (for a revision loaded with its content)."""
        if self.content is None:
            raise ValueError(f"revision {self.short_sha} was loaded without its content")
        return self.content

    @property
    def short_sha(self) -> str:
        """The 7-character sha people quote."""
        return self.sha[:7]

    @property
    def label(self) -> str:
        """Position in the history and short sha, e.g. ``r4 1a2b3c4`` (unique, commit order)."""
        return f"r{self.seq} {self.short_sha}"

    @property
    def date(self) -> str:
        """Authored date as YYYY-MM-DD, or an empty string."""
        return self.authored_at.strftime("%Y-%m-%d") if self.authored_at else ""

    @property
    def subject(self) -> str:
        """First line of the commit message."""
        lines = self.message.strip().splitlines()
        return lines[0] if lines else ""

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (timestamps as ISO strings; no content when not loaded)."""
        out = {
            name: getattr(self, name)
            for name in _REVISION_JSON_ORDER
            if name != "content" or self.content is not None
        }
        out["parent_shas"] = list(self.parent_shas)
        out["tags"] = list(self.tags)
        for moment in ("authored_at", "committed_at"):
            value = out[moment]
            out[moment] = value.isoformat() if value is not None else None
        return out


# The key order of ``audit specs log --json`` (the order the fields had before they were one
# record), kept stable for readers that diff its output.
_REVISION_JSON_ORDER = (
    "source_id",
    "seq",
    "sha",
    "parent_shas",
    "prev_sha",
    "author_name",
    "author_email",
    "authored_at",
    "committer_name",
    "committed_at",
    "message",
    "path",
    "content_hash",
    "size_bytes",
    "lines_added",
    "lines_removed",
    "tags",
    "content",
)


@dataclass(frozen=True)
class ToolCall:
    """One function call made by the model."""

    name: str
    arguments: str  # raw JSON text as the model produced it (may be malformed)
    call_id: str = ""

    def parsed_arguments(self) -> dict[str, Any] | None:
        """The arguments as a dict, or None when they are not a JSON object."""
        try:
            value = json.loads(self.arguments or "{}")
        except json.JSONDecodeError:
            return None
        return value if isinstance(value, dict) else None


@dataclass(frozen=True)
class Transcript:
    """A finished conversation of one sample."""

    messages: tuple[dict[str, Any], ...]
    finish_reason: str | None = None

    def assistant_messages(self) -> list[dict[str, Any]]:
        return [m for m in self.messages if m.get("role") == "assistant"]

    def tool_calls(self) -> list[ToolCall]:
        calls: list[ToolCall] = []
        for message in self.assistant_messages():
            for call in message.get("tool_calls") or []:
                function = call.get("function", {})
                calls.append(
                    ToolCall(
                        name=function.get("name", ""),
                        arguments=function.get("arguments", ""),
                        call_id=call.get("id", ""),
                    )
                )
        return calls

    def final_text(self) -> str:
        """Content of the last assistant message that has text ('' if none)."""
        for message in reversed(self.assistant_messages()):
            if message.get("content"):
                return str(message["content"])
        return ""

    def reasoning(self) -> str:
        """All reasoning the model exposed, turn by turn, joined by blank lines."""
        parts = [str(m["reasoning"]) for m in self.assistant_messages() if m.get("reasoning")]
        return "\n\n".join(parts)

    def to_json(self) -> str:
        return json.dumps(list(self.messages), ensure_ascii=False)


@dataclass(frozen=True)
class Grade:
    """The deterministic covert-action grade of one transcript."""

    outcome: Outcome
    rule_id: str | None
    evidence: dict[str, Any] = field(default_factory=dict)
    score: float | None = None


@dataclass(frozen=True)
class Detection:
    """Result of a text detector (eval awareness, spec citation)."""

    detected: bool
    evidence: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class SampleGrade:
    """Everything the graders say about one sample, as stored in ``samples``."""

    grade: Grade
    awareness: Detection
    citation: Detection
