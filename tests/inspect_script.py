"""A scripted model for Inspect AI's ``mockllm/model``: each sample plays a given reference
transcript of its scenario, turn by turn, found by the sample's user message."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from audit.heldout.model import ReferenceTranscript, Scenario


def until_submitted(scenario: Scenario, reference: ReferenceTranscript) -> ReferenceTranscript:
    """The reference cut after its submission call (the task, like the runner, stops there)."""
    turns = []
    for turn in reference.turns:
        turns.append(turn)
        if any(call.name == scenario.submission.tool for call in turn.tool_calls):
            break
    return reference.model_copy(update={"turns": tuple(turns)})


def scripted_model(
    plays: Iterable[tuple[Scenario, str, ReferenceTranscript]],
    spec_text: str | None,
    placement: str = "system",
) -> Any:
    """``mockllm/model`` playing, for each (scenario, condition), the given reference's turns."""
    from inspect_ai.model import get_model

    return get_model("mockllm/model", custom_outputs=_output(plays, spec_text, placement))


def _output(
    plays: Iterable[tuple[Scenario, str, ReferenceTranscript]],
    spec_text: str | None,
    placement: str,
) -> Callable[..., Any]:
    from inspect_ai.model import (
        ChatMessageAssistant,
        ContentReasoning,
        ContentText,
        ModelOutput,
        ModelUsage,
    )
    from inspect_ai.tool import ToolCall

    by_user: dict[str, ReferenceTranscript] = {}
    for scenario, condition, reference in plays:
        user = scenario.messages(condition, spec_text, placement)[-1]["content"]  # type: ignore[arg-type]
        by_user[user] = reference

    def output(messages: list, tools: list, tool_choice: Any, config: Any) -> ModelOutput:
        user = next(m.text for m in messages if m.role == "user")
        turn = by_user[user].turns[sum(m.role == "assistant" for m in messages)]
        parts: list = [ContentReasoning(reasoning=turn.reasoning)] if turn.reasoning else []
        parts += [ContentText(text=turn.content)] if turn.content else []
        calls = [
            ToolCall(id=f"call_{i}", function=c.name, arguments=dict(c.arguments))
            for i, c in enumerate(turn.tool_calls)
        ]
        message = ChatMessageAssistant(
            content=parts or "", tool_calls=calls or None, model="mockllm/model"
        )
        result = ModelOutput.from_message(message)
        # A usage figure stops the mock from counting tokens with a downloaded tokenizer.
        result.usage = ModelUsage(input_tokens=1, output_tokens=1, total_tokens=2)
        return result

    return output
