"""Markdown clause splitting and clause-level diffs between two spec texts.

A *clause* is the smallest unit of meaning an auditor talks about: a heading, a bullet, one
sentence of a paragraph, a footnote, a table row or a whole code block. Each carries the heading
path of its section. Clause text is normalised (whitespace collapsed, bullet and quote markers
dropped) so that a cosmetic reformat (re-wrapped lines, ``*`` bullets turned into ``-``,
renumbered lists) compares equal and produces no added or removed clauses.

Matching old against new clauses happens in three passes:

1. identical text in the same relative order (difflib on the clause texts): unchanged;
2. identical text left over on both sides: **moved** (a section that only moved is not new text);
3. similar text of the same kind: **reworded**, with the rapidfuzz ``ratio`` as the score.

Everything left is **added** or **removed**. The rewording threshold is
:data:`REWORD_THRESHOLD` (70 on rapidfuzz's 0-100 scale): editing a few words of a 15-30 word
sentence keeps it around 80-95, whereas two different sentences of the same spec (shared
vocabulary, different claim) mostly land between 30 and 60, so 70 keeps edits together without
pairing unrelated rules.
"""

from __future__ import annotations

import difflib
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from rapidfuzz import fuzz, process

REWORD_THRESHOLD = 70.0
"""Minimum rapidfuzz ratio (0-100) for a removed and an added clause to count as one rewording."""

_MAX_FUZZY_PAIRS = 4_000_000
"""Above this many candidate pairs, rewording is only searched within the same section."""

CLAUSE_KINDS = ("heading", "bullet", "sentence", "code", "footnote", "table")


@dataclass(frozen=True, slots=True)
class Clause:
    """One clause of a Markdown document, with normalised text and its section path."""

    kind: str
    section: str
    text: str


@dataclass(frozen=True, slots=True)
class ClauseChange:
    """How one clause differs between an old and a new text."""

    change: str  # added | removed | reworded | moved
    kind: str
    section: str
    old_text: str | None
    new_text: str | None
    similarity: float | None

    def as_dict(self) -> dict[str, object]:
        """Plain dict for JSON output and storage."""
        return {
            "change": self.change,
            "clause_kind": self.kind,
            "section": self.section,
            "old_text": self.old_text,
            "new_text": self.new_text,
            "similarity": self.similarity,
        }


# -- splitting ----------------------------------------------------------------------------------

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})(.*)$")
_HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$")
_ANCHOR = re.compile(r"\s*\{#[^}]*\}\s*$")
_RULE = re.compile(r"^ {0,3}([-*_])([ \t]*\1){2,}[ \t]*$")
_BULLET = re.compile(r"^([ \t]*)(?:[-*+]|\d{1,9}[.)])[ \t]+(.*)$")
_FOOTNOTE = re.compile(r"^ {0,3}\[\^([^\]]+)\]:[ \t]*(.*)$")
_TABLE_RULE = re.compile(r"^[\s|:\-]+$")
_QUOTE = re.compile(r"^ {0,3}>[ \t]?")
_SPACE = re.compile(r"\s+")
# A sentence ends at . ! or ? (optionally closed by quotes, brackets or a footnote reference
# such as [^1]) before an upper-case or opening character; lower-case continuations
# ("e.g. a test") are not split.
_SENTENCE_END = re.compile(r"(?<=[.!?])([\"'”’)\]*_]*(?:\[\^[^\]\s]+\])?)\s+(?=[A-Z0-9\"“‘(\[*_`])")


def _norm(text: str) -> str:
    return _SPACE.sub(" ", text).strip()


def _sentences(paragraph: str) -> list[str]:
    text = _norm(paragraph)
    if not text:
        return []
    parts: list[str] = []
    start = 0
    for match in _SENTENCE_END.finditer(text):
        end = match.end(1)
        parts.append(text[start:end].strip())
        start = match.end()
    parts.append(text[start:].strip())
    return [p for p in parts if p]


class _Splitter:
    """Line-by-line Markdown reader; small state machine, one pass."""

    def __init__(self) -> None:
        self.clauses: list[Clause] = []
        self.headings: list[tuple[int, str]] = []
        self.section = ""
        self.paragraph: list[str] = []
        self.item: list[str] | None = None
        self.item_kind = "bullet"

    def flush(self) -> None:
        if self.paragraph:
            for sentence in _sentences(" ".join(self.paragraph)):
                self.clauses.append(Clause("sentence", self.section, sentence))
            self.paragraph = []
        if self.item is not None:
            text = _norm(" ".join(self.item))
            if text:
                self.clauses.append(Clause(self.item_kind, self.section, text))
            self.item = None

    def heading(self, level: int, title: str) -> None:
        self.flush()
        while self.headings and self.headings[-1][0] >= level:
            self.headings.pop()
        # A heading belongs to its parent section; the clauses under it to its own.
        parent = " > ".join(name for _, name in self.headings)
        self.clauses.append(Clause("heading", parent, _norm(title)))
        self.headings.append((level, _norm(_ANCHOR.sub("", title))))
        self.section = " > ".join(name for _, name in self.headings)

    def run(self, markdown: str) -> list[Clause]:
        lines = markdown.splitlines()
        i = 0
        blank_before = True
        while i < len(lines):
            line = lines[i]
            fence = _FENCE.match(line)
            if fence:
                i = self.code_block(lines, i, fence.group(1))
                blank_before = False
                continue
            self.line(line, blank_before)
            blank_before = not line.strip()
            i += 1
        self.flush()
        return self.clauses

    def code_block(self, lines: list[str], start: int, marker: str) -> int:
        self.flush()
        body = [lines[start].strip()]
        i = start + 1
        while i < len(lines):
            body.append(lines[i].rstrip())
            if lines[i].strip().startswith(marker[0] * len(marker)) and not lines[i].strip(
                marker[0] + " \t"
            ):
                i += 1
                break
            i += 1
        self.clauses.append(Clause("code", self.section, "\n".join(body)))
        return i

    def line(self, line: str, blank_before: bool) -> None:
        stripped = line.strip()
        if not stripped:
            # A blank line ends a paragraph; a list item may continue with indented lines.
            if self.paragraph:
                self.flush()
            return
        if m := _HEADING.match(line):
            self.heading(len(m.group(1)), m.group(2))
        elif _RULE.match(line):
            self.flush()
        elif m := _FOOTNOTE.match(line):
            self.flush()
            self.item, self.item_kind = [f"[^{m.group(1)}]: {m.group(2)}"], "footnote"
        elif m := _BULLET.match(line):
            self.flush()
            self.item, self.item_kind = [m.group(2)], "bullet"
        elif stripped.startswith("|"):
            self.flush()
            if not _TABLE_RULE.match(stripped):
                cells = [_norm(c) for c in stripped.strip("|").split("|")]
                self.clauses.append(Clause("table", self.section, " | ".join(cells)))
        elif self.item is not None and (not blank_before or line[:1] in (" ", "\t")):
            self.item.append(stripped)
        else:
            if self.item is not None:
                self.flush()
            self.paragraph.append(_QUOTE.sub("", line).strip())


def split_clauses(markdown: str) -> list[Clause]:
    """Split a Markdown text into clauses, in document order."""
    return _Splitter().run(markdown)


# Blocks end at a blank line followed by an unindented line (an indented one may continue a
# list item); a code fence left open inside a block is joined with the following blocks.
_BLOCK_BREAK = re.compile(r"\n[ \t]*\n(?=[^ \t\n])")
_FENCE_LINE = re.compile(r"^ {0,3}(?:`{3,}|~{3,})", re.MULTILINE)


class ClauseSplitter:
    """:func:`split_clauses` with a cache of Markdown blocks, for many revisions of one text.

    Consecutive revisions share almost all of their blocks, so each block is split once per
    heading context. The result is identical to :func:`split_clauses`.
    """

    def __init__(self, max_blocks: int = 200_000) -> None:
        self._cache: dict[tuple[tuple[tuple[int, str], ...], str], _BlockResult] = {}
        self._max_blocks = max_blocks

    def split(self, markdown: str) -> list[Clause]:
        clauses: list[Clause] = []
        headings: tuple[tuple[int, str], ...] = ()
        for block in _blocks(markdown):
            key = (headings, block)
            result = self._cache.get(key)
            if result is None:
                splitter = _Splitter()
                splitter.headings = list(headings)
                splitter.section = " > ".join(name for _, name in headings)
                result = (tuple(splitter.run(block)), tuple(splitter.headings))
                if len(self._cache) >= self._max_blocks:
                    self._cache.clear()  # bounded memory on very long histories
                self._cache[key] = result
            clauses.extend(result[0])
            headings = result[1]
        return clauses


_BlockResult = tuple[tuple[Clause, ...], tuple[tuple[int, str], ...]]


def _blocks(markdown: str) -> list[str]:
    blocks: list[str] = []
    pending = ""
    for part in _BLOCK_BREAK.split(markdown):
        pending = f"{pending}\n\n{part}" if pending else part
        fenced = "```" in pending or "~~~" in pending
        if not fenced or len(_FENCE_LINE.findall(pending)) % 2 == 0:
            blocks.append(pending)
            pending = ""
    if pending:
        blocks.append(pending)
    return blocks


# -- diffing ------------------------------------------------------------------------------------


def diff_clauses(
    old: Sequence[Clause], new: Sequence[Clause], *, threshold: float = REWORD_THRESHOLD
) -> list[ClauseChange]:
    """Clause-level changes from ``old`` to ``new``, ordered by position in the new text.

    Removed clauses are placed after the last unchanged clause that preceded them.
    """
    prefix, suffix = _common_ends([c.text for c in old], [c.text for c in new])
    # Only the middle can hold changes; working on it keeps long, lightly edited specs fast.
    old = old[prefix : len(old) - suffix]
    new = new[prefix : len(new) - suffix]
    pairs = _unchanged_pairs([c.text for c in old], [c.text for c in new])
    matched_old = {o for o, _ in pairs}
    matched_new = {n for _, n in pairs}
    rest_old = [i for i in range(len(old)) if i not in matched_old]
    rest_new = [j for j in range(len(new)) if j not in matched_new]

    found: list[tuple[float, ClauseChange]] = []
    rest_old, rest_new = _pair_moved(old, new, rest_old, rest_new, found)
    rest_old, rest_new = _pair_reworded(old, new, rest_old, rest_new, found, threshold)
    for j in rest_new:
        c = new[j]
        found.append((j, ClauseChange("added", c.kind, c.section, None, c.text, None)))
    anchor = _removed_anchor(pairs, len(old))
    for i in rest_old:
        c = old[i]
        found.append((anchor[i], ClauseChange("removed", c.kind, c.section, c.text, None, None)))
    found.sort(key=lambda item: item[0])
    return [change for _, change in found]


def _common_ends(old: Sequence[str], new: Sequence[str]) -> tuple[int, int]:
    """Lengths of the common prefix and of the common suffix (not overlapping it).

    Binary search over slice comparisons: list equality runs in C, a Python loop would not.
    """
    limit = min(len(old), len(new))
    low, high = 0, limit
    while low < high:
        mid = (low + high + 1) // 2
        if old[low:mid] == new[low:mid]:
            low = mid
        else:
            high = mid - 1
    prefix = low
    n_old, n_new = len(old), len(new)
    low, high = 0, limit - prefix
    while low < high:
        mid = (low + high + 1) // 2
        if old[n_old - mid : n_old - low] == new[n_new - mid : n_new - low]:
            low = mid
        else:
            high = mid - 1
    return prefix, low


def _unchanged_pairs(old: list[str], new: list[str]) -> list[tuple[int, int]]:
    """(old index, new index) of the clauses kept in order (difflib's matching blocks)."""
    if not old or not new:
        return []
    matcher = difflib.SequenceMatcher(None, old, new, autojunk=False)
    return [
        (block.a + k, block.b + k)
        for block in matcher.get_matching_blocks()
        for k in range(block.size)
    ]


def _pair_moved(
    old: Sequence[Clause],
    new: Sequence[Clause],
    rest_old: list[int],
    rest_new: list[int],
    found: list[tuple[float, ClauseChange]],
) -> tuple[list[int], list[int]]:
    by_text: dict[str, list[int]] = defaultdict(list)
    for i in rest_old:
        by_text[old[i].text].append(i)
    used_old: set[int] = set()
    left_new: list[int] = []
    for j in rest_new:
        candidates = by_text.get(new[j].text)
        if candidates:
            i = candidates.pop(0)
            used_old.add(i)
            c = new[j]
            found.append((j, ClauseChange("moved", c.kind, c.section, old[i].text, c.text, 100.0)))
        else:
            left_new.append(j)
    return [i for i in rest_old if i not in used_old], left_new


def _pair_reworded(
    old: Sequence[Clause],
    new: Sequence[Clause],
    rest_old: list[int],
    rest_new: list[int],
    found: list[tuple[float, ClauseChange]],
    threshold: float,
) -> tuple[list[int], list[int]]:
    if not rest_old or not rest_new:
        return rest_old, rest_new
    # Only clauses of the same kind can be rewordings of each other; huge rewrites are
    # compared within their section only, so the pair count stays bounded.
    wide = len(rest_old) * len(rest_new) > _MAX_FUZZY_PAIRS
    groups_old: dict[tuple[str, str], list[int]] = defaultdict(list)
    groups_new: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i in rest_old:
        groups_old[(old[i].kind, old[i].section if wide else "")].append(i)
    for j in rest_new:
        groups_new[(new[j].kind, new[j].section if wide else "")].append(j)
    candidates: list[tuple[float, int, int]] = []
    for key, news in groups_new.items():
        olds = groups_old.get(key)
        if not olds:
            continue
        scores = process.cdist(
            [new[j].text for j in news],
            [old[i].text for i in olds],
            scorer=fuzz.ratio,
            score_cutoff=threshold,
            workers=1,
        )
        for a, b in zip(*scores.nonzero(), strict=True):
            candidates.append((float(scores[a, b]), news[a], olds[b]))
    # Greedy best-first assignment: each clause is paired at most once.
    candidates.sort(key=lambda t: (-t[0], t[1], t[2]))
    used_old: set[int] = set()
    used_new: set[int] = set()
    for score, j, i in candidates:
        if j in used_new or i in used_old:
            continue
        used_new.add(j)
        used_old.add(i)
        c = new[j]
        change = ClauseChange("reworded", c.kind, c.section, old[i].text, c.text, round(score, 1))
        found.append((j, change))
    return (
        [i for i in rest_old if i not in used_old],
        [j for j in rest_new if j not in used_new],
    )


def _removed_anchor(pairs: list[tuple[int, int]], n_old: int) -> list[float]:
    """Sort position of each old clause: just after the new position of the last kept clause."""
    kept = dict(pairs)
    anchor: list[float] = []
    last = -1.0
    for i in range(n_old):
        if i in kept:
            last = float(kept[i])
        # Fractions keep removed clauses in their old order after the same anchor.
        anchor.append(last + 0.5 + i / (2.0 * (n_old + 1)))
    return anchor


# -- line diff ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LineDiff:
    """A unified diff and its line counts."""

    unified: str
    lines_added: int
    lines_removed: int


def unified_line_diff(old: str, new: str, old_label: str, new_label: str) -> LineDiff:
    """Line-level unified diff (stdlib difflib, three lines of context) with +/- counts.

    difflib only sees the changed middle of the two texts plus the context lines around it;
    hunk headers are shifted back to whole-file line numbers. Same output, much less work on
    long specs with small edits.
    """
    return diff_lines(split_lines(old), split_lines(new), old_label, new_label)


def diff_lines(
    old_lines: Sequence[str], new_lines: Sequence[str], old_label: str, new_label: str
) -> LineDiff:
    """:func:`unified_line_diff` on texts already split by :func:`split_lines`."""
    prefix, suffix = _common_ends(old_lines, new_lines)
    start = max(0, prefix - _CONTEXT)
    keep_end = max(0, suffix - _CONTEXT)
    out = list(
        difflib.unified_diff(
            old_lines[start : len(old_lines) - keep_end],
            new_lines[start : len(new_lines) - keep_end],
            old_label,
            new_label,
            n=_CONTEXT,
        )
    )
    if start:
        out = [_shift_hunk(line, start) if line.startswith("@@") else line for line in out]
    added = sum(1 for line in out[2:] if line.startswith("+"))
    removed = sum(1 for line in out[2:] if line.startswith("-"))
    return LineDiff("".join(out), added, removed)


_CONTEXT = 3
_HUNK = re.compile(r"^@@ -(\d+)(,\d+)? \+(\d+)(,\d+)? @@")


def _shift_hunk(header: str, offset: int) -> str:
    m = _HUNK.match(header)
    assert m is not None  # difflib always writes this shape
    old_range = f"{int(m[1]) + offset}{m[2] or ''}"
    new_range = f"{int(m[3]) + offset}{m[4] or ''}"
    return f"@@ -{old_range} +{new_range} @@{header[m.end() :]}"


def split_lines(text: str) -> list[str]:
    """Lines with their endings; a missing final newline is added so diffs stay well-formed."""
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    return lines
