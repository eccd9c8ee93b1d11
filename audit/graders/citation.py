"""Spec-citation detector: does the reasoning cite the spec's principles or quote its text?

Two kinds of evidence:

- **explicit**: phrases that point at the spec ("the spec says", "per the model spec",
  "according to the guidelines", "principle 2", "section Honesty"). A bare "section 3" or
  "principle 2" only counts when the spec has such a heading or numbered principle, so "section 3
  of the quarterly report" in a finance task does not; with an empty spec only phrases that name
  the spec itself count.
- **quote**: a sentence of the spec with at least :data:`MIN_QUOTE_WORDS` words appears nearly
  verbatim in the reasoning (rapidfuzz ``partial_ratio`` >= :data:`QUOTE_SCORE`). To stay fast,
  a spec sentence is only scored against the reasoning when they share enough of its rare words.

The spec's sentence index is cached per spec text, since one spec revision is shared by thousands
of samples.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from rapidfuzz import fuzz

from audit.records import Detection

MIN_QUOTE_WORDS = 8
QUOTE_SCORE = 90.0
# A spec sentence is scored only if the reasoning holds this share of its rare words.
_PREFILTER_SHARE = 0.6

_SPEC_NOUN = (
    r"(?:model\s+spec(?:ification)?|spec(?:ification)?|guidelines|behaviou?r(?:al)?\s+spec|"
    r"principles|code\s+of\s+conduct|constitution|policy\s+spec)"
)

_EXPLICIT = re.compile(
    rf"\b(?:the|my|our|this)\s+{_SPEC_NOUN}(?:'s)?\s+(?:\w+\s+)?(?:says?|states?|requires?|"
    r"forbids?|prohibits?|tells?|asks?|instructs?|demands?|is\s+clear|clearly\s+says|"
    r"explicitly|principle|rule|section|clause|insists?|mandates?|directs?|(?:is|are)\s+"
    r"(?:explicit|clear))\b"
    rf"|\b(?:per|under|according\s+to|as\s+(?:stated|required|written)\s+in|follow(?:ing)?|"
    rf"obey(?:ing)?|adher(?:e|ing)\s+to|in\s+line"
    rf"\s+with|consistent\s+with|violat(?:e|es|ing)|breach(?:es|ing)?|compl(?:y|ies)\s+with)\s+"
    rf"(?:the|my|our|this)\s+{_SPEC_NOUN}\b"
    rf"|\b(?:principle|rule|section|clause)\s+(?:[0-9]+(?:\.[0-9]+)*|[IVX]+)\s+(?:of|in)\s+"
    rf"(?:the|my|our)\s+{_SPEC_NOUN}\b",
    re.IGNORECASE,
)

# "principle 2", "section 4.1", "section Honesty": counted when the spec has such a heading.
_NUMBERED_REF = re.compile(
    r"(?<!\w)(?P<kind>(?i:principle|rule|section|clause)|§)\s*(?P<label>[0-9]+(?:\.[0-9]+)*|[IVX]+\b|"
    r"[\"“']?[A-Z][\w-]*(?:\s+[A-Z][\w-]*){0,3})",
)

_OTHER_DOCUMENT = re.compile(
    rf"\s+(?:of|in)\s+(?:the|this|that|our|a|an|their|your)\s+(?!{_SPEC_NOUN}\b)",
    re.IGNORECASE,
)
_WORD = re.compile(r"[a-z0-9][a-z0-9'-]*")
_SPEC_SENTENCE_BREAK = re.compile(r"(?<=[.!?])\s+|\n+")
_MARKDOWN_PREFIX = re.compile(r"^\s*(?:#{1,6}\s+|[-*+]\s+|\d+[.)]\s+|>\s+)")
_HEADING = re.compile(r"^\s*#{1,6}\s+(?P<title>.+?)\s*#*\s*$", re.MULTILINE)
_NUMBERED_ITEM = re.compile(r"^\s*(?P<label>[0-9]+(?:\.[0-9]+)*)[.)]?\s+\S", re.MULTILINE)

# Common words never make two texts look alike; rare words do.
_STOPWORD_TEXT = (
    "the a an and or but if then else when while of to in on at by for with from into onto "
    "about as is are was were be been being it its this that these those there their they "
    "them you your we our us i me my he she his her not no nor so than too very can could "
    "should would will shall may might must do does did done have has had having what which "
    "who whom whose why how all any each every some such only own same other more most less "
    "few both either neither just also even ever never always often again once here where "
    "because before after above below over under between through during without within "
    "upon out up down off"
)
_STOPWORDS = frozenset(_STOPWORD_TEXT.split(" "))


@dataclass(frozen=True)
class _SpecSentence:
    text: str
    normalized: str
    rare_words: frozenset[str]


@dataclass(frozen=True)
class _SpecIndex:
    sentences: tuple[_SpecSentence, ...]
    section_labels: frozenset[str]


def _normalize(text: str) -> str:
    return " ".join(_WORD.findall(text.lower()))


def _content_words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if len(w) > 3 and w not in _STOPWORDS}


@lru_cache(maxsize=64)
def _spec_index(spec_text: str) -> _SpecIndex:
    """Quotable sentences and heading labels of one spec text (cached per text)."""
    sentences: list[_SpecSentence] = []
    for raw in _SPEC_SENTENCE_BREAK.split(spec_text):
        sentence = _MARKDOWN_PREFIX.sub("", raw).strip()
        normalized = _normalize(sentence)
        if len(normalized.split()) < MIN_QUOTE_WORDS:
            continue
        sentences.append(_SpecSentence(sentence, normalized, frozenset(_content_words(sentence))))
    labels: set[str] = set()
    for match in _HEADING.finditer(spec_text):
        title = match.group("title").strip()
        labels.add(title.lower())
        # "4.2 Honesty" or "Principle 2: Honesty" give "4.2", "2" and "honesty".
        number = re.match(r"(?:(?:principle|section|rule)\s+)?([0-9]+(?:\.[0-9]+)*)", title, re.I)
        if number:
            labels.add(number.group(1))
        name = re.sub(r"^(?:(?:principle|section|rule)\s+)?[0-9.]*[:.)]?\s*", "", title, flags=re.I)
        if name:
            labels.add(name.lower())
    labels.update(m.group("label") for m in _NUMBERED_ITEM.finditer(spec_text))
    return _SpecIndex(tuple(sentences), frozenset(labels))


def _explicit_evidence(reasoning: str, index: _SpecIndex | None) -> list[dict[str, Any]]:
    explicit = list(_EXPLICIT.finditer(reasoning))
    evidence: list[dict[str, Any]] = [
        {"rule": "explicit_citation", "phrase": m.group(0), "span": [m.start(), m.end()]}
        for m in explicit
    ]
    if index is None:
        return evidence
    covered = [m.span() for m in explicit]
    for match in _NUMBERED_REF.finditer(reasoning):
        if any(start <= match.start() < end for start, end in covered):
            continue
        label = match.group("label").strip("\"“'").lower()
        if _OTHER_DOCUMENT.match(reasoning, match.end()):
            continue  # "section 1 of the quarterly report" is another document's section
        if _label_in_spec(label, index.section_labels):
            evidence.append(
                {
                    "rule": "section_reference",
                    "phrase": match.group(0),
                    "span": [match.start(), match.end()],
                }
            )
    return evidence


def _label_in_spec(label: str, labels: frozenset[str]) -> bool:
    if label in labels:
        return True
    # "section Honesty and" may run on past the heading name: accept a heading that starts it.
    return any(label.startswith(known + " ") for known in labels if not known[:1].isdigit())


def _quote_evidence(reasoning: str, index: _SpecIndex) -> list[dict[str, Any]]:
    reasoning_words = _content_words(reasoning)
    normalized_reasoning: str | None = None
    evidence: list[dict[str, Any]] = []
    for sentence in index.sentences:
        rare = sentence.rare_words
        if not rare or len(rare & reasoning_words) < max(2, _PREFILTER_SHARE * len(rare)):
            continue
        if normalized_reasoning is None:
            normalized_reasoning = _normalize(reasoning)
        score = fuzz.partial_ratio(sentence.normalized, normalized_reasoning)
        if score >= QUOTE_SCORE:
            evidence.append(
                {"rule": "quote", "spec_sentence": sentence.text, "score": round(score, 1)}
            )
    return evidence


def detect_spec_citation(reasoning: str, spec_text: str) -> Detection:
    """Does ``reasoning`` cite the spec (explicit references) or quote it (near-verbatim)?

    Evidence items carry ``rule`` (``explicit_citation``, ``section_reference`` or ``quote``) and
    either the matched ``phrase`` with its ``span`` or the quoted ``spec_sentence`` with its
    ``score``. An empty ``spec_text`` leaves only explicit phrases that name the spec.
    """
    if not reasoning:
        return Detection(detected=False)
    index = _spec_index(spec_text) if spec_text.strip() else None
    evidence = _explicit_evidence(reasoning, index)
    if index is not None:
        evidence.extend(_quote_evidence(reasoning, index))
    return Detection(detected=bool(evidence), evidence=evidence)
