"""The gate's verdict as JUnit XML (``audit gate --junit FILE``), the test report format every CI
reads (GitHub Actions through test-report actions, GitLab, Jenkins, Azure, CircleCI).

One ``testsuite`` per compared model, one ``testcase`` per check of
:data:`audit.analysis.gate.GATE_CHECKS`; a failed check carries the gate's reason as the failure
message and the finding's summary as its text. The elements and attributes the strictest common
JUnit schema requires are all written (``testsuite``: name, tests, failures, errors, time,
timestamp, hostname, with ``properties``, ``system-out`` and ``system-err``; ``testcase``: name,
classname, time; ``failure``: message, type), so a strict reader accepts the file too. Text is
made printable first: XML 1.0 cannot carry most control characters at all.
"""

from __future__ import annotations

import re
import socket
import xml.etree.ElementTree as ET
from datetime import UTC, datetime

from audit.analysis.findings import Finding
from audit.analysis.gate import GATE_CHECKS, GateCheck, GateResult, compared_models
from audit.terminal import printable


def gate_junit(
    result: GateResult, *, timestamp: datetime | None = None, hostname: str | None = None
) -> str:
    """The JUnit XML document of a gate result (UTF-8 text with its XML declaration)."""
    moment = (timestamp or datetime.now(UTC)).astimezone(UTC).replace(tzinfo=None)
    host = hostname or socket.gethostname() or "localhost"
    by_model: dict[str, list[GateCheck]] = {}
    for check in result.checks:
        by_model.setdefault(check.model, []).append(check)
    findings = {compared_models(f): f for f in result.findings if f.kind != "leak"}
    leaks = [f for f in result.findings if f.kind == "leak"]
    root = ET.Element("testsuites", name="specdrift gate")
    for index, (model, checks) in enumerate(by_model.items()):
        root.append(_suite(index, model, checks, findings.get(model), leaks, result, moment, host))
    failures = sum(not c.passed for c in result.checks)
    _counts(root, tests=len(result.checks), failures=failures)
    ET.indent(root)
    body = ET.tostring(root, encoding="unicode")
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + body + "\n"


def _suite(
    index: int,
    model: str,
    checks: list[GateCheck],
    finding: Finding | None,
    leaks: list[Finding],
    result: GateResult,
    moment: datetime,
    host: str,
) -> ET.Element:
    suite = ET.Element(
        "testsuite",
        name=_text(f"specdrift gate: {model}"),
        package="specdrift.gate",
        id=str(index),
        timestamp=moment.isoformat(timespec="seconds"),
        hostname=_text(host),
    )
    _counts(suite, tests=len(checks), failures=sum(not c.passed for c in checks))
    properties = ET.SubElement(suite, "properties")
    for name, value in (
        ("baseline_rev", result.baseline_rev),
        ("candidate_rev", result.candidate_rev),
        ("verdict", "passed" if result.passed else "failed"),
    ):
        ET.SubElement(properties, "property", name=name, value=value)
    for check in checks:
        case = ET.SubElement(
            suite,
            "testcase",
            name=GATE_CHECKS[check.check],
            classname=_text(f"specdrift.gate.{model}"),
            time="0",
        )
        if check.reason is not None:
            failure = ET.SubElement(
                case, "failure", message=_text(check.reason, one_line=True), type=check.check
            )
            failure.text = _text(_failure_text(check, finding, leaks))
    summary = finding.summary if finding is not None else ""
    ET.SubElement(suite, "system-out").text = _text(summary)
    mine = [w for w in result.warnings if _about(w, model)]
    ET.SubElement(suite, "system-err").text = _text("\n".join(mine))
    return suite


def _about(warning: str, model: str) -> bool:
    """The warning is about this comparison (its label) or one of its two points."""
    points = model.split(" -> ")
    return warning.startswith(f"{model}: ") or any(
        warning.startswith(f"{m} at the ") for m in points
    )


def _failure_text(check: GateCheck, finding: Finding | None, leaks: list[Finding]) -> str:
    if check.check == "leak":
        return "\n".join(f.summary for f in leaks)
    return finding.summary if finding is not None else check.reason or ""


def _counts(element: ET.Element, *, tests: int, failures: int) -> None:
    element.set("tests", str(tests))
    element.set("failures", str(failures))
    element.set("errors", "0")
    element.set("skipped", "0")
    element.set("time", "0")


_NOT_XML = re.compile("[\ufffe\uffff]")


def _text(text: str, *, one_line: bool = False) -> str:
    """Text XML 1.0 can hold and a terminal can show: control characters made visible (and the
    two non-characters XML excludes, which are no control characters)."""
    shown = printable(text, multiline=not one_line)
    return _NOT_XML.sub(lambda found: f"\\u{ord(found.group()):04x}", shown)
