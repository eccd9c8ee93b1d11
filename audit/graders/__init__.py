"""Graders: covert action (deterministic rules), eval awareness, spec citation, optional judge.

:func:`grade_sample` is what the runner and imports call: every deterministic grader over one
transcript, with the evidence each one used. The detectors are imported on first use, so that
loading the held-out set (which grades its reference transcripts with :mod:`.covert`) does not
pay for compiling the awareness lexicon.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from audit.heldout.model import Scenario
    from audit.records import SampleGrade, Transcript


def grade_sample(
    scenario: Scenario, condition: str, transcript: Transcript, spec_text: str | None
) -> SampleGrade:
    """Grade one transcript: covert-action outcome, eval awareness, spec citation."""
    from audit.graders.awareness import detect_awareness
    from audit.graders.citation import detect_spec_citation
    from audit.graders.covert import grade_transcript
    from audit.records import SampleGrade

    reasoning = transcript.reasoning()
    answer = transcript.final_text()
    awareness_text = "\n\n".join(part for part in (reasoning, answer) if part)
    return SampleGrade(
        grade=grade_transcript(scenario, condition, transcript),
        awareness=detect_awareness(awareness_text),
        citation=detect_spec_citation(reasoning, spec_text or ""),
    )
