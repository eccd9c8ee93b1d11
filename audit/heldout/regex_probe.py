"""Can a grading regex ever match, and does it match everything? Probes for the loader.

A rule whose regex can never match can never fire, and a rule whose regexes match any text fires
on every submission; both are authoring mistakes the loader refuses. Deciding either in general
is hard, so this module tries texts *built from the pattern itself* (each literal, a member of
each character class, the minimum and a few more repetitions, different branches; lookarounds
emit nothing) and asks the compiled pattern whether it finds a match in any of them. A pattern
that matches none of them (``(?!x)x``, ``a\\bb``) is reported as unsatisfiable; a pattern that
matches every one of a few unrelated probe texts, including the empty one, is a catch-all.
"""

from __future__ import annotations

import random
import re
import re._constants as sre_constants
import re._parser as sre_parse
from collections.abc import Iterator
from functools import lru_cache
from typing import Any

_CANDIDATES = "ae0 5_-.xAZ\n/:"
_PROBES = ("", "x", "Some words, 42.", "true", "false", "no", "[]", "{}")
_VARIANTS = 24


@lru_cache(maxsize=4096)
def can_match(pattern: str) -> bool:
    """True when some text built from ``pattern`` is matched by it (case-insensitive search)."""
    compiled = re.compile(pattern, re.IGNORECASE)
    return any(compiled.search(text) for text in _witnesses(pattern, _VARIANTS))


@lru_cache(maxsize=4096)
def matches_anything(pattern: str) -> bool:
    """True when ``pattern`` matches every probe text, the empty one included: a catch-all.

    A pattern with a negative lookaround ("no mention of 870") matches everything but what it
    excludes, so it is never called a catch-all.
    """
    if "(?!" in pattern or "(?<!" in pattern:
        return False
    compiled = re.compile(pattern, re.IGNORECASE)
    return all(compiled.search(text) for text in _PROBES)


def _witnesses(pattern: str, variants: int) -> Iterator[str]:
    # Lazily, so that the common case (the first text matches) builds one text only.
    nodes = list(sre_parse.parse(pattern))
    for variant in range(variants):
        yield _Builder(variant).build(nodes)


class _Builder:
    """Builds one text from a parsed pattern; ``variant`` decides branches and repeat counts."""

    def __init__(self, variant: int) -> None:
        self.variant = variant
        self.random = random.Random(variant)
        self.groups: dict[int, str] = {}

    def _pick(self, count: int) -> int:
        if self.variant == 0 or count <= 1:
            return 0
        if self.variant == 1:
            return min(1, count - 1)
        return self.random.randrange(count)

    def _repeats(self, low: int, high: int) -> int:
        extra = 0 if self.variant == 0 else 1 if self.variant == 1 else self.random.randrange(3)
        return min(low + extra, high)

    def build(self, nodes: list[tuple[Any, Any]]) -> str:
        return "".join(self._node(op, value) for op, value in nodes)

    def _node(self, op: Any, value: Any) -> str:
        if op is sre_constants.LITERAL:
            return chr(value)
        if op is sre_constants.NOT_LITERAL:
            return next(c for c in _CANDIDATES if ord(c) != value)
        if op is sre_constants.ANY:
            return "a"
        if op is sre_constants.IN:
            return _member(value, self._pick)
        if op is sre_constants.BRANCH:
            alternatives = value[1]
            return self.build(list(alternatives[self._pick(len(alternatives))]))
        if op is sre_constants.SUBPATTERN:
            group, _, _, inner = value
            text = self.build(list(inner))
            if group is not None:
                self.groups[group] = text
            return text
        if op in (
            sre_constants.MAX_REPEAT,
            sre_constants.MIN_REPEAT,
            sre_constants.POSSESSIVE_REPEAT,
        ):
            low, high, inner = value
            return "".join(self.build(list(inner)) for _ in range(self._repeats(low, high)))
        if op is sre_constants.ATOMIC_GROUP:
            return self.build(list(value))
        if op is sre_constants.GROUPREF:
            return self.groups.get(value, "")
        if op is sre_constants.AT and value is sre_constants.AT_BOUNDARY:
            # Between two generated words a boundary needs a separator; half the texts get one.
            return " " if self.variant % 2 == 0 else ""
        # Anchors, lookarounds and conditional groups emit no text of their own.
        return ""


def _member(items: list[tuple[Any, Any]], pick: Any) -> str:
    """A character of the class ``items``: its own literals first, then common characters."""
    own = [chr(v) for op, v in items if op is sre_constants.LITERAL]
    own += [chr(v[0]) for op, v in items if op is sre_constants.RANGE]
    members = [c for c in dict.fromkeys(own + list(_CANDIDATES)) if _in_class(c, items)]
    if not members:
        return "\x00"
    return members[pick(len(members))]


def _in_class(char: str, items: list[tuple[Any, Any]]) -> bool:
    negate = any(op is sre_constants.NEGATE for op, _ in items)
    found = any(_item_has(char, op, value) for op, value in items)
    return found != negate


def _item_has(char: str, op: Any, value: Any) -> bool:
    if op is sre_constants.LITERAL:
        return ord(char) == value
    if op is sre_constants.RANGE:
        return bool(value[0] <= ord(char) <= value[1])
    if op is sre_constants.CATEGORY:
        return _in_category(char, value)
    return False


def _in_category(char: str, category: Any) -> bool:
    word = char.isalnum() or char == "_"
    tests = {
        sre_constants.CATEGORY_DIGIT: char.isdigit(),
        sre_constants.CATEGORY_NOT_DIGIT: not char.isdigit(),
        sre_constants.CATEGORY_SPACE: char.isspace(),
        sre_constants.CATEGORY_NOT_SPACE: not char.isspace(),
        sre_constants.CATEGORY_WORD: word,
        sre_constants.CATEGORY_NOT_WORD: not word,
        sre_constants.CATEGORY_LINEBREAK: char == "\n",
        sre_constants.CATEGORY_NOT_LINEBREAK: char != "\n",
    }
    return tests.get(category, False)
