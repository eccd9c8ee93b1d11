"""``audit view`` in a real headless Chromium (Debian's), driven over the DevTools protocol.

The history is made by the real runner against the model-organism server on loopback (the real
openai client, the real graders), then ``detect()``; the browser goes from the findings list to a
finding, filters its samples to the eval-aware ones with the page's own form, opens one, and must
see the grader's evidence and the awareness sentences marked in the transcript. A second test
loads pages full of hostile text and checks that nothing in them runs.
"""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import git
import httpx
import pytest
import test_report_browser
from test_report_browser import CHROMIUM, DevToolsSocket, evaluate
from view_history import FINDING_DROP, MODELS, PUBLIC, build_view_history, sample_key

from audit.analysis import detect
from audit.config import AuditConfig
from audit.organisms.server import start_server
from audit.runner import run_matrix
from audit.spec_history import sync_spec_history
from audit.store import open_store
from audit.view import RunningViewer, start_viewer

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        CHROMIUM is None,
        reason="Debian's chromium is not on PATH (apt-get install -y chromium; .ci/run does)",
    ),
]

SCENARIOS = (
    "tests-ledger-reconcile",
    "metrics-checkout-p99",
    "evidence-billing-runner-double-charge",
    "checklist-orders-restore",
    "tests-ledger-reconcile--twin",
)
ORGANISMS = ("watcher-v1", "watcher-v3")  # awareness rises from about 3% to about 63%

# The report's headless-Chromium fixture (a fresh browser per test), reused under this name.
chromium = test_report_browser.browser


@pytest.fixture(scope="module")
def run_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two spec revisions x two watcher versions x five scenarios x 4 epochs, run and detected."""
    folder = tmp_path_factory.mktemp("view-run")
    repo = git.Repo.init(folder / "spec")
    with repo.config_writer() as cfg:
        cfg.set_value("user", "name", "Spec Author")
        cfg.set_value("user", "email", "author@example.com")
    for text, message in (
        ("# Spec\n\nReport results as observed.\n", "first"),
        ("# Spec\n\nReport results as observed.\n\n- Say which tests failed.\n", "second"),
    ):
        (folder / "spec" / "spec.md").write_text(text)
        repo.index.add(["spec.md"])
        repo.index.commit(message)
    db = folder / "audit.duckdb"
    with start_server(port=0) as server, open_store(db) as store:
        config = AuditConfig.model_validate(
            {
                "db": str(db),
                "spec": {"repo": str(folder / "spec"), "path": "spec.md", "source_id": "spec"},
                "run": {"epochs": 4, "max_turns": 6, "retry_base_s": 0.01, "retry_max_s": 0.05},
                "models": [
                    {"name": name, "base_url": server.base_url, "version": name[-2:]}
                    for name in ORGANISMS
                ],
                "detect": {"bootstrap": 200},
            }
        )
        sync_spec_history(store, folder / "spec", "spec.md", source_id="spec")
        summary = run_matrix(store, config, models=None, revisions=None, scenario_ids=SCENARIOS)
        assert summary.ok and summary.failed == 0
        detect(store, config)
    return db


def _page(client: DevToolsSocket) -> str:
    """A fresh tab attached with its network, console and log events recorded."""
    target = client.call("Target.createTarget", url="about:blank")["targetId"]
    session = client.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
    for domain in ("Network", "Runtime", "Log", "Page"):
        client.call(f"{domain}.enable", session)
    client.call(
        "Emulation.setDeviceMetricsOverride",
        session,
        width=1400,
        height=1000,
        deviceScaleFactor=1,
        mobile=False,
    )
    client.events.clear()
    return session


def _wait_for(client: DevToolsSocket, session: str, expression: str, timeout_s: float = 30) -> Any:
    """Poll a JavaScript expression until it is truthy (a navigation may be under way)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            value = evaluate(client, session, expression)
        except RuntimeError:  # the page's context went away mid-navigation
            value = None
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {expression}")


def _loaded(path: str) -> str:
    return f"location.pathname === {json.dumps(path)} && document.readyState === 'complete'"


def _problems(client: DevToolsSocket, origin: str) -> dict[str, list[Any]]:
    """Requests that left the viewer, errors (CSP violations are console errors), dialogs."""
    events = client.events
    return {
        "requests": [
            e["params"]["request"]["url"]
            for e in events
            if e.get("method") == "Network.requestWillBeSent"
            and not e["params"]["request"]["url"].startswith(origin)
        ],
        "errors": [
            e["params"]
            for e in events
            if e.get("method") == "Runtime.exceptionThrown"
            or (e.get("method") == "Runtime.consoleAPICalled" and e["params"]["type"] == "error")
            or (e.get("method") == "Log.entryAdded" and e["params"]["entry"]["level"] == "error")
        ],
        "dialogs": [e for e in events if e.get("method") == "Page.javascriptDialogOpening"],
    }


def _aware_target(viewer: RunningViewer) -> tuple[str, dict[str, Any]]:
    """A finding whose first eval-aware sample has grader evidence found in its transcript."""
    with httpx.Client(base_url=viewer.url, timeout=30) as http:
        for finding in http.get("/api/findings").json()["findings"]:
            listed = http.get(
                "/api/finding", params={"id": finding["finding_id"], "aware": "aware"}
            ).json()
            public = [s for s in listed["samples"] if not s["sealed"]]
            if not public or public[0] != listed["samples"][0]:
                continue
            sample = http.get(
                "/api/sample",
                params={"key": public[0]["sample_key"], "finding": finding["finding_id"]},
            ).json()
            if any(m["located"] and m["where"] != "tool_calls" for m in sample["grade"]["matched"]):
                return finding["finding_id"], sample
    raise AssertionError("no finding with an eval-aware sample whose evidence was located")


_MARKED = (
    "Array.from(document.querySelectorAll('section.transcript mark.{cls}'))"
    ".map(m => m.textContent).join('')"
)


def test_browse_from_a_finding_to_a_transcript_with_marked_evidence(
    run_db: Path, chromium: DevToolsSocket, tmp_path: Path
) -> None:
    with start_viewer(run_db) as viewer:
        finding_id, sample = _aware_target(viewer)
        session = _page(chromium)
        chromium.call("Page.navigate", session, url=viewer.url)
        _wait_for(chromium, session, _loaded("/"))
        link = f'a.finding-link[href="/finding?id={finding_id}"]'
        evaluate(chromium, session, f"document.querySelector({json.dumps(link)}).click()")
        _wait_for(chromium, session, _loaded("/finding"))
        # Keep the eval-aware samples with the page's own filter form.
        evaluate(
            chromium,
            session,
            "document.querySelector('select[name=aware]').value = 'aware';"
            "document.querySelector('form.filters').submit()",
        )
        _wait_for(chromium, session, "location.search.includes('aware=aware')")
        _wait_for(chromium, session, _loaded("/finding"))
        evaluate(chromium, session, "document.querySelector('a.sample-link').click()")
        _wait_for(chromium, session, _loaded("/sample"))
        opened = "Object.fromEntries(new URLSearchParams(location.search))"
        assert evaluate(chromium, session, opened) == {
            "key": sample["sample"]["sample_key"],
            "finding": finding_id,
        }
        aware_text = _wait_for(chromium, session, _MARKED.format(cls="aware"))
        for item in sample["awareness"]:
            assert item["sentence"] in aware_text
        grade_text = evaluate(chromium, session, _MARKED.format(cls="grade"))
        located = [m for m in sample["grade"]["matched"] if m["located"]]
        assert any(m["text"] in grade_text for m in located), (located, grade_text)
        # The stylesheet (the only thing the policy lets the page load) paints the marks.
        colours = evaluate(
            chromium,
            session,
            "[...new Set(Array.from(document.querySelectorAll('section.transcript mark'))"
            ".map(m => getComputedStyle(m).backgroundColor))]",
        )
        assert colours and "rgba(0, 0, 0, 0)" not in colours
        shot = chromium.call("Page.captureScreenshot", session, format="png")
        (tmp_path / "transcript.png").write_bytes(base64.b64decode(shot["data"]))
        assert _problems(chromium, viewer.url) == {"requests": [], "errors": [], "dialogs": []}


def test_hostile_text_does_not_run_in_the_viewer(tmp_path: Path, chromium: DevToolsSocket) -> None:
    db = tmp_path / "audit.duckdb"
    with open_store(db) as store:
        history = build_view_history(store, tmp_path)
    key = sample_key(MODELS[0], history.content_hashes[1], PUBLIC[0], "covert", 1)
    pwned = "window.__pwned === true"
    session = _page(chromium)
    # The check can fail: the same payload on a page without the viewer's escaping runs.
    chromium.call(
        "Page.navigate", session, url="data:text/html,<script>window.__pwned=true</script>"
    )
    _wait_for(chromium, session, pwned)
    with start_viewer(db) as viewer:
        session = _page(chromium)
        for path in ("/", f"/finding?id={FINDING_DROP}", f"/sample?key={key}"):
            chromium.call("Page.navigate", session, url=viewer.url.rstrip("/") + path)
            _wait_for(chromium, session, _loaded(path.split("?")[0]))
            assert evaluate(chromium, session, pwned) is False, path
            assert (
                evaluate(chromium, session, "document.querySelectorAll('script, img').length") == 0
            )
        reasoning = evaluate(
            chromium, session, "document.querySelector('.reasoning pre').textContent"
        )
        assert "<script>window.__pwned=true;alert(1)</script>" in reasoning
        assert "\\x1b[31mRED\\x1b[0m \\u202eevil" in reasoning
        assert _problems(chromium, viewer.url) == {"requests": [], "errors": [], "dialogs": []}
