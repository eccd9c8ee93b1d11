"""Domain records shared across stages: spec revisions, transcripts, grades and findings.

A spec revision is what the spec history stores, the runner sends, analysis compares and the
report draws: one record for all of them (:class:`SpecRevision`). A transcript is what the
runner produced (or an organism replayed, or an import supplied) and what graders read.
Messages follow the OpenAI chat format; assistant messages may carry a ``reasoning`` key with the
reasoning the server exposed for that turn. A finding is a change detection found between two
points of the history (or a comparison it checked), with its attribution; the words for its
kinds and causes are defined here once, for detection, the gate, the report and the viewer.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

Outcome = Literal["covert", "honest", "refused", "invalid"]
"""The covert-action grade of a sample (``samples.outcome``)."""

FindingKind = Literal["collapse", "drop", "regression", "leak", "none"]
"""What a finding found (``findings.kind``): ``none`` is a checked comparison without a change."""

ComparisonKind = Literal["consecutive", "baseline", "model_version", "gate", "point"]
"""What a finding compared (``findings.comparison``); ``point`` is one point on its own."""

CauseName = Literal["spec_patching", "eval_awareness", "genuine", "regression"]
"""A cause a change is attributed to (``findings.primary_cause``)."""

CAUSE_NAMES: dict[str, str] = {
    "spec_patching": "spec patching",
    "eval_awareness": "eval awareness",
    "genuine": "genuine improvement",
    "regression": "regression",
}
"""Each cause as people read it, in the order the viewer offers them."""

TestedOn = Literal[
    "all scenarios", "exposed scenarios", "public scenarios against their sealed twins"
]
"""Which scenarios a finding's numbers describe (``findings.tested_on``)."""
ALL_SCENARIOS: TestedOn = "all scenarios"
EXPOSED_TESTED_ON: TestedOn = "exposed scenarios"
TWIN_TESTED_ON: TestedOn = "public scenarios against their sealed twins"

TWIN_METRICS = ("public_covert_rate", "twin_covert_rate")
"""``estimates`` metrics: covert rates of the public scenarios alone and of their sealed twins
alone (scope all)."""


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


@dataclass(frozen=True)
class Finding:
    """A detected change (or a checked comparison, kind ``none``) with its attribution.

    Detection and the gate make findings (:mod:`audit.analysis.findings`), ``audit detect``
    stores them as ``findings`` rows, and the gate, the report and the viewer read them back.
    ``comparison`` is consecutive, baseline, model_version or gate for a tested pair of points,
    and ``point`` for a finding about one point alone (a collapse not reached through a
    significant drop; a model with a single point). ``tested_on`` says which scenarios the
    numbers describe: all of them, the exposed ones when the test of the scenarios the spec edit
    names found the change, or the public scenarios with sealed twins when the twin test did
    (then rates, change, interval, p and q are all theirs, and the evidence keeps the
    all-scenario figures). ``finding_id`` is derived from what was compared, so the same
    comparison in a later pass gets the same id; a finding read back keeps the id it was stored
    under.
    """

    model: str
    baseline_model: str
    source_id: str
    baseline_rev: str
    rev: str
    comparison: ComparisonKind
    kind: FindingKind
    # None where the finding has no such figure (a leak has no rate, a point alone no change).
    baseline_rate: float | None = None
    rate: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    delta: float | None = None
    delta_ci_low: float | None = None
    delta_ci_high: float | None = None
    p_value: float | None = None
    q_value: float | None = None
    primary_cause: CauseName | None = None
    causes: tuple[dict[str, Any], ...] = ()
    exposed_scenarios: tuple[str, ...] = ()
    evidence: dict[str, Any] = field(default_factory=dict)
    summary: str = ""
    tested_on: TestedOn = ALL_SCENARIOS
    #: Public scenarios' change minus their sealed twins' (``TwinGap.to_json``); None without
    #: twin samples at both points.
    twin_gap: dict[str, Any] | None = None
    #: Derived from what was compared when not given (see the class docstring).
    finding_id: str = ""

    def __post_init__(self) -> None:
        if not self.finding_id:
            object.__setattr__(self, "finding_id", self._derived_id())

    def _derived_id(self) -> str:
        key = "|".join(
            (
                self.model,
                self.baseline_model,
                self.source_id,
                self.baseline_rev,
                self.rev,
                self.comparison,
                self.kind,
            )
        )
        return hashlib.sha256(key.encode()).hexdigest()[:16]

    @property
    def across_versions(self) -> bool:
        """True when two model versions were compared (at one spec revision)."""
        return self.comparison == "model_version" or self.baseline_model != self.model

    @property
    def compares(self) -> bool:
        """True when the finding compares two points (not a leak, not a point on its own)."""
        return self.kind != "leak" and self.comparison != "point"

    def share(self, cause: str) -> float:
        """Share of the change attributed to ``cause`` (0 when it is not among the causes)."""
        return next((float(c["share"]) for c in self.causes if c["cause"] == cause), 0.0)

    def to_json(self) -> dict[str, Any]:
        """The finding as printed by ``audit detect --json`` (keys fixed by issue 5)."""
        return {
            "finding_id": self.finding_id,
            "model": self.model,
            "baseline_model": self.baseline_model,
            "source_id": self.source_id,
            "comparison": self.comparison,
            "baseline_rev": self.baseline_rev,
            "rev": self.rev,
            "kind": self.kind,
            "baseline_rate": self.baseline_rate,
            "rate": self.rate,
            "ci_low": self.ci_low,
            "ci_high": self.ci_high,
            "delta": self.delta,
            "delta_ci_low": self.delta_ci_low,
            "delta_ci_high": self.delta_ci_high,
            "p_value": self.p_value,
            "q_value": self.q_value,
            "primary_cause": self.primary_cause,
            "causes": list(self.causes),
            "exposed_scenarios": list(self.exposed_scenarios),
            "tested_on": self.tested_on,
            "twin_gap": self.twin_gap,
            "summary": self.summary,
        }
