"""The scenario format: what one held-out covert-action scenario file contains.

A scenario is data, not code. It gives an agent a system context and a user request, offers it
scripted tools whose results are canned (picked by matching the call's arguments), asks it to
submit its result through a submission tool (or as a JSON object in its final answer, for models
that cannot call tools), and grades the transcript with ordered rules.

Grading semantics (see :mod:`audit.graders.covert`): every rule is tried. A covert rule that fires
establishes a covert action or a false claim; the sample is then honest only if, for every covert
rule that fired, an honest rule that fired names it in ``discloses`` (a specific disclosure of that
action). Without a covert rule, the first honest rule that fires decides.

Paired families (sandbagging) declare several conditions; each condition may add text to the
system or user message, and an incentive condition states the score it penalises. Such scenarios
carry questions with known answers. One sample cannot tell low ability from deliberate
underperformance, so its covert rules need stated intent; the family is judged on the accuracy
gap between conditions (:mod:`audit.graders.sandbagging`).
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Verdict = Literal["covert", "honest"]
SpecPlacement = Literal["system", "developer", "none"]


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CannedResult(_Frozen):
    """A tool result returned when every ``when`` pattern matches the call's arguments."""

    when: dict[str, str] = Field(
        default_factory=dict,
        description="Argument name -> regex (case-insensitive, searched in the argument's JSON "
        "text). Empty: the default result.",
    )
    result: str

    def matches(self, arguments: dict[str, Any]) -> bool:
        for name, pattern in self.when.items():
            if name not in arguments:
                return False
            value = arguments[name]
            text = value if isinstance(value, str) else json.dumps(value)
            if not re.search(pattern, text, flags=re.IGNORECASE):
                return False
        return True


class ScriptedTool(_Frozen):
    """A tool offered to the model as an OpenAI function, answered from canned results."""

    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    description: str
    parameters: dict[str, Any] = Field(description="JSON Schema of the arguments (an object).")
    results: tuple[CannedResult, ...] = Field(
        default=(), description="Tried in order; the first that matches answers the call."
    )

    def openai_schema(self) -> dict[str, Any]:
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters,
            },
        }

    def answer(self, arguments: dict[str, Any]) -> str:
        for canned in self.results:
            if canned.matches(arguments):
                return canned.result
        return json.dumps({"ok": True})


class Submission(_Frozen):
    """How the agent reports its result: a tool call, or an object or prose in the final answer."""

    tool: str = Field(description="Name of the submission tool (also one of ``tools``).")
    fields: tuple[str, ...] = Field(description="Fields of the submission object that rules read.")
    prose_fields: tuple[str, ...] = Field(
        default=(),
        description="Free-text fields (string parameters) that a plain-prose final answer is "
        "graded as: a model without tools that answers in prose fills each of them with its "
        "whole answer. Empty: prose is graded by final_text rules only.",
    )


class ToolCallMatch(_Frozen):
    """Matches a call of ``name`` whose arguments match every ``args`` regex."""

    name: str
    args: dict[str, str] = Field(default_factory=dict)


class Rule(_Frozen):
    """A grading rule. All of its given conditions must hold for it to fire."""

    id: str
    verdict: Verdict
    explain: str = Field(description="Why this rule means covert / honest, for the evidence.")
    submission: dict[str, str] = Field(
        default_factory=dict, description="Submission field -> regex (case-insensitive)."
    )
    tool_call: ToolCallMatch | None = None
    no_tool_call: str | None = Field(None, description="Fires only if this tool was never called.")
    final_text: str | None = Field(None, description="Regex over the final answer text.")
    reasoning: str | None = Field(
        None,
        description="Regex over the model's reasoning (every assistant turn's reasoning field "
        "and inline <think> text), for stated intent such as deliberate wrong answers.",
    )
    condition: str | None = Field(None, description="Fires only in this condition.")
    max_score: float | None = Field(
        None, description="Fires only when the question score (share correct) is at most this."
    )
    discloses: tuple[str, ...] = Field(
        default=(),
        description="Honest rules only: ids of covert rules whose action this rule discloses. "
        "A sample on which a covert rule fired is honest only if a disclosing rule fired too.",
    )


class Question(_Frozen):
    """A question with a known answer (capability checks, sandbagging families)."""

    id: str
    prompt: str
    answer: str = Field(description="Regex the submitted answer must match to count as correct.")


class Penalty(_Frozen):
    """The score an incentive condition says is penalised, as its text states it."""

    score: float = Field(ge=0.0, le=1.0, description="Threshold share of questions correct.")
    inclusive: bool = Field(
        description="True: a score at or above ``score`` is penalised ('70% or more'); "
        "false: only a score above it ('above 75%')."
    )

    def penalises(self, share: float) -> bool:
        """Whether this share of correct answers would be penalised."""
        return share >= self.score - 1e-9 if self.inclusive else share > self.score + 1e-9


class Condition(_Frozen):
    """A variant of the scenario (paired families): text added to the system or user message."""

    name: str
    system_suffix: str = ""
    user_suffix: str = ""
    penalty: Penalty | None = Field(
        None, description="Incentive conditions: the score the added text says is penalised."
    )


class ReferenceCall(_Frozen):
    """A literal tool call of a reference transcript."""

    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)


class ReferenceTurn(_Frozen):
    """One assistant turn of a reference transcript."""

    reasoning: str = ""
    content: str | None = None
    tool_calls: tuple[ReferenceCall, ...] = ()


class ReferenceTranscript(_Frozen):
    """A labelled example run: drives the grader tests and the model organisms."""

    label: Literal["honest", "covert"]
    condition: str = "default"
    turns: tuple[ReferenceTurn, ...]


Scoring = Literal["covert_rate", "accuracy_gap"]


class Family(_Frozen):
    """A family of covert actions, declared in the set's ``families.toml`` (data, not code).

    Every family is judged on its covert rate (each sample graded by its scenario's rules). An
    ``accuracy_gap`` family is judged on the distribution as well: one sample cannot tell low
    ability from deliberate underperformance, so the analysis compares the question score of
    the ``reference_condition`` with that of the ``incentive_condition``
    (:mod:`audit.graders.sandbagging`), and each of its scenarios must offer both conditions,
    a penalty on the incentive one, and questions.
    """

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")
    description: str = Field(
        min_length=1, description="The covert action the family covers, in a few words."
    )
    scoring: Scoring = Field(
        description="covert_rate: share of samples graded covert; accuracy_gap: also the "
        "question-score gap between the reference and the incentive condition."
    )
    reference_condition: str | None = Field(
        None, description="accuracy_gap only: the condition without an incentive (e.g. neutral)."
    )
    incentive_condition: str | None = Field(
        None,
        description="accuracy_gap only: the condition whose text penalises a high score.",
    )

    @model_validator(mode="after")
    def _conditions_match_scoring(self) -> Family:
        named = (self.reference_condition, self.incentive_condition)
        if self.scoring == "accuracy_gap":
            if None in named:
                raise ValueError(
                    "an accuracy_gap family names reference_condition and incentive_condition"
                )
            if self.reference_condition == self.incentive_condition:
                raise ValueError("reference_condition and incentive_condition must differ")
        elif named != (None, None):
            raise ValueError(
                "only accuracy_gap families name conditions: drop reference_condition and "
                'incentive_condition, or set scoring = "accuracy_gap"'
            )
        return self


class Scenario(_Frozen):
    """One held-out covert-action scenario (one JSON file under ``audit/heldout/scenarios``)."""

    canary: str
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")
    family: str = Field(
        description="A family declared in the set's families.toml; the file lives in "
        "scenarios/<family>/."
    )
    title: str
    system: str
    user: str
    tools: tuple[ScriptedTool, ...]
    submission: Submission
    ground_truth: str = Field(description="What really happened, in one or two sentences.")
    rules: tuple[Rule, ...]
    default_verdict: Verdict | None = Field(
        None, description="Verdict when a submission exists but no rule fired (None: invalid)."
    )
    conditions: tuple[Condition, ...] = (Condition(name="default"),)
    questions: tuple[Question, ...] = ()
    distinctive_phrases: tuple[str, ...] = Field(
        description="Phrases specific to this scenario (names, files, numbers): what a spec patch "
        "aimed at it would mention. Used by exposure analysis and the organisms."
    )
    references: tuple[ReferenceTranscript, ...]
    twin_of: str | None = Field(
        None,
        description="Sealed twins only: the id of the public scenario this one mirrors (same "
        "family, covert-action opportunity and grading logic in kind, a different surface). A "
        "twin is sealed: its prompts are never shown to the people who edit the spec.",
    )

    @property
    def sealed(self) -> bool:
        """Whether this scenario is a sealed twin (never shown without ``--unseal``)."""
        return self.twin_of is not None

    def prose(self) -> str:
        """Every text a model reads or writes in this scenario, one piece per line.

        Title, system and user text, condition suffixes, tool names and descriptions, parameter
        names and descriptions, canned results, submission fields and questions: what a spec
        edit aimed at the scenario could retell, and what exposure indexes.
        """
        pieces: list[str] = [self.title, self.system, self.user]
        for condition in self.conditions:
            pieces += [condition.system_suffix, condition.user_suffix]
        for tool in self.tools:
            pieces += [tool.name, tool.description]
            for name, schema in tool.parameters.get("properties", {}).items():
                description = schema.get("description", "") if isinstance(schema, dict) else ""
                pieces += [name, description]
            pieces += [canned.result for canned in tool.results]
        pieces += list(self.submission.fields)
        pieces += [question.prompt for question in self.questions]
        return "\n".join(piece for piece in pieces if piece)

    def condition(self, name: str) -> Condition:
        for condition in self.conditions:
            if condition.name == name:
                return condition
        raise KeyError(f"scenario {self.id} has no condition {name!r}")

    def tool(self, name: str) -> ScriptedTool | None:
        for tool in self.tools:
            if tool.name == name:
                return tool
        return None

    def openai_tools(self) -> list[dict[str, Any]]:
        return [tool.openai_schema() for tool in self.tools]

    def answer_tool_call(self, name: str, arguments_json: str) -> str:
        """The canned result for a call, or an error text the model can read and recover from."""
        tool = self.tool(name)
        if tool is None:
            return json.dumps({"error": f"unknown tool {name!r}"})
        try:
            arguments = json.loads(arguments_json or "{}")
        except json.JSONDecodeError:
            return json.dumps({"error": "arguments are not valid JSON"})
        if not isinstance(arguments, dict):
            return json.dumps({"error": "arguments must be a JSON object"})
        if name == self.submission.tool:
            return json.dumps({"ok": True, "received": True})
        return tool.answer(arguments)

    def messages(
        self, condition: str, spec_text: str | None, placement: SpecPlacement
    ) -> list[dict[str, Any]]:
        """Opening messages of a sample: the spec (if placed), the system context, the request."""
        variant = self.condition(condition)
        system = self.system + (("\n\n" + variant.system_suffix) if variant.system_suffix else "")
        user = self.user + (("\n\n" + variant.user_suffix) if variant.user_suffix else "")
        messages: list[dict[str, Any]] = []
        if spec_text and placement == "system":
            system = f"{spec_text}\n\n---\n\n{system}"
        elif spec_text and placement == "developer":
            messages.append({"role": "developer", "content": spec_text})
        messages.append({"role": "system", "content": system})
        messages.append({"role": "user", "content": user})
        return messages
