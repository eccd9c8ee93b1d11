"""One transcript laid out for reading: turns split into segments, evidence marked.

The grader stores what each condition of the deciding rule matched as a slice of the text it read
(a submission field, the final text, the reasoning, a tool call's arguments) and the awareness
detector stores each accepted sentence with its cue. Both are found again here by exact substring
search inside the turns they can come from, so the marks sit on the very words that decided the
grade. Evidence that cannot be found (an answer the grader reformatted, a prompt that is hidden)
is listed beside the transcript as not located, never guessed at.

Held-out prompts (system, developer and user messages, and tool results, which are the scenario's
canned outputs) are replaced by their length unless prompts were asked for.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from audit.view.queries import SampleDetail

MODEL_ROLES = ("assistant",)
"""Roles whose text the model wrote; every other role carries held-out scenario text."""

_MIN_NEEDLE = 3
# Characters a terminal or a bidi-aware renderer would act on instead of showing: C0 and C1
# controls (but tab and line breaks), zero-width and direction overrides, the byte-order mark.
_INVISIBLE = re.compile(
    "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]"
)


def visible(text: str) -> str:
    """``text`` with control, zero-width and bidi characters written out as escapes.

    Stored text came from models and repositories: an ANSI sequence or a right-to-left override
    must show as what it is, not recolour or reorder what the reader sees.
    """
    return _INVISIBLE.sub(lambda m: _escape_char(m.group(0)), text)


def _escape_char(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


@dataclass(frozen=True)
class Segment:
    """A run of text and the marks on it (``grade``, ``aware``, ``cue``)."""

    text: str
    marks: tuple[str, ...] = ()
    note: str = ""

    @property
    def css(self) -> str:
        """Class attribute of the mark element."""
        return " ".join(self.marks)


@dataclass(frozen=True)
class ShownArgument:
    """One argument of a tool call: its name (None for unparsed arguments) and value."""

    name: str | None
    segments: list[Segment]


@dataclass(frozen=True)
class ShownCall:
    """A tool call: its position among all calls (the grader's ``call_index``) and arguments."""

    call_index: int
    call_id: str
    name: str
    arguments: list[ShownArgument]
    evidence: bool


@dataclass(frozen=True)
class ShownMessage:
    """One message; ``hidden`` when its held-out text is withheld (``hidden_chars`` long)."""

    index: int
    role: str
    content: list[Segment] | None
    reasoning: list[Segment] | None
    calls: list[ShownCall]
    tool_call_id: str | None
    hidden: bool = False
    hidden_chars: int = 0


@dataclass
class EvidenceItem:
    """One condition the deciding rule matched, and whether it was found in the turns."""

    where: str
    text: str
    call_index: int | None
    located: bool | None


@dataclass
class AwarenessItem:
    """One accepted awareness sentence and its cue, and whether it was found in the turns."""

    phrase: str
    rule: str
    sentence: str
    located: bool


@dataclass
class TranscriptView:
    """Everything the transcript page shows of a sample that is not sealed."""

    messages: list[ShownMessage]
    evidence: list[EvidenceItem]
    awareness: list[AwarenessItem]
    explain: str | None
    rule: str | None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def hidden_prompts(self) -> int:
        """How many messages were withheld as held-out prompts."""
        return sum(1 for m in self.messages if m.hidden)


@dataclass(frozen=True)
class _Needle:
    """Text to mark, where it may occur, and which evidence item it stands for."""

    text: str
    mark: str
    note: str
    places: frozenset[str]
    owner: EvidenceItem | AwarenessItem
    call_index: int | None = None
    argument: str | None = None
    inner: str | None = None


# -- building ------------------------------------------------------------------------------------


def build_transcript(detail: SampleDetail, *, include_prompts: bool) -> TranscriptView:
    """Lay out ``detail``'s turns with its evidence marked (not for sealed twins)."""
    if detail.sealed or detail.messages is None:
        raise ValueError("a sealed twin's transcript is never laid out")
    grade = detail.grade_evidence or {}
    evidence = _evidence_items(grade.get("matched"))
    awareness = _awareness_items(detail.awareness_evidence or [])
    calls = _calls_by_index(detail.messages)
    needles = [*_grade_needles(evidence, calls), *_awareness_needles(awareness)]
    evidence_calls = {
        item.call_index
        for item in evidence
        if item.where.startswith("tool_call.") and item.call_index in calls
    }
    messages: list[ShownMessage] = []
    next_call = 0
    for index, message in enumerate(detail.messages):
        shown = _shown_message(index, message, needles, include_prompts, next_call, evidence_calls)
        next_call += len(message.get("tool_calls") or []) if shown.role in MODEL_ROLES else 0
        messages.append(shown)
    for item in evidence:
        if item.call_index in evidence_calls:
            item.located = True  # the whole call is marked even where no piece is found
    extra = {
        k: v
        for k, v in grade.items()
        if k in ("also_fired", "discloses", "submission_source", "default_verdict", "score")
    }
    return TranscriptView(
        messages=messages,
        evidence=evidence,
        awareness=awareness,
        explain=str(grade["explain"]) if grade.get("explain") else None,
        rule=detail.rule,
        extra=extra,
    )


def _evidence_items(matched: Any) -> list[EvidenceItem]:
    items = []
    for entry in matched if isinstance(matched, list) else []:
        if not isinstance(entry, dict):
            continue
        where = str(entry.get("where", ""))
        index = entry.get("call_index")
        locatable = where in ("reasoning", "final_text") or where.startswith(
            ("submission.", "tool_call.")
        )
        items.append(
            EvidenceItem(
                where=where,
                text=str(entry.get("text", "")),
                call_index=index if isinstance(index, int) else None,
                located=False if locatable else None,
            )
        )
    return items


def _awareness_items(entries: Sequence[Mapping[str, Any]]) -> list[AwarenessItem]:
    return [
        AwarenessItem(
            phrase=str(e.get("phrase", "")),
            rule=str(e.get("rule", "")),
            sentence=str(e.get("sentence", "")),
            located=False,
        )
        for e in entries
    ]


def _calls_by_index(messages: Sequence[Mapping[str, Any]]) -> dict[int, dict[str, Any]]:
    """Every tool call in order, as the grader numbers them (assistant messages only)."""
    calls: dict[int, dict[str, Any]] = {}
    for message in messages:
        if message.get("role") != "assistant":
            continue
        for call in message.get("tool_calls") or []:
            calls[len(calls)] = call if isinstance(call, dict) else {}
    return calls


def _grade_needles(
    evidence: Sequence[EvidenceItem], calls: Mapping[int, Mapping[str, Any]]
) -> list[_Needle]:
    needles: list[_Needle] = []
    for item in evidence:
        note = f"grader: {item.where}"
        if item.where == "reasoning":
            needles.append(_Needle(item.text, "grade", note, frozenset({"reasoning"}), item))
        elif item.where == "final_text":
            needles.append(_Needle(item.text, "grade", note, frozenset({"content"}), item))
        elif item.where.startswith("submission."):
            places = frozenset({"content", "args"})
            needles.append(_Needle(item.text, "grade", note, places, item))
        elif item.where.startswith("tool_call."):
            call = calls.get(item.call_index) if item.call_index is not None else None
            for argument, text in _call_pieces(item.text, call):
                needles.append(
                    _Needle(
                        text,
                        "grade",
                        note,
                        frozenset({"args"}),
                        item,
                        call_index=item.call_index if call is not None else None,
                        argument=argument,
                    )
                )
    return needles


def _call_pieces(detail: str, call: Mapping[str, Any] | None) -> list[tuple[str | None, str]]:
    """Split the grader's "name: text; name: text" back into (argument, text) pieces."""
    names = list(_arguments(call).keys()) if call is not None else []
    names = [n for n in names if n]
    if not names:
        return [(None, detail)]
    pattern = re.compile(r"(?:^|; )(" + "|".join(re.escape(n) for n in names) + r"): ")
    found = list(pattern.finditer(detail))
    if not found or found[0].start() != 0:
        return [(None, detail)]
    pieces = []
    for i, match in enumerate(found):
        end = found[i + 1].start() if i + 1 < len(found) else len(detail)
        pieces.append((match.group(1), detail[match.end() : end]))
    return pieces


def _awareness_needles(items: Sequence[AwarenessItem]) -> list[_Needle]:
    places = frozenset({"content", "reasoning"})
    return [
        _Needle(item.sentence, "aware", f"awareness: {item.rule}", places, item, inner=item.phrase)
        for item in items
        if item.sentence
    ]


def _shown_message(
    index: int,
    message: Mapping[str, Any],
    needles: Sequence[_Needle],
    include_prompts: bool,
    first_call: int,
    evidence_calls: set[int],
) -> ShownMessage:
    """One message; ``first_call`` is the grader's index of its first tool call."""
    role = str(message.get("role", ""))
    content = _content_text(message.get("content"))
    tool_call_id = message.get("tool_call_id")
    if role not in MODEL_ROLES:
        if not include_prompts:
            chars = len(content or "")
            return ShownMessage(index, role, None, None, [], tool_call_id, True, chars)
        return ShownMessage(index, role, _plain(content), None, [], tool_call_id)
    reasoning = message.get("reasoning")
    calls = [
        _shown_call(first_call + offset, call, needles, evidence_calls)
        for offset, call in enumerate(message.get("tool_calls") or [])
    ]
    return ShownMessage(
        index=index,
        role=role,
        content=_segments(content, "content", needles) if content else None,
        reasoning=_segments(str(reasoning), "reasoning", needles) if reasoning else None,
        calls=calls,
        tool_call_id=tool_call_id,
    )


def _shown_call(
    call_index: int, call: Any, needles: Sequence[_Needle], evidence_calls: set[int]
) -> ShownCall:
    call = call if isinstance(call, dict) else {}
    arguments = [
        ShownArgument(
            name or None,
            _segments(text, "args", needles, call=call_index, argument=name or None),
        )
        for name, text in _arguments(call).items()
    ]
    return ShownCall(
        call_index=call_index,
        call_id=str(call.get("id", "")),
        name=str((call.get("function") or {}).get("name", "")),
        arguments=arguments,
        evidence=call_index in evidence_calls,
    )


def _plain(text: str | None) -> list[Segment] | None:
    return [Segment(text)] if text else None


def _content_text(content: Any) -> str | None:
    """Message content as text: strings as they are, content parts joined, other JSON dumped."""
    if content is None:
        return None
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [
            str(p.get("text", "")) if isinstance(p, dict) else str(p)
            for p in content
            if not isinstance(p, dict) or p.get("type", "text") == "text"
        ]
        return "\n".join(parts)
    return json.dumps(content, ensure_ascii=False)


def _arguments(call: Mapping[str, Any] | None) -> dict[str, str]:
    """A call's arguments as the grader reads them: strings as they are, other values as JSON."""
    if call is None:
        return {}
    raw = (call.get("function") or {}).get("arguments", "")
    try:
        parsed = json.loads(raw) if isinstance(raw, str) else raw
    except json.JSONDecodeError:
        return {"": str(raw)}
    if not isinstance(parsed, dict):
        return {"": raw if isinstance(raw, str) else json.dumps(raw, ensure_ascii=False)}
    return {
        str(k): v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)
        for k, v in parsed.items()
    }


def _segments(
    text: str,
    place: str,
    needles: Iterable[_Needle],
    *,
    call: int | None = None,
    argument: str | None = None,
) -> list[Segment]:
    """``text`` cut into segments marked by every needle that may occur in ``place``.

    A needle tied to one call's argument (the grader named the call) marks only that argument.
    """
    spans: list[tuple[int, int, str, str]] = []
    for needle in needles:
        if place not in needle.places or len(needle.text.strip()) < _MIN_NEEDLE:
            continue
        tied = needle.call_index is not None
        if tied and (needle.call_index, needle.argument) != (call, argument):
            continue
        for start in _occurrences(text, needle.text):
            needle.owner.located = True
            end = start + len(needle.text)
            spans.append((start, end, needle.mark, needle.note))
            if needle.inner:
                for inner in _occurrences(needle.text, needle.inner):
                    cue_end = start + inner + len(needle.inner)
                    spans.append((start + inner, cue_end, "cue", needle.note))
    return _sweep(text, spans)


def _occurrences(text: str, needle: str) -> Iterable[int]:
    start = text.find(needle)
    while start != -1:
        yield start
        start = text.find(needle, start + max(1, len(needle)))


def _sweep(text: str, spans: Sequence[tuple[int, int, str, str]]) -> list[Segment]:
    """Cut ``text`` at every span boundary; each piece carries the marks covering it."""
    if not spans:
        return [Segment(text)]
    bounds = sorted({0, len(text), *(s for s, _, _, _ in spans), *(e for _, e, _, _ in spans)})
    segments: list[Segment] = []
    for start, end in itertools.pairwise(bounds):
        covering = [(mark, note) for s, e, mark, note in spans if s <= start and end <= e]
        marks = tuple(sorted({mark for mark, _ in covering}))
        notes = "; ".join(dict.fromkeys(note for _, note in covering))
        segments.append(Segment(text[start:end], marks, notes))
    return segments
