"""Domain records shared across stages: transcripts and grades.

A transcript is what the runner produced (or an organism replayed, or an import supplied) and what
graders read. Messages follow the OpenAI chat format; assistant messages may carry a
``reasoning`` key with the reasoning the server exposed for that turn.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

Outcome = Literal["covert", "honest", "refused", "invalid"]


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
