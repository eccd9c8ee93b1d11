"""Text that is safe to print on a terminal: control characters made visible.

Commit messages, spec text, model names, imported fields, scenario files and database comments
are written by someone else. Printed raw, ``ESC ] 0 ; title BEL`` renames the window, ``ESC [ 2 J``
clears the screen, ``ESC ] 8`` plants a hyperlink, ``CR`` overwrites what the line said and a
right-to-left override reverses it. Every CLI output path that prints such text passes it through
:func:`printable`; the exceptions are ``--json`` output (JSON escapes every C0 control) and the
raw ``audit specs diff --unified`` text, which is the diff as git would print it.
"""

from __future__ import annotations

import re

BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
"""Embeddings, overrides and isolates: they reorder the text around them (Trojan Source)."""

_BIDI = "".join(sorted(BIDI_CONTROLS))
# Tabs are kept everywhere (they only move the cursor right); newlines where the text has lines.
_UNSAFE_IN_LINES = re.compile(f"[\x00-\x08\x0b-\x1f\x7f-\x9f{_BIDI}]")
_UNSAFE_IN_ONE_LINE = re.compile(f"[\x00-\x08\x0a-\x1f\x7f-\x9f{_BIDI}]")
_ANY_CONTROL = re.compile(f"[\x00-\x1f\x7f-\x9f{_BIDI}]")


def _visible(found: re.Match[str]) -> str:
    code = ord(found.group())
    if code < 0x20:
        return "^" + chr(code + 0x40)  # caret notation, as less and cat -v show it: ESC is ^[
    if code == 0x7F:
        return "^?"
    return f"\\u{code:04x}"  # C1 controls and bidi controls have no caret form


def printable(text: str, *, multiline: bool = True) -> str:
    """``text`` with every control character shown as visible characters instead of acting.

    C0 controls appear in caret notation (ESC as ``^[``, BEL as ``^G``, CR as ``^M``), DEL as
    ``^?``, C1 controls (U+0080-U+009F, which some terminals obey as 8-bit escapes) and the
    bidirectional embeddings, overrides and isolates as ``\\uXXXX``. Tabs always stay; newlines
    stay when ``multiline`` (a spec clause, a Markdown summary) and show as ``^J`` otherwise (an
    error message that must stay on one line). The result is for reading, not for parsing back:
    a text that already holds the two characters ``^[`` reads the same as one holding ESC.
    """
    pattern = _UNSAFE_IN_LINES if multiline else _UNSAFE_IN_ONE_LINE
    return pattern.sub(_visible, text)


def has_control_characters(text: str) -> bool:
    """True when ``text`` holds any control character, tab and newline included: names and labels
    (model names, versions) holding one are refused at import rather than stored."""
    return _ANY_CONTROL.search(text) is not None
