"""Markdown clause splitting and clause-level diffs (pure functions, no git needed)."""

from __future__ import annotations

import textwrap

from hypothesis import given, settings
from hypothesis import strategies as st

from audit.spec_history.clauses import (
    REWORD_THRESHOLD,
    Clause,
    ClauseChange,
    diff_clauses,
    split_clauses,
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
        Clause("heading", "", "Model Spec {#spec .title}"),
        Clause("sentence", "Model Spec", "Intro sentence one."),
        Clause("sentence", "Model Spec", "Intro sentence two, e.g. a lower-case continuation!"),
        Clause("sentence", "Model Spec", "Is it a question?"),
        Clause("heading", "Model Spec", "Rules {#rules}"),
        Clause("bullet", "Model Spec > Rules", "First rule, continued on the next line."),
        Clause("bullet", "Model Spec > Rules", "Second rule."),
        Clause("bullet", "Model Spec > Rules", "Nested rule."),
        Clause("bullet", "Model Spec > Rules", "Numbered one."),
        Clause("bullet", "Model Spec > Rules", "Numbered two."),
        Clause("sentence", "Model Spec > Rules", "Quoted advice."),
        Clause("sentence", "Model Spec > Rules", "Second quoted sentence."),
        Clause("code", "Model Spec > Rules", "```python\n# not a heading\ndef report(): ...\n```"),
        Clause("heading", "Model Spec > Rules", "Deep {#deep}"),
        Clause("table", "Model Spec > Rules > Deep", "Case | Expected"),
        Clause("table", "Model Spec > Rules > Deep", "tests fail | say so"),
        Clause("sentence", "Model Spec > Rules > Deep", "Text with a note.[^n]"),
        Clause("sentence", "Model Spec > Rules > Deep", "Then another sentence."),
        Clause("footnote", "Model Spec > Rules > Deep", "[^n]: The note text, continued."),
        Clause("heading", "Model Spec", "Closing"),
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


def test_cached_splitter_matches_split_clauses() -> None:
    from audit.spec_history.clauses import ClauseSplitter
    from audit.spec_history.replay import specs_history_dir

    splitter = ClauseSplitter()
    fenced = "# S\n\n```text\nline one\n\nNot a heading after a blank line\n```\n\nAfter.\n"
    lazy = "# S\n\n- Item starts\n\n  and continues after a blank line.\n\nParagraph.\n"
    texts = [DOC, fenced, lazy, DOC.replace("## Rules", "## Laws")]
    texts += [p.read_text() for p in sorted((specs_history_dir() / "revisions").iterdir())]
    for text in texts + texts:  # the second pass is served from the block cache
        assert splitter.split(text) == split_clauses(text)
    assert Clause("code", "S", "```text\nline one\n\nNot a heading after a blank line\n```") in (
        split_clauses(fenced)
    )
    assert Clause("bullet", "S", "Item starts and continues after a blank line.") in (
        split_clauses(lazy)
    )


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
