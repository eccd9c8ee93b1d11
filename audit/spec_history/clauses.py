"""Markdown clause splitting and clause-level diffs between two spec texts.

A *clause* is the smallest unit of meaning an auditor talks about: a heading, a bullet, one
sentence of a paragraph, a footnote, a table row or a whole code block. Each carries the heading
path of its section. Clause text is normalised (whitespace collapsed, bullet and quote markers
dropped) so that a cosmetic reformat (re-wrapped lines, ``*`` bullets turned into ``-``,
renumbered lists) compares equal and produces no added or removed clauses.

Matching old against new clauses happens in three passes:

1. identical text in the same relative order: unchanged. difflib first keeps the clauses that
   stayed in their section, then, between those, the ones whose section was only renamed; so
   when a section moves under another heading, the moved section is what is left over;
2. identical text (and heading level) left over on both sides: **moved** (a section that only
   moved is not new text);
3. similar text of the same kind: **reworded**, with the rapidfuzz ``ratio`` as the score. A
   heading whose level changed (``## B`` to ``### B``) is a rewording whose texts show the
   ``#`` markers.

Everything left is **added** or **removed**. The rewording threshold is
:data:`REWORD_THRESHOLD` (70 on rapidfuzz's 0-100 scale): editing a few words of a 15-30 word
sentence keeps it around 80-95, whereas two different sentences of the same spec (shared
vocabulary, different claim) mostly land between 30 and 60, so 70 keeps edits together without
pairing unrelated rules.
"""

from __future__ import annotations

import difflib
import re
from bisect import bisect_left, bisect_right
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
    level: int = 0
    """Heading level (1-6) of a heading; 0 for every other kind."""

    @property
    def marked_text(self) -> str:
        """The text with its Markdown heading marker (``## Title``); other clauses as they are."""
        return f"{'#' * self.level} {self.text}" if self.level else self.text


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

_FENCE_OPEN = re.compile(r"^ {0,3}(`{3,}|~{3,})(.*)$")
_FENCE_CLOSE = re.compile(r"^ {0,3}(`{3,}|~{3,})[ \t]*$")
_HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$")
_ANCHOR = re.compile(r"\s*\{#[^}]*\}\s*$")
_RULE = re.compile(r"^ {0,3}([-*_])([ \t]*\1){2,}[ \t]*$")
_BULLET = re.compile(r"^([ \t]*)(?:[-*+]|\d{1,9}[.)])[ \t]+(.*)$")
_FOOTNOTE = re.compile(r"^ {0,3}\[\^([^\]]+)\]:[ \t]*(.*)$")
_TABLE_RULE = re.compile(r"^[\s|:\-]+$")
_QUOTE = re.compile(r"^ {0,3}>[ \t]?")
# A sentence ends at . ! or ? (optionally closed by quotes, brackets or a footnote reference
# such as [^1]) before an upper-case or opening character; lower-case continuations
# ("e.g. a test") are not split.
_SENTENCE_END = re.compile(r"(?<=[.!?])([\"'”’)\]*_]*(?:\[\^[^\]\s]+\])?)\s+(?=[A-Z0-9\"“‘(\[*_`])")
# The characters str.splitlines() breaks lines at; a line keeps at most one of them (or \r\n).
_LINE_ENDS = "\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"

Headings = tuple[tuple[int, str], ...]
"""The open headings at a point of a document: (level, title without anchor), outermost first."""


def _norm(text: str) -> str:
    # str.split() and the regex \s agree on what whitespace is; split is several times faster.
    return " ".join(text.split())


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


def fence_opening(line: str) -> tuple[str, int] | None:
    """(fence character, fence length) if ``line`` opens a fenced code block, else None.

    CommonMark's rule: up to three spaces, then three or more backticks or tildes; the info
    string after backticks may not contain a backtick (that is inline code, not a fence).
    """
    match = _FENCE_OPEN.match(line)
    if match is None:
        return None
    marker = match.group(1)
    if marker[0] == "`" and "`" in match.group(2):
        return None
    return marker[0], len(marker)


def closes_fence(line: str, char: str, length: int) -> bool:
    """Whether ``line`` closes a block opened by ``length`` of ``char``.

    CommonMark's rule: the same character, at least as many of it, up to three spaces before
    and nothing but spaces after (an info string only follows an opening fence).
    """
    match = _FENCE_CLOSE.match(line)
    return match is not None and match.group(1)[0] == char and len(match.group(1)) >= length


class _Splitter:
    """Line-by-line Markdown reader; small state machine, one pass.

    Lines may carry their line ending (``split_lines``) or not (``str.splitlines``): the ending
    is dropped before a line is read, so both give the same clauses.
    """

    def __init__(self, headings: Headings = ()) -> None:
        self.clauses: list[Clause] = []
        self.headings: list[tuple[int, str]] = list(headings)
        self.section = " > ".join(name for _, name in headings)
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
        self.clauses.append(Clause("heading", parent, _norm(title), level))
        self.headings.append((level, _norm(_ANCHOR.sub("", title))))
        self.section = " > ".join(name for _, name in self.headings)

    def run(self, lines: Sequence[str], start: int = 0, stop: int | None = None) -> list[Clause]:
        """Read ``lines[start:stop]`` and return every clause found so far."""
        stop = len(lines) if stop is None else stop
        i = start
        blank_before = True
        while i < stop:
            line = lines[i].rstrip(_LINE_ENDS)
            fence = fence_opening(line)
            if fence:
                i = self.code_block(lines, i, stop, fence)
                blank_before = False
                continue
            self.line(line, blank_before)
            blank_before = not line.strip()
            i += 1
        self.flush()
        return self.clauses

    def code_block(
        self, lines: Sequence[str], start: int, stop: int, fence: tuple[str, int]
    ) -> int:
        """Read a fenced block (to its closing fence, or to the end) as one clause."""
        self.flush()
        body = [lines[start].strip()]
        i = start + 1
        while i < stop:
            line = lines[i].rstrip(_LINE_ENDS)
            body.append(line.rstrip())
            i += 1
            if closes_fence(line, *fence):
                break
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
    return _Splitter().run(markdown.splitlines())


def _starts_block(lines: Sequence[str], i: int) -> bool:
    """Whether line ``i`` (outside a code block) starts a block: a line after a blank line,
    not blank and not indented.

    :class:`_Splitter` ends every paragraph and list item before such a line whatever it is,
    so a fresh splitter that only knows the open headings reads the rest the same way.
    """
    line = lines[i]
    return not lines[i - 1].strip() and line[:1] not in (" ", "\t") and bool(line.strip())


class ClauseSplitter:
    """:func:`split_clauses` for successive revisions of one text, re-reading only what changed.

    The text is cut into blocks (see :func:`_starts_block`; never inside a fenced code block).
    For a new revision, the blocks before the first changed line are kept; reading resumes at
    the block holding the line before it and stops as soon as a block start falls in the
    unchanged tail at a point where the old revision also started a block under the same open
    headings: from there on, the old revision's clauses are reused as they are (the same
    objects, which also makes comparing them with the previous revision cheap). The result is
    always equal to ``split_clauses`` of the same text.
    """

    def __init__(self) -> None:
        self._lines: Sequence[str] = ()
        self._starts: list[int] = []  # first line of each block
        self._ends: list[int] = []  # number of clauses up to the end of each block
        self._headings: list[Headings] = []  # headings open after each block
        self._clauses: list[Clause] = []

    def split(self, lines: Sequence[str], ends: tuple[int, int] | None = None) -> list[Clause]:
        """Clauses of the text made of ``lines`` (from ``split_lines`` or ``str.splitlines``).

        ``ends`` is ``common_ends(previous lines, lines)`` when the caller has it already.
        The returned list must not be modified.
        """
        old = self._lines
        prefix, suffix = common_ends(old, lines) if ends is None else ends
        if prefix == len(old) == len(lines):
            self._lines = lines
            return self._clauses
        k = max(bisect_right(self._starts, prefix - 1) - 1, 0)
        kept_clauses = self._ends[k - 1] if k else 0
        starts, ends_, headings = self._starts[:k], self._ends[:k], self._headings[:k]
        clauses = self._clauses[:kept_clauses]
        open_headings: Headings = headings[-1] if k else ()
        shift = len(lines) - len(old)
        resume_at = len(lines) - suffix + 1  # lines from here and the one before are unchanged
        block = self._starts[k] if self._starts else 0
        fence: tuple[str, int] | None = None
        i = block
        while i < len(lines):
            line = lines[i].rstrip(_LINE_ENDS)
            if fence is not None:
                if closes_fence(line, *fence):
                    fence = None
            elif i > block and _starts_block(lines, i):
                open_headings = _read_block(lines, block, i, open_headings, clauses)
                starts.append(block)
                ends_.append(len(clauses))
                headings.append(open_headings)
                reused = self._old_block_at(i - shift) if i >= resume_at else None
                if reused is not None and self._headings[reused - 1] == open_headings:
                    # From here on the old revision is read the same way: reuse its blocks.
                    offset = len(clauses) - self._ends[reused - 1]
                    clauses.extend(self._clauses[self._ends[reused - 1] :])
                    starts += map(shift.__add__, self._starts[reused:])
                    ends_ += map(offset.__add__, self._ends[reused:])
                    headings.extend(self._headings[reused:])
                    break
                block = i
                fence = fence_opening(line)
            else:
                fence = fence_opening(line)
            i += 1
        else:
            open_headings = _read_block(lines, block, len(lines), open_headings, clauses)
            starts.append(block)
            ends_.append(len(clauses))
            headings.append(open_headings)
        self._lines, self._starts, self._clauses = lines, starts, clauses
        self._ends, self._headings = ends_, headings
        return clauses

    def _old_block_at(self, line: int) -> int | None:
        """Index of the previous revision's block starting at ``line``, if one does."""
        index = bisect_left(self._starts, line)
        if index < len(self._starts) and self._starts[index] == line and index > 0:
            return index
        return None


def _read_block(
    lines: Sequence[str], start: int, stop: int, headings: Headings, out: list[Clause]
) -> Headings:
    """Append the clauses of ``lines[start:stop]`` to ``out``; return the headings open after."""
    splitter = _Splitter(headings)
    out.extend(splitter.run(lines, start, stop))
    return tuple(splitter.headings)


# -- diffing ------------------------------------------------------------------------------------


def diff_clauses(
    old: Sequence[Clause], new: Sequence[Clause], *, threshold: float = REWORD_THRESHOLD
) -> list[ClauseChange]:
    """Clause-level changes from ``old`` to ``new``, ordered by position in the new text.

    Removed clauses are placed after the last unchanged clause that preceded them.
    """
    prefix, suffix = common_ends(old, new)
    # Only the middle can hold changes; working on it keeps long, lightly edited specs fast.
    old = old[prefix : len(old) - suffix]
    new = new[prefix : len(new) - suffix]
    pairs = _unchanged_pairs(old, new)
    matched_old = {o for o, _ in pairs}
    matched_new = {n for _, n in pairs}
    rest_old = [i for i in range(len(old)) if i not in matched_old]
    rest_new = [j for j in range(len(new)) if j not in matched_new]

    found: list[tuple[float, ClauseChange]] = []
    rest_old, rest_new = _pair_moved(old, new, rest_old, rest_new, found)
    rest_old, rest_new = _pair_same_title(old, new, rest_old, rest_new, found)
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


def common_ends(old: Sequence[object], new: Sequence[object]) -> tuple[int, int]:
    """Lengths of the common prefix and of the common suffix (not overlapping it).

    Binary search over slice comparisons: list equality runs in C (and stops at identical
    objects without comparing them), a Python loop would not.
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


def _unchanged_pairs(old: Sequence[Clause], new: Sequence[Clause]) -> list[tuple[int, int]]:
    """(old index, new index) of the clauses kept in order.

    First the clauses kept in the same section (so that when a section moves under another
    heading, it is the moved section's clauses that are left over, not those of the sections
    it passed); then, between those, the clauses kept under a renamed heading.
    """
    in_place = _matching(
        [(c.section, c.level, c.text) for c in old], [(c.section, c.level, c.text) for c in new]
    )
    pairs: list[tuple[int, int]] = []
    last_old = last_new = 0
    for i, j in [*in_place, (len(old), len(new))]:
        if i > last_old and j > last_new:
            gap = _matching(
                [(c.level, c.text) for c in old[last_old:i]],
                [(c.level, c.text) for c in new[last_new:j]],
            )
            pairs += [(last_old + a, last_new + b) for a, b in gap]
        if i < len(old):
            pairs.append((i, j))
        last_old, last_new = i + 1, j + 1
    return pairs


def _matching(old: list[object], new: list[object]) -> list[tuple[int, int]]:
    """(old index, new index) of the items difflib keeps in order."""
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
    """Identical text (and heading level) on both sides: moved."""
    by_text: dict[tuple[int, str], list[int]] = defaultdict(list)
    for i in rest_old:
        by_text[(old[i].level, old[i].text)].append(i)
    used_old: set[int] = set()
    left_new: list[int] = []
    for j in rest_new:
        candidates = by_text.get((new[j].level, new[j].text))
        if candidates:
            i = candidates.pop(0)
            used_old.add(i)
            c = new[j]
            found.append((j, ClauseChange("moved", c.kind, c.section, old[i].text, c.text, 100.0)))
        else:
            left_new.append(j)
    return [i for i in rest_old if i not in used_old], left_new


def _pair_same_title(
    old: Sequence[Clause],
    new: Sequence[Clause],
    rest_old: list[int],
    rest_new: list[int],
    found: list[tuple[float, ClauseChange]],
) -> tuple[list[int], list[int]]:
    """Headings whose title stayed while the anchor (``{#id}``) changed: reworded, even when a
    short title makes the texts' similarity fall under the threshold."""
    by_title: dict[str, list[int]] = defaultdict(list)
    for i in rest_old:
        if old[i].level:
            by_title[_title(old[i].text)].append(i)
    used_old: set[int] = set()
    left_new: list[int] = []
    for j in rest_new:
        candidates = by_title.get(_title(new[j].text)) if new[j].level else None
        if candidates:
            i = candidates.pop(0)
            used_old.add(i)
            found.append((j, _reworded(old[i], new[j], fuzz.ratio(old[i].text, new[j].text))))
        else:
            left_new.append(j)
    return [i for i in rest_old if i not in used_old], left_new


def _title(heading: str) -> str:
    return _norm(_ANCHOR.sub("", heading))


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
        found.append((j, _reworded(old[i], new[j], score)))
    return (
        [i for i in rest_old if i not in used_old],
        [j for j in rest_new if j not in used_new],
    )


def _reworded(old: Clause, new: Clause, score: float) -> ClauseChange:
    """A rewording; a heading whose level changed shows its markers, so the change is visible."""
    if old.level != new.level:
        old_text, new_text = old.marked_text, new.marked_text
        score = fuzz.ratio(old_text, new_text)
    else:
        old_text, new_text = old.text, new.text
    return ClauseChange("reworded", new.kind, new.section, old_text, new_text, round(score, 1))


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
    old_lines: Sequence[str],
    new_lines: Sequence[str],
    old_label: str,
    new_label: str,
    ends: tuple[int, int] | None = None,
) -> LineDiff:
    """:func:`unified_line_diff` on texts already split by :func:`split_lines`.

    ``ends`` is ``common_ends(old_lines, new_lines)`` when the caller has it already.
    """
    prefix, suffix = common_ends(old_lines, new_lines) if ends is None else ends
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


_OTHER_LINE_ENDS = tuple(_LINE_ENDS.replace("\n", ""))


def split_lines_after(
    old_text: str, old_lines: list[str], new_text: str
) -> tuple[list[str], tuple[int, int]]:
    """``split_lines(new_text)`` and its :func:`common_ends` with ``old_lines``, which must be
    ``split_lines(old_text)``; the lines outside the changed part are the old line objects.

    For a long text edited in a few places this skips splitting and comparing the unchanged
    lines: the common start and end are found on the characters (comparisons in C), turned
    into line counts by counting newlines, and only the middle is split. Texts with other
    line breaks than ``\\n`` (``\\r``, form feeds ...) take the plain path.
    """
    if any(mark in old_text or mark in new_text for mark in _OTHER_LINE_ENDS):
        new_lines = split_lines(new_text)
        return new_lines, common_ends(old_lines, new_lines)
    n_old, n_new = len(old_text), len(new_text)
    prefix_chars, suffix_chars = common_ends(old_text, new_text)
    # Whole lines before the first changed character, and whole lines after the last one
    # (not touching the changed characters, so the line breaks around them are the same).
    head = old_text.count("\n", 0, max(prefix_chars - 1, 0))
    head_end = old_text.rfind("\n", 0, max(prefix_chars - 1, 0)) + 1
    tail_from = n_old - suffix_chars
    tail = old_text.count("\n", tail_from, n_old - 1) if suffix_chars else 0
    tail_start = old_text.find("\n", tail_from, n_old - 1) + 1 if tail else n_old
    middle = new_text[head_end : n_new - (n_old - tail_start)].splitlines(keepends=True)
    if not tail and middle and not middle[-1].endswith("\n"):
        middle[-1] += "\n"  # the middle ends the text: split_lines' rule for the last line
    new_lines = old_lines[:head] + middle + old_lines[len(old_lines) - tail :]
    return new_lines, _extend_ends(old_lines, new_lines, head, tail)


def _extend_ends(
    old: Sequence[str], new: Sequence[str], prefix: int, suffix: int
) -> tuple[int, int]:
    """``common_ends(old, new)``, grown from a valid common prefix and suffix (usually by one
    line or none)."""
    limit = min(len(old), len(new))
    while prefix < limit and old[prefix] == new[prefix]:
        prefix += 1
    suffix = min(suffix, limit - prefix)
    while prefix + suffix < limit and old[-1 - suffix] == new[-1 - suffix]:
        suffix += 1
    return prefix, suffix
