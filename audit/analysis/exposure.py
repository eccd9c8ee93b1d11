"""Exposure: how much the spec text added since a baseline targets each held-out scenario.

A spec patch aimed at a test case retells the test case: its names, files and numbers, or only
its situation. For every (revision, scenario) we take the text added since the baseline (difflib
on the two texts), split into blocks (a heading, a bullet, a table row, a paragraph), and score
each block against the scenario's whole prose (title, system and user text, tool names,
descriptions and canned outputs, submission fields, questions: :meth:`Scenario.prose`) and its
distinctive phrases:

* every shared term (stemmed words, compound names also by their parts, adjacent word pairs)
  weighs by its rarity twice over: against general English (wordfreq's Zipf frequency, so
  "based" or "created" weigh nothing and "tillpoint" or "ledgerlink" weigh fully) and against
  the other scenarios (inverse document frequency over the set, so a family's shared vocabulary
  weighs little); terms the reference spec already uses weigh half. A block's score for a
  scenario maps the sum of the weights they share into [0, 1);
* a block exposes a scenario when that score reaches the threshold and is at least
  :data:`RELATIVE_FLOOR` of the block's best scenario: a rule that retells one case names it
  more than any other case, while family vocabulary spreads over many;
* leaks: the set's canary, or a sentence of the scenario's prose, near-verbatim; and for a
  sealed twin, which nobody who edits the spec has read, text that names its distinctive details.

The threshold is chosen from data (:func:`choose_threshold`): the smallest one at which at most
:data:`TARGET_FALSE_EXPOSURE` of the generic rules in the tuning split of the labelled corpus
(``tests/data/exposure_clauses``) expose any scenario; ``tests/bench/bench_exposure.py`` prints
recall and false exposure per style on the split never tuned on. Leaks are also looked for in a
revision's whole text (:meth:`ExposureModel.leaks`), not only in what it adds. The canary is
matched after folding case and whitespace, and its unique identifier alone counts too. A fuzzy
containment score of each distinctive phrase (rapidfuzz) is kept as evidence.
"""

from __future__ import annotations

import difflib
import itertools
import math
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import snowballstemmer
from rapidfuzz import fuzz, process
from wordfreq import zipf_frequency

from audit.heldout.model import Scenario

#: A partial ratio below this is what unrelated English text scores against a short phrase.
FUZZY_FLOOR = 0.75
#: Shortest distinctive phrase used for fuzzy containment (shorter ones match anything).
MIN_PHRASE_CHARS = 8
#: A prose sentence matched at least this well (0-100) inside added text counts as copied.
VERBATIM_RATIO = 92.0
#: Shortest prose sentence checked for copying.
MIN_VERBATIM_CHARS = 50
#: Share of a prose sentence's words a longer clause must carry to be checked for containment.
CONTAINED_WORDS = 0.7
#: Canary parts at least this long are unique identifiers (the UUID), a leak on their own.
MIN_CANARY_ID_CHARS = 16

#: English words at least this common (wordfreq Zipf frequency) weigh nothing ...
COMMON_ZIPF = 6.0
#: ... and words at most this common (or unknown to English: names, codes) weigh fully.
RARE_ZIPF = 3.0
#: Terms the reference spec already uses weigh this share: the spec's own vocabulary says little.
SPEC_TERM_DAMPING = 0.5
#: A block exposes a scenario only if it scores at least this share of the block's best one.
RELATIVE_FLOOR = 0.7
#: Shared weight that scores 0.5 (score = shared / (shared + HALF_SCORE_WEIGHT)).
HALF_SCORE_WEIGHT = 2.0
#: Share of the tuning corpus's generic rules allowed to expose a scenario at the threshold.
TARGET_FALSE_EXPOSURE = 0.03
#: A sealed twin is named when its distinctive phrases' terms are matched at least this much
#: (weighted share) in one block, or one phrase is contained at SEALED_PHRASE_RATIO.
SEALED_NAMED_SHARE = 0.5
SEALED_PHRASE_RATIO = 0.95
#: Matched terms kept as evidence per (revision, scenario), heaviest first.
MAX_MATCHED_TERMS = 8

_WHITESPACE = re.compile(r"\s+")
_WORD = re.compile(r"\w+")
_SEPARATORS = re.compile(r"[\-_./@&]+")
_TOKEN = re.compile(r"[a-z0-9][a-z0-9_\-./@&]*[a-z0-9]")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_MARKUP = re.compile(r"^\s*(?:#+|[-*+]|\d+[.)])\s*")
_BLOCK_START = re.compile(r"^\s*(?:#+\s|[-*+]\s|\d+[.)]\s|\|)")
_ALPHA = re.compile(r"[a-z]+")

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


_STEMMER = snowballstemmer.stemmer("english")


@lru_cache(maxsize=65536)
def _stem(word: str) -> str:
    """Plain words by their stem ("refunds", "refund"); names and codes as written."""
    return _STEMMER.stemWord(word) if _ALPHA.fullmatch(word) else word


@lru_cache(maxsize=65536)
def english_rarity(word: str) -> float:
    """1 for a word English rarely uses (or never: names, codes), 0 for a common one."""
    zipf = zipf_frequency(word, "en")
    return float(np.clip((COMMON_ZIPF - zipf) / (COMMON_ZIPF - RARE_ZIPF), 0.0, 1.0))


def term_surfaces(text: str) -> dict[str, set[str]]:
    """Terms of a text (stems, compound parts, adjacent word pairs) with the words behind them."""
    found: dict[str, set[str]] = {}
    sequence: list[tuple[str, str]] = []
    for word in tokens(text):
        term = _stem(word)
        found.setdefault(term, set()).add(word)
        if _ALPHA.fullmatch(word):
            sequence.append((term, word))
    for (first, word1), (second, word2) in itertools.pairwise(sequence):
        found.setdefault(f"{first} {second}", set()).add(f"{word1} {word2}")
    return found


@dataclass(frozen=True)
class ScenarioText:
    """What exposure needs of a scenario: its phrases, prose sentences and terms."""

    scenario_id: str
    phrases: tuple[str, ...]
    prompt_sentences: tuple[str, ...]
    words: tuple[str, ...]
    sealed: bool = False
    #: Terms of the scenario's whole prose and distinctive phrases.
    terms: frozenset[str] = frozenset()
    #: Terms of its distinctive phrases alone: what naming the scenario means.
    phrase_terms: frozenset[str] = frozenset()

    @classmethod
    def from_scenario(cls, scenario: Scenario) -> ScenarioText:
        prose = scenario.prose()
        sentences = tuple(
            sentence.strip()
            for line in prose.splitlines()
            for sentence in _SENTENCE_END.split(line)
            if len(sentence.strip()) >= MIN_VERBATIM_CHARS
        )
        everything = "\n".join((prose, *scenario.distinctive_phrases))
        return cls(
            scenario_id=scenario.id,
            phrases=scenario.distinctive_phrases,
            prompt_sentences=sentences,
            words=tuple(tokens(everything)),
            sealed=scenario.sealed,
            terms=frozenset(term_surfaces(everything)),
            phrase_terms=frozenset(term_surfaces("\n".join(scenario.distinctive_phrases))),
        )


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
        """The held-out set itself (canary or prose text) is in the spec."""
        return self.canary_hit or self.verbatim_hit


@dataclass(frozen=True)
class Leak:
    """Held-out text found in one spec text: the canary, copied prose, named sealed twins."""

    canary: bool
    #: Scenario id -> the spec clause that copies one of its prose sentences.
    copied: dict[str, str]
    #: Sealed twin id -> the spec block that names its distinctive details.
    sealed: dict[str, str] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return self.canary or bool(self.copied) or bool(self.sealed)


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


def _changed_lines(old: str, new: str) -> list[str]:
    """Lines of ``new`` that ``old`` does not have; an empty line ends each run of them."""
    old_lines, new_lines = old.splitlines(), new.splitlines()
    matcher = difflib.SequenceMatcher(a=old_lines, b=new_lines, autojunk=False)
    changed: list[str] = []
    for tag, _i1, _i2, j1, j2 in matcher.get_opcodes():
        if tag in ("insert", "replace"):
            changed.extend([*new_lines[j1:j2], ""])
    return changed


def added_clauses(old: str, new: str) -> list[str]:
    """Clauses (bullets, sentences) of ``new`` on lines that ``old`` does not have."""
    clauses: list[str] = []
    for line in _changed_lines(old, new):
        body = _MARKUP.sub("", line).strip()
        clauses.extend(s.strip() for s in _SENTENCE_END.split(body) if s.strip())
    return clauses


def added_blocks(old: str, new: str) -> list[str]:
    """Blocks of ``new`` on lines ``old`` does not have: a heading, a bullet with the lines that
    continue it, a table row or a paragraph, which is what one rule of a spec usually is."""
    blocks: list[list[str]] = []
    current: list[str] = []
    for line in _changed_lines(old, new):
        if not line.strip() or _BLOCK_START.match(line):
            if current:
                blocks.append(current)
            current = [line] if line.strip() else []
        else:
            current.append(line)
    if current:
        blocks.append(current)
    return [" ".join(_MARKUP.sub("", line).strip() for line in block) for block in blocks]


def choose_threshold(generic_best: Sequence[float], target: float) -> float:
    """The smallest threshold at which at most ``target`` of generic texts expose a scenario.

    ``generic_best`` holds, per generic text, its best score over the scenarios that pass the
    relative floor (:meth:`ExposureModel.relative_best`).
    """
    best = np.sort(np.asarray(generic_best, dtype=float))
    if best.size == 0:
        raise ValueError("no generic texts to choose a threshold from")
    allowed = math.floor(target * best.size + 1e-9)
    # The texts scoring at or above the threshold expose something: `allowed` of them may.
    return float(np.nextafter(best[best.size - allowed - 1], np.inf))


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
        frequency: Counter[str] = Counter(t for s in self.scenarios for t in s.terms)
        scale = math.log(len(self.scenarios) + 1)
        # Inverse document frequency over the set, scaled to [0, 1]: a term every scenario
        # uses weighs nothing, a term of one scenario fully.
        self._specificity = {
            t: math.log((len(self.scenarios) + 1) / (df + 1)) / scale for t, df in frequency.items()
        }
        self._spec_terms = frozenset(term_surfaces(reference_spec))
        self._index = {t: np.array([t in s.terms for s in self.scenarios]) for t in frequency}
        self._sealed = np.array([s.sealed for s in self.scenarios], dtype=bool)
        usable = [
            (index, normalise(phrase))
            for index, s in enumerate(self.scenarios)
            for phrase in s.phrases
            if len(phrase) >= MIN_PHRASE_CHARS
        ]
        self._phrases = [text for _, text in usable]
        self._phrase_owners = np.array([index for index, _ in usable], dtype=int)
        self._phrase_lengths = np.array([len(p) for p in self._phrases])
        self._sentences = [
            (index, normalise(sentence))
            for index, s in enumerate(self.scenarios)
            for sentence in s.prompt_sentences
        ]
        self._sentence_words = [set(_WORD.findall(text)) for _, text in self._sentences]
        # Per distinct clause or block (normalised): phrase containment, copies and term scores.
        # Revisions share most of their text.
        self._phrase_memo: dict[str, np.ndarray] = {}
        self._copy_memo: dict[str, tuple[int, ...]] = {}
        self._block_memo: dict[str, tuple[np.ndarray, dict[str, float]]] = {}

    def weight(self, term: str, surfaces: Iterable[str] = ()) -> float:
        """Rarity weight of a term: against the other scenarios times against English.

        A word pair is as rare in English as its rarer word: "test fail" is two common words
        whatever few scenarios happen to put them side by side.
        """
        words = [w for surface in surfaces for w in surface.split(" ")] or term.split(" ")
        english = max(english_rarity(w) for w in words)
        damping = SPEC_TERM_DAMPING if term in self._spec_terms else 1.0
        return self._specificity.get(term, 1.0) * english * damping

    def block_scores(self, block: str) -> np.ndarray:
        """Score in [0, 1) of every scenario for one block: shared weight / (that + half)."""
        raw, _ = self._block_terms(block)
        return raw / (raw + HALF_SCORE_WEIGHT)

    def relative_scores(self, block: str) -> np.ndarray:
        """Block scores of the public scenarios, zero where under :data:`RELATIVE_FLOOR` of the
        block's best one.

        Sealed twins are left out (zero): they share their public scenario's situation, so a
        retold situation scores them too, yet nobody who edits the spec can aim at them. They
        are exposed only by a leak (:meth:`leaks`).
        """
        scores = np.where(self._sealed, 0.0, self.block_scores(block))
        if scores.size == 0:
            return scores
        return np.where(scores >= RELATIVE_FLOOR * scores.max(), scores, 0.0)

    def relative_best(self, text: str) -> float:
        """The best relative score of any scenario over the blocks of ``text`` (for
        :func:`choose_threshold`)."""
        blocks = added_blocks("", text)
        return max((float(self.relative_scores(b).max(initial=0.0)) for b in blocks), default=0.0)

    def score(self, old_text: str, new_text: str) -> list[Exposure]:
        """Exposure of every scenario to the text that ``new_text`` adds to ``old_text``."""
        clauses = added_clauses(old_text, new_text)
        canary_hit = contains_canary(new_text, self.canary) and not contains_canary(
            old_text, self.canary
        )
        lowered = [normalise(c) for c in clauses]
        copies = self._copies(clauses, lowered)
        containment = self._containment(clauses, lowered)
        best = np.zeros(len(self.scenarios))
        exposed = np.zeros(len(self.scenarios), dtype=bool)
        where: list[str | None] = [None] * len(self.scenarios)
        for block in added_blocks(old_text, new_text):
            scores = self.block_scores(block)
            exposed |= self.relative_scores(block) >= max(self.threshold, 1e-12)
            for i in np.flatnonzero(scores > best):
                where[int(i)] = block
            best = np.maximum(best, scores)
        return [
            self._exposure(
                i,
                where[i],
                float(best[i]),
                bool(exposed[i]),
                containment[i],
                canary_hit,
                copies.get(s.scenario_id),
            )
            for i, s in enumerate(self.scenarios)
        ]

    def leaks(self, text: str) -> Leak:
        """Held-out text anywhere in ``text``: the canary, copied prose, named sealed twins."""
        clauses = added_clauses("", text)
        lowered = [normalise(c) for c in clauses]
        return Leak(
            contains_canary(text, self.canary),
            self._copies(clauses, lowered),
            self._named_twins(added_blocks("", text), clauses, lowered),
        )

    def _named_twins(
        self, blocks: Sequence[str], clauses: Sequence[str], lowered: Sequence[str]
    ) -> dict[str, str]:
        """Sealed twin id -> the spec text naming its distinctive details.

        Nobody who edits the spec has read a twin, so text that names its details (not merely
        retells its situation, which is its public scenario's too) is a leak of the sealed set.
        """
        if not self._sealed.any():
            return {}
        block_terms = [set(term_surfaces(block)) for block in blocks]
        containment = self._containment(clauses, lowered) if clauses else []
        named: dict[str, str] = {}
        for i in np.flatnonzero(self._sealed):
            twin = self.scenarios[int(i)]
            weights = {t: self.weight(t) for t in twin.phrase_terms}
            total = sum(weights.values()) or 1.0
            for block, found in zip(blocks, block_terms, strict=True):
                if sum(w for t, w in weights.items() if t in found) / total >= SEALED_NAMED_SHARE:
                    named[twin.scenario_id] = block
                    break
            else:
                ratio, clause = containment[int(i)] if containment else (0.0, None)
                if ratio >= SEALED_PHRASE_RATIO and clause is not None:
                    named[twin.scenario_id] = clause
        return named

    def _block_terms(self, block: str) -> tuple[np.ndarray, dict[str, float]]:
        """Raw shared weight per scenario, and the weight of each of the block's terms."""
        key = normalise(block)
        if key not in self._block_memo:
            weights = {t: self.weight(t, words) for t, words in term_surfaces(block).items()}
            raw = np.zeros(len(self.scenarios))
            for term, weight in weights.items():
                if weight > 0 and term in self._index:
                    raw += weight * self._index[term]
            self._block_memo[key] = (raw, weights)
        return self._block_memo[key]

    def _copies(self, clauses: Sequence[str], lowered: Sequence[str]) -> dict[str, str]:
        """Scenario id -> the first clause that copies one of its prose sentences."""
        found: dict[str, str] = {}
        for clause, text in zip(clauses, lowered, strict=True):
            for index in self._copied_by(text):
                found.setdefault(self.scenarios[index].scenario_id, clause)
        return found

    def _copied_by(self, clause: str) -> tuple[int, ...]:
        """Scenarios (by index) one of whose prose sentences this clause copies."""
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

    def _exposure(
        self,
        index: int,
        block: str | None,
        term_score: float,
        exposed: bool,
        containment: tuple[float, str | None],
        canary_hit: bool,
        verbatim_clause: str | None,
    ) -> Exposure:
        scenario = self.scenarios[index]
        matched: list[str] = []
        if block is not None and term_score > 0:
            _, weights = self._block_terms(block)
            shared = sorted(
                ((w, t) for t, w in weights.items() if w > 0 and t in scenario.terms),
                reverse=True,
            )
            matched = [t for _, t in shared[:MAX_MATCHED_TERMS]]
        leak = canary_hit or verbatim_clause is not None
        evidence = verbatim_clause or (block if term_score > 0 else None)
        if canary_hit and evidence is None:
            evidence = self.canary
        return Exposure(
            scenario_id=scenario.scenario_id,
            score=round(1.0 if leak else term_score, 6),
            exposed=leak or exposed,
            canary_hit=canary_hit,
            verbatim_hit=verbatim_clause is not None,
            rare_term_score=round(term_score, 6),
            fuzzy_score=round(containment[0], 6),
            matched_terms=tuple(matched),
            matched_text=evidence,
        )
