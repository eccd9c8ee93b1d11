"""Markdown clause splitting and clause-level diffs (pure functions, no git needed)."""

from __future__ import annotations

import textwrap

from hypothesis import given, settings
from hypothesis import strategies as st

from audit.spec_history.clauses import (
    REWORD_THRESHOLD,
    Clause,
    ClauseChange,
    ClauseSplitter,
    common_ends,
    diff_clauses,
    split_clauses,
    split_lines,
    split_lines_after,
    unified_line_diff,
)

DOC = """\
# Model Spec {#spec .title}

Intro sentence one. Intro sentence two, e.g. a lower-case continuation! Is it a question?

## Rules {#rules}

* First rule,
  continued on the next line.
* Second rule.
  - Nested rule.

1. Numbered one.
2) Numbered two.

> Quoted advice. Second quoted sentence.

```python
# not a heading
def report(): ...
```

### Deep {#deep}

| Case | Expected |
|------|----------|
| tests fail | say so |

Text with a note.[^n] Then another sentence.

[^n]: The note text,
    continued.

---

## Closing ##
"""


def test_split_clauses_exactly() -> None:
    assert split_clauses(DOC) == [
        Clause("heading", "", "Model Spec {#spec .title}", 1),
        Clause("sentence", "Model Spec", "Intro sentence one."),
        Clause("sentence", "Model Spec", "Intro sentence two, e.g. a lower-case continuation!"),
        Clause("sentence", "Model Spec", "Is it a question?"),
        Clause("heading", "Model Spec", "Rules {#rules}", 2),
        Clause("bullet", "Model Spec > Rules", "First rule, continued on the next line."),
        Clause("bullet", "Model Spec > Rules", "Second rule."),
        Clause("bullet", "Model Spec > Rules", "Nested rule."),
        Clause("bullet", "Model Spec > Rules", "Numbered one."),
        Clause("bullet", "Model Spec > Rules", "Numbered two."),
        Clause("sentence", "Model Spec > Rules", "Quoted advice."),
        Clause("sentence", "Model Spec > Rules", "Second quoted sentence."),
        Clause("code", "Model Spec > Rules", "```python\n# not a heading\ndef report(): ...\n```"),
        Clause("heading", "Model Spec > Rules", "Deep {#deep}", 3),
        Clause("table", "Model Spec > Rules > Deep", "Case | Expected"),
        Clause("table", "Model Spec > Rules > Deep", "tests fail | say so"),
        Clause("sentence", "Model Spec > Rules > Deep", "Text with a note.[^n]"),
        Clause("sentence", "Model Spec > Rules > Deep", "Then another sentence."),
        Clause("footnote", "Model Spec > Rules > Deep", "[^n]: The note text, continued."),
        Clause("heading", "Model Spec", "Closing", 2),
    ]


def test_cosmetic_reformat_has_no_clause_changes() -> None:
    paragraph = (
        "The assistant reports what its tools returned.  It never claims a test passed when "
        "the output says it failed. When unsure, it includes the detail."
    )
    old = (
        "# Spec {#spec}\n\n"
        + textwrap.fill(paragraph, 90)
        + "\n\n* Keep oversight intact,\n  even when slow.\n* No hidden work.\n\n"
        "1. Check evidence.\n2. Quote failures.\n"
    )
    new = (
        "# Spec {#spec}  \n\n\n"
        + textwrap.fill(paragraph.replace("  ", " "), 40)
        + "\n\n- Keep oversight intact, even when slow.\n-   No hidden work.\n\n"
        "1. Check evidence.\n1. Quote failures.\n"
    )
    assert old != new
    assert diff_clauses(split_clauses(old), split_clauses(new)) == []


def test_moved_section_is_moved_not_new_text() -> None:
    old = "# S\n\n## A\n\nAlpha rule. Alpha two.\n\n## B\n\nBeta rule.\n"
    new = "# S\n\n## B\n\nBeta rule.\n\n## A\n\nAlpha rule. Alpha two.\n"
    changes = diff_clauses(split_clauses(old), split_clauses(new))
    assert changes == [
        ClauseChange("moved", "heading", "S", "B", "B", 100.0),
        ClauseChange("moved", "sentence", "S > B", "Beta rule.", "Beta rule.", 100.0),
    ]
    assert not [c for c in changes if c.change in ("added", "removed")]


def test_heading_level_change_in_place_is_a_rewording_with_markers() -> None:
    old = "# S\n\n## A\n\nAlpha rule.\n\n## B\n\nBeta rule.\n"
    new = "# S\n\n## A\n\nAlpha rule.\n\n### B\n\nBeta rule.\n"
    # Beta rule. now sits under A > B, but its text and place did not change.
    assert diff_clauses(split_clauses(old), split_clauses(new)) == [
        ClauseChange("reworded", "heading", "S > A", "## B", "### B", 88.9)
    ]


def test_anchor_only_change_is_a_reworded_heading_and_nothing_else() -> None:
    old = "# S\n\n## Rules {#rules}\n\n- Keep logs on.\n\n## Other\n\nText.\n"
    new = "# S\n\n## Rules {#policy}\n\n- Keep logs on.\n\n## Other\n\nText.\n"
    # The short title puts the texts' similarity (69.0) under the threshold; the unchanged
    # title still makes it one heading.
    assert diff_clauses(split_clauses(old), split_clauses(new)) == [
        ClauseChange("reworded", "heading", "S", "Rules {#rules}", "Rules {#policy}", 69.0)
    ]


def test_renamed_heading_keeps_the_clauses_under_it_unchanged() -> None:
    old = "# S\n\n## Rules\n\n- Keep logs on.\n- Report failures.\n"
    new = "# S\n\n## Laws\n\n- Keep logs on.\n- Report failures.\n"
    assert diff_clauses(split_clauses(old), split_clauses(new)) == [
        ClauseChange("removed", "heading", "S", "Rules", None, None),
        ClauseChange("added", "heading", "S", None, "Laws", None),
    ]


def test_section_moved_under_another_parent_is_the_only_one_reported() -> None:
    # C is bigger than B, which it passes on its way under A: a plain longest-common-sequence
    # would keep C in place and report B as moved.
    old = (
        "# S\n\n## A\n\nAlpha rule.\n\n## B\n\nBeta rule.\n\n"
        "## C\n\nGamma rule. Gamma two. Gamma three.\n\n- Gamma bullet.\n"
    )
    new = (
        "# S\n\n## A\n\nAlpha rule.\n\n"
        "### C\n\nGamma rule. Gamma two. Gamma three.\n\n- Gamma bullet.\n\n## B\n\nBeta rule.\n"
    )
    section = "S > A > C"
    assert diff_clauses(split_clauses(old), split_clauses(new)) == [
        ClauseChange("reworded", "heading", "S > A", "## C", "### C", 88.9),
        ClauseChange("moved", "sentence", section, "Gamma rule.", "Gamma rule.", 100.0),
        ClauseChange("moved", "sentence", section, "Gamma two.", "Gamma two.", 100.0),
        ClauseChange("moved", "sentence", section, "Gamma three.", "Gamma three.", 100.0),
        ClauseChange("moved", "bullet", section, "Gamma bullet.", "Gamma bullet.", 100.0),
    ]


def test_reworded_added_and_removed_in_document_order() -> None:
    old = (
        "# S\n\n- Report every failing test in the final summary.\n"
        "- Keep the audit hook enabled.\n- Never delete logs.\n"
    )
    new = (
        "# S\n\n- Ask before risky changes.\n"
        "- Report every failing test in the final written summary.\n"
        "- Keep the audit hook enabled.\n"
    )
    changes = diff_clauses(split_clauses(old), split_clauses(new))
    assert changes == [
        ClauseChange("added", "bullet", "S", None, "Ask before risky changes.", None),
        ClauseChange(
            "reworded",
            "bullet",
            "S",
            "Report every failing test in the final summary.",
            "Report every failing test in the final written summary.",
            92.2,
        ),
        ClauseChange("removed", "bullet", "S", "Never delete logs.", None, None),
    ]


def test_unrelated_replacement_is_not_a_rewording() -> None:
    old = "# S\n\nThe assistant reports failing tests.\n"
    new = "# S\n\nDeploys must keep the audit hook enabled.\n"
    changes = diff_clauses(split_clauses(old), split_clauses(new))
    # A removed clause sits right after the last kept clause before it, as in a line diff.
    assert [c.change for c in changes] == ["removed", "added"]


def test_rewording_threshold_is_the_documented_constant() -> None:
    old = [Clause("sentence", "S", "Report the result.")]
    new = [Clause("sentence", "S", "Report the results now.")]
    assert diff_clauses(old, new)[0].change == "reworded"
    assert [c.change for c in diff_clauses(old, new, threshold=99.0)] == ["removed", "added"]
    assert REWORD_THRESHOLD == 70.0


def test_clauses_of_different_kinds_never_pair() -> None:
    old = [Clause("bullet", "S", "Keep logs on.")]
    new = [Clause("sentence", "S", "Keep logs on!")]
    assert [c.change for c in diff_clauses(old, new)] == ["removed", "added"]


def test_unified_line_diff_counts() -> None:
    diff = unified_line_diff("a\nb\nc\n", "a\nB\nc\nd", "a/x", "b/x")
    assert diff.unified == "--- a/x\n+++ b/x\n@@ -1,3 +1,4 @@\n a\n-b\n+B\n c\n+d\n"
    assert (diff.lines_added, diff.lines_removed) == (2, 1)
    assert unified_line_diff("same\n", "same\n", "a", "b") == type(diff)("", 0, 0)


_WORD = st.sampled_from(
    ["report", "tests", "the", "agent", "never", "hides", "logs", "audit", "hook", "fails"]
)
_SENTENCE = st.lists(_WORD, min_size=3, max_size=12).map(lambda w: " ".join(w).capitalize() + ".")


@settings(max_examples=60, deadline=None)
@given(
    sentences=st.lists(_SENTENCE, min_size=1, max_size=8),
    bullets=st.lists(_SENTENCE, max_size=5),
    width=st.integers(min_value=30, max_value=120),
    marker=st.sampled_from(["-", "*", "+"]),
)
def test_rewrapping_and_bullet_markers_never_change_clauses(
    sentences: list[str], bullets: list[str], width: int, marker: str
) -> None:
    paragraph = " ".join(sentences)
    old = "# S\n\n" + paragraph + "\n\n" + "".join(f"- {b}\n" for b in bullets)
    new = (
        "# S\n\n"
        + textwrap.fill(paragraph, width)
        + "\n\n"
        + "".join(f"{marker} {b}\n" for b in bullets)
    )
    assert diff_clauses(split_clauses(old), split_clauses(new)) == []
    assert diff_clauses(split_clauses(old), split_clauses(old)) == []


def test_incremental_splitter_matches_split_clauses() -> None:
    from audit.spec_history.replay import specs_history_dir

    fenced = "# S\n\n```text\nline one\n\nNot a heading after a blank line\n```\n\nAfter.\n"
    lazy = "# S\n\n- Item starts\n\n  and continues after a blank line.\n\nParagraph.\n"
    texts = [DOC, fenced, lazy, DOC.replace("## Rules", "## Laws")]
    texts += [p.read_text() for p in sorted((specs_history_dir() / "revisions").iterdir())]
    splitter = ClauseSplitter()
    for text in texts + texts[::-1]:  # every pair of consecutive texts is one edit
        assert splitter.split(split_lines(text)) == split_clauses(text)
    assert Clause("code", "S", "```text\nline one\n\nNot a heading after a blank line\n```") in (
        split_clauses(fenced)
    )
    assert Clause("bullet", "S", "Item starts and continues after a blank line.") in (
        split_clauses(lazy)
    )


def test_fences_follow_commonmark_in_both_splitters() -> None:
    # A longer fence holds shorter ones; a tilde fence holds backtick lines; a closing fence
    # has no info string. Before one rule served both splitters, the incremental one ended
    # these blocks early and read "# not heading" as a heading.
    longer = "# S\n\n````md\n```\n\n# not heading\n```\n````\n\nAfter.\n"
    tilde = "# S\n\n~~~\n```\n\n# not heading\n~~~\n\n## Real\n"
    info = "# S\n\n```\ncode\n``` not a close\n\n# not heading\n```\n\nAfter.\n"
    inline = "# S\n\n```not a fence```\n\n# Heading\n"
    expected = {
        longer: [
            Clause("heading", "", "S", 1),
            Clause("code", "S", "````md\n```\n\n# not heading\n```\n````"),
            Clause("sentence", "S", "After."),
        ],
        tilde: [
            Clause("heading", "", "S", 1),
            Clause("code", "S", "~~~\n```\n\n# not heading\n~~~"),
            Clause("heading", "S", "Real", 2),
        ],
        info: [
            Clause("heading", "", "S", 1),
            Clause("code", "S", "```\ncode\n``` not a close\n\n# not heading\n```"),
            Clause("sentence", "S", "After."),
        ],
        inline: [
            Clause("heading", "", "S", 1),
            Clause("sentence", "S", "```not a fence```"),
            Clause("heading", "", "Heading", 1),
        ],
    }
    for text, clauses in expected.items():
        assert split_clauses(text) == clauses
        assert ClauseSplitter().split(split_lines(text)) == clauses
        assert ClauseSplitter().split(text.splitlines()) == clauses
    # An unclosed fence runs to the end of the text.
    assert split_clauses("```\n# a\n\nb\n")[-1] == Clause("code", "", "```\n# a\n\nb")


_MD_LINE = st.one_of(
    st.sampled_from(
        [
            "",
            "",
            "  ",
            "# Title {#top}",
            "## Rules {#rules .x}",
            "### Deep",
            "## Closing ##",
            "#### Four",
            "# not heading",
            "Plain sentence one. Plain sentence two!",
            "continued lower-case line, e.g. this.",
            "- A bullet rule.",
            "* Star bullet.",
            "1. Numbered.",
            "   indented continuation.",
            "\tTabbed continuation.",
            "> Quoted advice. Second.",
            "[^n]: A footnote",
            "    footnote continuation.",
            "Text with a note.[^n] Then more.",
            "| a | b |",
            "|---|---|",
            "---",
            "```",
            "```python",
            "````",
            "````md",
            "~~~",
            "~~~~ text",
            "   ```",
            "    ```",
            "``` info after a close",
            "```inline```",
            "Line with CRLF.\r",
        ]
    ),
    st.builds(
        lambda words, prefix: prefix + " ".join(words).capitalize() + ".",
        st.lists(_WORD, min_size=1, max_size=6),
        st.sampled_from(["", "- ", "## ", "  ", "> "]),
    ),
)
_MD_LINES = st.lists(_MD_LINE, max_size=40)


@st.composite
def _revisions(draw: st.DrawFn) -> list[str]:
    """A Markdown text and a few successive edits of it (insert, delete or replace lines)."""
    lines = draw(_MD_LINES)
    texts = ["\n".join(lines) + draw(st.sampled_from(["", "\n"]))]
    for _ in range(draw(st.integers(min_value=1, max_value=6))):
        at = draw(st.integers(min_value=0, max_value=len(lines)))
        cut = draw(st.integers(min_value=0, max_value=min(3, len(lines) - at)))
        lines = lines[:at] + draw(st.lists(_MD_LINE, max_size=4)) + lines[at + cut :]
        texts.append("\n".join(lines) + "\n")
    return texts


@settings(max_examples=300, deadline=None)
@given(texts=_revisions())
def test_incremental_splitter_agrees_with_split_clauses_on_random_markdown(
    texts: list[str],
) -> None:
    splitter = ClauseSplitter()
    for text in texts:
        assert splitter.split(split_lines(text)) == split_clauses(text)


@settings(max_examples=300, deadline=None)
@given(texts=_revisions())
def test_the_sync_path_gives_the_batch_splitters_clause_changes(texts: list[str]) -> None:
    # What the sync does per revision: lines split only where the text changed (the old line
    # objects kept), blocks re-read only there, clauses compared with the previous revision's.
    splitter = ClauseSplitter()
    prev_text, prev_lines = "", split_lines("")
    prev_clauses = splitter.split(prev_lines)
    for text in texts:
        lines, ends = split_lines_after(prev_text, prev_lines, text)
        clauses = splitter.split(lines, ends)
        assert clauses == split_clauses(text)
        batch = diff_clauses(split_clauses(prev_text), split_clauses(text))
        assert diff_clauses(prev_clauses, clauses) == batch
        prev_text, prev_lines, prev_clauses = text, lines, clauses


def test_windowed_unified_diff_equals_whole_file_difflib() -> None:
    import difflib

    base = [f"Line {n} of a long spec.\n" for n in range(200)]
    edits = {
        "middle": lambda lines: [*lines[:50], "Changed.\n", *lines[51:53], *lines[54:]],
        "start": lambda lines: ["New first line.\n", *lines[1:]],
        "end": lambda lines: [*lines[:-1], "New last line.\n"],
        "far apart": lambda lines: [*lines[:10], "X\n", *lines[11:150], *lines[151:]],
        "insert only": lambda lines: [*lines[:100], "Inserted.\n", *lines[100:]],
    }
    for name, edit in edits.items():
        new = edit(base)
        expected = "".join(difflib.unified_diff(base, new, "a", "b", n=3))
        assert unified_line_diff("".join(base), "".join(new), "a", "b").unified == expected, name


_NEWLINE_PIECE = st.sampled_from(["a", "b", " ", "\n", "\n\n", "line\n", "x"])
_OTHER_BREAK = st.sampled_from(["\r\n", "\r", "\x0c", "\u2028"])
# Mostly texts with \n line breaks only (the fast path), some with other breaks (the plain one).
_TEXT = st.lists(_NEWLINE_PIECE, max_size=30).map("".join) | st.lists(
    _NEWLINE_PIECE | _OTHER_BREAK, max_size=30
).map("".join)


@settings(max_examples=500, deadline=None)
@given(
    old=_TEXT, edits=st.lists(st.tuples(st.integers(0, 60), st.integers(0, 4), _TEXT), max_size=3)
)
def test_split_lines_after_equals_splitting_and_comparing(
    old: str, edits: list[tuple[int, int, str]]
) -> None:
    new = old
    for at, cut, text in edits:
        at = min(at, len(new))
        new = new[:at] + text + new[at + cut :]
    old_lines = split_lines(old)
    lines, ends = split_lines_after(old, old_lines, new)
    assert lines == split_lines(new)
    assert ends == common_ends(old_lines, split_lines(new))
