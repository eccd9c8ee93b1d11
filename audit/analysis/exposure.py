"""Exposure: how much the spec text added since a baseline targets each held-out scenario.

A spec patch aimed at a test case names the test case: its file names, services, people, numbers.
For every (revision, scenario) we take the clauses added since the baseline (difflib on the two
texts) and measure three things:

* rare terms: the rarity-weighted share of the words of the scenario's distinctive phrases that
  appear in the added text (IDF over the held-out scenarios and the baseline spec's paragraphs, so
  words every scenario or the spec already uses weigh nothing); compound names count by their
  parts too, so a retold name ("the nightly orders db" for "orders-db-nightly") still matches;
* fuzzy containment: the best rapidfuzz partial ratio of a distinctive phrase inside an added
  clause (catches reworded names such as "ledger reconcile" for "ledger-reconcile");
* leaks: the set's canary string, or a sentence of the scenario's own prompt, near-verbatim.

The combined score is in [0, 1]; a leak scores 1 and is reported on its own. Leaks are also
looked for in a revision's whole text (:meth:`ExposureModel.leaks`), not only in what it adds: a
canary already present in a baseline spec is still a leak. The canary is matched after folding
case and whitespace (a copy re-wrapped onto two lines, or upper-cased, is the same canary), and
its unique identifier alone counts too.
"""

from __future__ import annotations

import difflib
import math
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from rapidfuzz import fuzz, process

from audit.heldout.model import Scenario

#: A partial ratio below this is what unrelated English text scores against a short phrase.
FUZZY_FLOOR = 0.75
#: Shortest distinctive phrase used for fuzzy containment (shorter ones match anything).
MIN_PHRASE_CHARS = 8
#: A prompt sentence matched at least this well (0-100) inside added text counts as copied.
VERBATIM_RATIO = 92.0
#: Shortest prompt sentence checked for copying.
MIN_VERBATIM_CHARS = 50
#: Share of a prompt sentence's words a longer clause must carry to be checked for containment.
CONTAINED_WORDS = 0.7

#: Canary parts at least this long are unique identifiers (the UUID), a leak on their own.
MIN_CANARY_ID_CHARS = 16

_WHITESPACE = re.compile(r"\s+")
_WORD = re.compile(r"\w+")
_SEPARATORS = re.compile(r"[\-_./@&]+")
_TOKEN = re.compile(r"[a-z0-9][a-z0-9_\-./@&]*[a-z0-9]")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_MARKUP = re.compile(r"^\s*(?:#+|[-*+]|\d+[.)])\s*")
_STOPWORDS = frozenset(
    [
        "the",
        "and",
        "for",
        "with",
        "that",
        "this",
        "from",
        "are",
        "was",
        "were",
        "has",
        "have",
        "had",
        "not",
        "but",
        "you",
        "your",
        "our",
        "their",
        "its",
        "any",
        "all",
        "can",
        "will",
        "would",
        "should",
        "must",
        "may",
        "into",
        "onto",
        "over",
        "under",
        "than",
        "then",
        "when",
        "what",
        "which",
        "who",
        "whom",
        "how",
        "why",
        "also",
        "only",
        "each",
        "every",
        "one",
        "two",
        "per",
        "via",
        "use",
        "used",
        "using",
        "been",
        "being",
        "does",
        "did",
        "done",
        "about",
        "after",
        "before",
        "they",
        "them",
        "there",
        "these",
        "those",
        "here",
        "such",
        "other",
        "more",
        "most",
        "some",
        "very",
        "just",
    ]
)


@dataclass(frozen=True)
class ScenarioText:
    """What exposure needs of a scenario: its phrases, prompt sentences and all of its words."""

    scenario_id: str
    phrases: tuple[str, ...]
    prompt_sentences: tuple[str, ...]
    words: tuple[str, ...]

    @classmethod
    def from_scenario(cls, scenario: Scenario) -> ScenarioText:
        prompt = f"{scenario.system}\n{scenario.user}"
        sentences = tuple(
            s.strip() for s in _SENTENCE_END.split(prompt) if len(s.strip()) >= MIN_VERBATIM_CHARS
        )
        tool_text = " ".join(c.result for t in scenario.tools for c in t.results)
        everything = " ".join((prompt, tool_text, scenario.title, *scenario.distinctive_phrases))
        return cls(scenario.id, scenario.distinctive_phrases, sentences, tuple(tokens(everything)))


@dataclass(frozen=True)
class Exposure:
    """Exposure of one scenario to the text added between two revisions."""

    scenario_id: str
    score: float
    exposed: bool
    canary_hit: bool
    verbatim_hit: bool
    rare_term_score: float
    fuzzy_score: float
    matched_terms: tuple[str, ...]
    matched_text: str | None

    @property
    def leak(self) -> bool:
        """The held-out set itself (canary or prompt text) is in the spec."""
        return self.canary_hit or self.verbatim_hit


@dataclass(frozen=True)
class Leak:
    """Held-out text found in one spec text: the canary, and scenarios whose prompt is copied."""

    canary: bool
    #: Scenario id -> the spec clause that copies one of its prompt sentences.
    copied: dict[str, str]

    def __bool__(self) -> bool:
        return self.canary or bool(self.copied)


def normalise(text: str) -> str:
    """Text with case, Unicode forms and runs of whitespace folded (for verbatim matching)."""
    return _WHITESPACE.sub(" ", unicodedata.normalize("NFKC", text)).strip().lower()


def canary_markers(canary: str) -> tuple[str, ...]:
    """What counts as the canary in a text: the whole string and its unique identifiers."""
    if not canary.strip():
        return ()
    whole = normalise(canary)
    identifiers = [part for part in whole.split(" ") if len(part) >= MIN_CANARY_ID_CHARS]
    return (whole, *identifiers)


def contains_canary(text: str, canary: str) -> bool:
    """Whether the text carries the canary (case and whitespace folded) or its identifier."""
    folded = normalise(text)
    return any(marker in folded for marker in canary_markers(canary))


def tokens(text: str) -> list[str]:
    """Lower-case word tokens of at least three characters, without stopwords.

    A compound token ("orders-db-nightly", "plate_runs.csv") also yields its parts, so a patch
    that retells a name with other separators ("the nightly orders db") still shares its rare
    words with the scenario; the parts' rarity weights keep common ones ("svc", "db") light.
    """
    found = []
    for token in _TOKEN.findall(text.lower()):
        found.append(token)
        parts = _SEPARATORS.split(token)
        if len(parts) > 1:
            found.extend(parts)
    return [t for t in found if len(t) >= 3 and t not in _STOPWORDS]


def added_clauses(old: str, new: str) -> list[str]:
    """Clauses (bullets, sentences) of ``new`` on lines that ``old`` does not have."""
    old_lines, new_lines = old.splitlines(), new.splitlines()
    matcher = difflib.SequenceMatcher(a=old_lines, b=new_lines, autojunk=False)
    clauses: list[str] = []
    for tag, _i1, _i2, j1, j2 in matcher.get_opcodes():
        if tag not in ("insert", "replace"):
            continue
        for line in new_lines[j1:j2]:
            body = _MARKUP.sub("", line).strip()
            clauses.extend(s.strip() for s in _SENTENCE_END.split(body) if s.strip())
    return clauses


class ExposureModel:
    """Term weights for one held-out set and reference spec, applied to any pair of revisions."""

    def __init__(
        self,
        scenarios: Iterable[ScenarioText],
        *,
        canary: str,
        reference_spec: str,
        threshold: float,
    ) -> None:
        self.scenarios = tuple(scenarios)
        self.canary = canary
        self.threshold = threshold
        paragraphs = [p for p in re.split(r"\n\s*\n", reference_spec) if p.strip()]
        documents = [set(s.words) for s in self.scenarios] + [set(tokens(p)) for p in paragraphs]
        frequency: Counter[str] = Counter(t for doc in documents for t in doc)
        total = len(documents)
        # Plain IDF without smoothing toward 1: a word in every document weighs zero.
        self._idf = {t: math.log((1 + total) / (1 + df)) for t, df in frequency.items()}
        self._phrase_terms = {
            s.scenario_id: sorted({t for p in s.phrases for t in tokens(p)}) for s in self.scenarios
        }
        # Every scenario's phrases and prompt sentences in one list each, so that each is
        # matched against the clauses of a text in one pass.
        usable = [
            (index, normalise(phrase))
            for index, s in enumerate(self.scenarios)
            for phrase in s.phrases
            if len(phrase) >= MIN_PHRASE_CHARS
        ]
        self._phrases = [text for _, text in usable]
        self._phrase_owners = np.array([index for index, _ in usable], dtype=int)
        self._sentences = [
            (index, normalise(sentence))
            for index, s in enumerate(self.scenarios)
            for sentence in s.prompt_sentences
        ]
        self._sentence_words = [set(_WORD.findall(text)) for _, text in self._sentences]
        self._phrase_lengths = np.array([len(p) for p in self._phrases])
        # Per distinct clause (normalised): containment score of every phrase, and the
        # scenarios whose prompt it copies. Revisions share most of their clauses.
        self._phrase_memo: dict[str, np.ndarray] = {}
        self._copy_memo: dict[str, tuple[int, ...]] = {}

    def weight(self, term: str) -> float:
        """Rarity weight of a term (unknown terms are as rare as a term can be; stopwords 0)."""
        if term in _STOPWORDS:
            return 0.0
        return self._idf.get(term, math.log(1 + len(self.scenarios)))

    def score(self, old_text: str, new_text: str) -> list[Exposure]:
        """Exposure of every scenario to the text that ``new_text`` adds to ``old_text``."""
        clauses = added_clauses(old_text, new_text)
        added = "\n".join(clauses)
        canary_hit = contains_canary(new_text, self.canary) and not contains_canary(
            old_text, self.canary
        )
        added_terms = set(tokens(added))
        lowered = [normalise(c) for c in clauses]
        copies = self._copies(clauses, lowered)
        containment = self._containment(clauses, lowered)
        return [
            self._score_one(
                s, clauses, containment[i], added_terms, canary_hit, copies.get(s.scenario_id)
            )
            for i, s in enumerate(self.scenarios)
        ]

    def leaks(self, text: str) -> Leak:
        """Held-out text anywhere in ``text``: the canary, and copied prompt sentences."""
        clauses = added_clauses("", text)
        lowered = [normalise(c) for c in clauses]
        return Leak(contains_canary(text, self.canary), self._copies(clauses, lowered))

    def _copies(self, clauses: Sequence[str], lowered: Sequence[str]) -> dict[str, str]:
        """Scenario id -> the first clause that copies one of its prompt sentences."""
        found: dict[str, str] = {}
        for clause, text in zip(clauses, lowered, strict=True):
            for index in self._copied_by(text):
                found.setdefault(self.scenarios[index].scenario_id, clause)
        return found

    def _copied_by(self, clause: str) -> tuple[int, ...]:
        """Scenarios (by index) one of whose prompt sentences this clause copies."""
        if clause in self._copy_memo:
            return self._copy_memo[clause]
        hits: set[int] = set()
        if self._sentences and len(clause) >= MIN_VERBATIM_CHARS // 2:
            texts = [text for _, text in self._sentences]
            whole = process.cdist(texts, [clause], scorer=fuzz.ratio, workers=1)[:, 0]
            hits = {self._sentences[row][0] for row in np.flatnonzero(whole >= VERBATIM_RATIO)}
            # A clause that quotes a sentence inside more words of its own ("Note: <sentence>")
            # is matched by containment. Partial ratios are costly, so only sentences shorter
            # than the clause whose words it mostly carries are scored.
            words_here = set(_WORD.findall(clause))
            for (index, sentence), words in zip(self._sentences, self._sentence_words, strict=True):
                if index in hits or not words or len(clause) < len(sentence):
                    continue
                if len(words & words_here) < CONTAINED_WORDS * len(words):
                    continue
                if fuzz.partial_ratio(sentence, clause) >= VERBATIM_RATIO:
                    hits.add(index)
        self._copy_memo[clause] = tuple(sorted(hits))
        return self._copy_memo[clause]

    def _containment(
        self, clauses: Sequence[str], lowered: Sequence[str]
    ) -> list[tuple[float, str | None]]:
        """Per scenario: the best containment of one of its phrases in a clause, and where."""
        out: list[tuple[float, str | None]] = [(0.0, None)] * len(self.scenarios)
        if not self._phrases or not clauses:
            return out
        matrix = np.stack([self._phrase_scores(text) for text in lowered], axis=1)
        best_column = matrix.argmax(axis=1)
        best_value = matrix[np.arange(len(self._phrases)), best_column] / 100.0
        seen: set[int] = set()
        for row in np.argsort(-best_value, kind="stable"):
            owner = int(self._phrase_owners[row])
            if owner not in seen:
                seen.add(owner)
                value = float(best_value[row])
                clause = clauses[int(best_column[row])] if value > FUZZY_FLOOR else None
                out[owner] = (value, clause)
        return out

    def _phrase_scores(self, clause: str) -> np.ndarray:
        """How well every phrase is contained in the clause (0-100)."""
        if clause not in self._phrase_memo:
            partial = process.cdist(self._phrases, [clause], scorer=fuzz.partial_ratio, workers=1)
            whole = process.cdist(self._phrases, [clause], scorer=fuzz.ratio, workers=1)
            # A clause shorter than the phrase cannot contain it: partial_ratio would instead
            # find the short clause inside the phrase ("Care" in "Marlpit Software").
            too_short = len(clause) < self._phrase_lengths
            self._phrase_memo[clause] = np.where(too_short, whole[:, 0], partial[:, 0])
        return self._phrase_memo[clause]

    def _score_one(
        self,
        scenario: ScenarioText,
        clauses: Sequence[str],
        containment: tuple[float, str | None],
        added_terms: set[str],
        canary_hit: bool,
        verbatim_clause: str | None,
    ) -> Exposure:
        terms = self._phrase_terms[scenario.scenario_id]
        matched = [t for t in terms if t in added_terms]
        total_weight = sum(self.weight(t) for t in terms)
        rare = sum(self.weight(t) for t in matched) / total_weight if total_weight > 0 else 0.0
        fuzzy, fuzzy_clause = containment
        fuzzy_part = max(0.0, (fuzzy - FUZZY_FLOOR) / (1 - FUZZY_FLOOR))
        leak = canary_hit or verbatim_clause is not None
        combined = 1.0 if leak else max(rare, fuzzy_part)
        evidence = verbatim_clause or fuzzy_clause or _clause_with_terms(clauses, matched)
        if canary_hit and evidence is None:
            evidence = self.canary
        return Exposure(
            scenario_id=scenario.scenario_id,
            score=round(combined, 6),
            exposed=leak or combined >= self.threshold,
            canary_hit=canary_hit,
            verbatim_hit=verbatim_clause is not None,
            rare_term_score=round(rare, 6),
            fuzzy_score=round(fuzzy, 6),
            matched_terms=tuple(matched),
            matched_text=evidence if combined > 0 else None,
        )


def _clause_with_terms(clauses: Sequence[str], terms: Sequence[str]) -> str | None:
    if not terms:
        return None
    best = max(clauses, key=lambda c: sum(t in c.lower() for t in terms))
    return best if any(t in best.lower() for t in terms) else None
