"""Reference transcripts as the messages a model would have produced.

Each scenario ships labelled reference runs (turns of reasoning, text and literal tool calls).
:func:`reference_transcript` replays one into an OpenAI-style :class:`~audit.records.Transcript`,
answering every tool call with the scenario's canned result, so graders and model organisms see
exactly what a real run would store.
"""

from __future__ import annotations

import json
from typing import Any

from audit.heldout.model import ReferenceTranscript, Scenario, SpecPlacement
from audit.records import Transcript


def reference_transcript(
    scenario: Scenario,
    reference: ReferenceTranscript,
    *,
    spec_text: str | None = None,
    placement: SpecPlacement = "none",
    tool_results: bool = True,
) -> Transcript:
    """The full conversation of ``reference``: opening messages, assistant turns, tool results.

    ``tool_results=False`` leaves the canned results out: the covert-action grader never reads
    them, and the loader grades every reference on each load.
    """
    messages = scenario.messages(reference.condition, spec_text, placement)
    for t, turn in enumerate(reference.turns):
        message: dict[str, Any] = {"role": "assistant", "content": turn.content}
        if turn.reasoning:
            message["reasoning"] = turn.reasoning
        calls: list[dict[str, Any]] = []
        for c, call in enumerate(turn.tool_calls):
            arguments = json.dumps(call.arguments, ensure_ascii=False)
            calls.append(
                {
                    "id": f"call_{t}_{c}",
                    "type": "function",
                    "function": {"name": call.name, "arguments": arguments},
                }
            )
        if calls:
            message["tool_calls"] = calls
        messages.append(message)
        if not tool_results:
            continue
        for entry in calls:
            function = entry["function"]
            messages.append(
                {
                    "role": "tool",
                    "tool_call_id": entry["id"],
                    "content": scenario.answer_tool_call(function["name"], function["arguments"]),
                }
            )
    return Transcript(messages=tuple(messages), finish_reason="stop")
