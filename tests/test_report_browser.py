"""The report in a real headless Chromium, driven over the DevTools protocol.

The page is opened from ``file://``; the test listens to every network request, console message,
exception and JavaScript dialog the page causes, checks that each figure was drawn by plotly, and
saves a full-page screenshot under the test's tmp dir. The DevTools websocket is spoken with the
standard library (a few dozen lines) instead of adding a browser-automation dependency.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
from report_history import SET_HASH, SOURCE, build_family_history, build_history, sha_of
from twin_history import twin_history

from audit.heldout.loader import load_heldout
from audit.report import render_report
from audit.store import Store

CHROMIUM = shutil.which("chromium")
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        CHROMIUM is None,
        reason="Debian's chromium is not on PATH (apt-get install -y chromium; .ci/run does)",
    ),
]

# Each part would set the flag (and open a dialog) if the page let it run.
HOSTILE = (
    "<script>window.__pwned=true;alert(1)</script>"
    '"onload="window.__pwned=true;alert(2)" '
    '<svg onload="window.__pwned=true;alert(3)"></svg>'
    '<img src=x onerror="window.__pwned=true;alert(4)">'
)


class DevToolsSocket:
    """A minimal client websocket (RFC 6455 text frames) for the DevTools protocol."""

    def __init__(self, url: str, timeout_s: float = 30.0) -> None:
        parsed = urlparse(url)
        self.sock = socket.create_connection((parsed.hostname, parsed.port), timeout=timeout_s)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                f"GET {parsed.path} HTTP/1.1\r\nHost: {parsed.hostname}:{parsed.port}\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        response = b""
        while b"\r\n\r\n" not in response:
            response += self.sock.recv(1)
        assert response.startswith(b"HTTP/1.1 101"), response
        self.next_id = 0
        self.events: list[dict[str, Any]] = []

    def _read(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("DevTools socket closed")
            data += chunk
        return data

    def _send_frame(self, opcode: int, payload: bytes) -> None:
        mask = os.urandom(4)
        header = bytes([0x80 | opcode])
        if len(payload) < 126:
            header += bytes([0x80 | len(payload)])
        elif len(payload) < 1 << 16:
            header += bytes([0x80 | 126]) + struct.pack(">H", len(payload))
        else:
            header += bytes([0x80 | 127]) + struct.pack(">Q", len(payload))
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(header + mask + masked)

    def receive(self) -> dict[str, Any]:
        """The next whole JSON message (answers pings, joins fragments)."""
        message = b""
        while True:
            first, second = self._read(2)
            length = second & 0x7F
            if length == 126:
                length = struct.unpack(">H", self._read(2))[0]
            elif length == 127:
                length = struct.unpack(">Q", self._read(8))[0]
            payload = self._read(length)
            opcode = first & 0x0F
            if opcode == 0x9:
                self._send_frame(0xA, payload)
                continue
            if opcode == 0x8:
                raise ConnectionError("DevTools socket closed by the browser")
            message += payload
            if first & 0x80:
                return json.loads(message)

    def call(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        """Send a command and wait for its answer, keeping the events that arrive meanwhile."""
        self.next_id += 1
        command: dict[str, Any] = {"id": self.next_id, "method": method, "params": params}
        if session:
            command["sessionId"] = session
        self._send_frame(0x1, json.dumps(command).encode())
        waiting_for = self.next_id
        while True:
            message = self.receive()
            if message.get("id") == waiting_for:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)
            if message.get("method") == "Page.javascriptDialogOpening":
                # A dialog blocks the page; dismiss it (the event stays recorded) and go on.
                self._dismiss(message.get("sessionId"))

    def _dismiss(self, session: str | None) -> None:
        self.next_id += 1
        command: dict[str, Any] = {
            "id": self.next_id,
            "method": "Page.handleJavaScriptDialog",
            "params": {"accept": False},
        }
        if session:
            command["sessionId"] = session
        self._send_frame(0x1, json.dumps(command).encode())


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[DevToolsSocket]:
    """A fresh headless Chromium (own profile, no background traffic), closed afterwards."""
    assert CHROMIUM is not None
    process = subprocess.Popen(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--no-first-run",
            "--remote-debugging-port=0",
            "--remote-debugging-address=127.0.0.1",
            f"--user-data-dir={tmp_path / 'profile'}",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = _devtools_url(process)
        client = DevToolsSocket(url)
        yield client
        client.sock.close()
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _devtools_url(process: subprocess.Popen[str]) -> str:
    assert process.stderr is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        found = re.search(r"DevTools listening on (ws://\S+)", line)
        if found:
            return found.group(1)
        if not line and process.poll() is not None:
            break
    raise RuntimeError("chromium did not print its DevTools address")


def evaluate(client: DevToolsSocket, session: str, expression: str) -> Any:
    """The value of a JavaScript expression in the page."""
    result = client.call("Runtime.evaluate", session, expression=expression, returnByValue=True)
    return result["result"].get("value")


def open_report(
    client: DevToolsSocket, path: Path, screenshot: Path | None = None
) -> dict[str, Any]:
    """Load ``path`` from file://, wait for every figure, screenshot it; return what happened.

    ``checks["session"]`` is the page's DevTools session, for further questions to the page.
    """
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
    page_url = path.resolve().as_uri()
    client.call("Page.navigate", session, url=page_url)
    checks: dict[str, Any] = {}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        checks = json.loads(
            client.call(
                "Runtime.evaluate",
                session,
                expression=(
                    "JSON.stringify({ready: document.readyState,"
                    " figures: Array.from(document.querySelectorAll('div.fig')).map(d =>"
                    " ({id: d.id, svg: d.querySelectorAll('.main-svg').length,"
                    "   traces: d.querySelectorAll('.trace').length,"
                    "   menus: d.querySelectorAll('.updatemenu-header-group').length})),"
                    # In-page links whose target does not exist (a headline line, a highlight).
                    " broken: Array.from(document.querySelectorAll('a[href^=\"#\"]'))"
                    "   .map(a => a.getAttribute('href').slice(1))"
                    "   .filter(id => !document.getElementById(id)),"
                    " links: document.querySelectorAll('a[href^=\"#\"]').length,"
                    " xss: window.__pwned === true})"
                ),
                returnByValue=True,
            )["result"]["value"]
        )
        if checks["ready"] == "complete" and all(f["svg"] for f in checks["figures"]):
            break
        time.sleep(0.2)
    if screenshot is not None:
        metrics = client.call("Page.getLayoutMetrics", session)["cssContentSize"]
        shot = client.call(
            "Page.captureScreenshot",
            session,
            format="png",
            captureBeyondViewport=True,
            clip={
                "x": 0,
                "y": 0,
                "width": 1400,
                "height": min(metrics["height"], 6000),
                "scale": 1,
            },
        )
        screenshot.write_bytes(base64.b64decode(shot["data"]))
    checks["session"] = session
    events = client.events
    checks["requests"] = [
        e["params"]["request"]["url"]
        for e in events
        if e.get("method") == "Network.requestWillBeSent"
        and e["params"]["request"]["url"] != page_url
        # Plotly paints heatmaps into inline images: data: and blob: URLs never leave the page.
        and not e["params"]["request"]["url"].startswith(("data:", "blob:"))
    ]
    checks["errors"] = [
        e["params"]
        for e in events
        if e.get("method") == "Runtime.exceptionThrown"
        or (e.get("method") == "Runtime.consoleAPICalled" and e["params"]["type"] == "error")
        or (e.get("method") == "Log.entryAdded" and e["params"]["entry"]["level"] == "error")
    ]
    checks["dialogs"] = [e for e in events if e.get("method") == "Page.javascriptDialogOpening"]
    return checks


def test_demo_report_renders_offline_without_errors(
    store: Store, tmp_path: Path, browser: DevToolsSocket
) -> None:
    build_history(store, revisions=10, models=10, scenarios=36, epochs=3)
    report = render_report(store, tmp_path / "drift.html")
    checks = open_report(browser, report, tmp_path / "drift.png")
    assert [f["id"] for f in checks["figures"]] == ["fig-timeline", "fig-heatmap", "fig-scatter"]
    assert all(f["svg"] >= 1 and f["traces"] >= 1 for f in checks["figures"]), checks["figures"]
    assert checks["errors"] == []
    assert checks["requests"] == []
    assert checks["broken"] == []
    assert (tmp_path / "drift.png").stat().st_size > 50_000
    # The figures come right after the headline, before the (folded) findings.
    tops = evaluate(
        browser,
        checks["session"],
        "Object.fromEntries(['headline', 'timeline', 'findings', 'heatmap', 'scatter', 'changes']"
        ".map(id => [id, document.getElementById(id).getBoundingClientRect().top]))",
    )
    assert list(tops) == sorted(tops, key=tops.get)


def test_the_twin_figure_renders_after_the_timeline(
    store: Store, tmp_path: Path, browser: DevToolsSocket
) -> None:
    twin_history(store, load_heldout())
    report = render_report(store, tmp_path / "twins.html")
    checks = open_report(browser, report, tmp_path / "twins.png")
    assert [f["id"] for f in checks["figures"]] == [
        "fig-timeline",
        "fig-twins",
        "fig-heatmap",
        "fig-scatter",
    ]
    assert all(f["svg"] >= 1 and f["traces"] >= 1 for f in checks["figures"]), checks["figures"]
    assert checks["errors"] == [] and checks["requests"] == [] and checks["broken"] == []
    # Two models, each a solid and a dashed line: four legend entries in line order.
    legend = evaluate(
        browser,
        checks["session"],
        "Array.from(document.querySelectorAll('#fig-twins .legendtext')).map(t => t.textContent)",
    )
    assert legend == [
        "mender: public scenarios",
        "mender: sealed twins",
        "patcher: public scenarios",
        "patcher: sealed twins",
    ]
    tops = evaluate(
        browser,
        checks["session"],
        "['timeline', 'twins', 'findings'].map(id => "
        "document.getElementById(id).getBoundingClientRect().top)",
    )
    assert tops == sorted(tops)


def test_model_families_get_menus_and_grouped_links_resolve(
    store: Store, tmp_path: Path, browser: DevToolsSocket
) -> None:
    build_family_history(store)
    report = render_report(store, tmp_path / "families.html")
    html = report.read_text()
    assert 'href="#group-organism-v1__model_version__organism-v0__regression__regression"' in html
    checks = open_report(browser, report, tmp_path / "families.png")
    # Timeline: one family at a time; heatmap and scatter: one model (or change) at a time.
    assert [(f["id"], f["menus"]) for f in checks["figures"]] == [
        ("fig-timeline", 1),
        ("fig-heatmap", 1),
        ("fig-scatter", 1),
    ]
    # The nav, the headline lines and the findings in the scatter list are all in-page links.
    assert checks["links"] >= 12 and checks["broken"] == []
    assert checks["errors"] == []
    assert checks["requests"] == []
    # Finding groups start folded; a link to a finding inside one opens it.
    session = checks["session"]
    folded = "Array.from(document.querySelectorAll('details.group')).map(d => d.open)"
    assert set(evaluate(browser, session, folded)) == {False}
    evaluate(browser, session, "location.hash = '#finding-f-version-2'")
    deadline = time.monotonic() + 10
    while (
        not evaluate(
            browser,
            session,
            "document.getElementById('finding-f-version-2').closest('details').open",
        )
        and time.monotonic() < deadline
    ):
        time.sleep(0.1)
    opened = evaluate(browser, session, folded)
    assert opened.count(True) == 1
    # "show all findings" opens every group; again, folds them.
    evaluate(browser, session, "document.getElementById('toggle-findings').click()")
    assert set(evaluate(browser, session, folded)) == {True}
    evaluate(browser, session, "document.getElementById('toggle-findings').click()")
    assert set(evaluate(browser, session, folded)) == {False}


def _hostile_history(store: Store) -> None:
    """A small history whose spec text, commit messages, answers, a scenario id and a model name
    all carry the payload."""
    build_history(store, revisions=3, models=2, scenarios=4, epochs=2)
    store.con.execute(
        "UPDATE spec_revisions SET message = ?, author_name = ?, content = content || ?",
        ["Add rule " + HOSTILE, "Eve " + HOSTILE, HOSTILE],
    )
    store.con.execute("UPDATE spec_clause_changes SET new_text = ?", ["Never " + HOSTILE])
    store.con.execute("UPDATE samples SET answer = ?", [HOSTILE])
    store.con.execute(
        "UPDATE exposure SET matched_text = ?, matched_terms = [?] "
        "WHERE source_id = ? AND set_hash = ?",
        [HOSTILE, HOSTILE, SOURCE, SET_HASH],
    )
    hostile_scenario = "scn-001" + HOSTILE
    for table in ("samples", "scenarios", "exposure"):
        store.con.execute(
            f"UPDATE {table} SET scenario_id = ? WHERE scenario_id = 'scn-001'", [hostile_scenario]
        )
    store.con.execute(
        "UPDATE findings SET exposed_scenarios = list_transform(exposed_scenarios, "
        "lambda s: CASE WHEN s = 'scn-001' THEN ? ELSE s END)",
        [hostile_scenario],
    )
    hostile_model = "organism" + HOSTILE + "-v1"
    for table in ("samples", "estimates", "findings"):
        store.con.execute(
            f"UPDATE {table} SET model = ? WHERE model = 'organism-v1'", [hostile_model]
        )


def test_hostile_text_does_not_execute_in_the_browser(
    store: Store, tmp_path: Path, browser: DevToolsSocket
) -> None:
    _hostile_history(store)
    report = render_report(store, tmp_path / "hostile.html", include_prompts=True)
    html = report.read_text()
    # The payload reached the page in every place, as text.
    assert "Never &lt;script&gt;window.__pwned=true" in html and sha_of(2)[:7] in html
    assert "<h3>organism&lt;script&gt;window.__pwned=true;alert(1)&lt;/script&gt;" in html
    assert "scn-001&lt;script&gt;" in html
    checks = open_report(browser, report, tmp_path / "hostile.png")
    assert checks["xss"] is False
    assert checks["dialogs"] == []
    assert checks["errors"] == []
    assert checks["requests"] == []
    assert all(f["svg"] >= 1 for f in checks["figures"])
    # Plotly shows the hostile model name as text in the legend; no element was made from it.
    legend = evaluate(
        browser,
        checks["session"],
        "Array.from(document.querySelectorAll('#fig-timeline .legendtext'))"
        ".map(t => t.textContent).join('|')",
    )
    assert "organism<script>window.__pwned=true;alert(1)</script>" in legend
    assert (
        evaluate(browser, checks["session"], "document.querySelectorAll('svg [onload]').length")
        == 0
    )


def test_the_xss_check_catches_a_payload_that_runs(
    store: Store, tmp_path: Path, browser: DevToolsSocket
) -> None:
    """The checks above can fail: the payload unescaped sets the flag, and the report's policy
    stops it even when it slips into the page unescaped."""
    unprotected = tmp_path / "unprotected.html"
    unprotected.write_text(f"<!doctype html><title>control</title><p>{HOSTILE}</p>")
    checks = open_report(browser, unprotected)
    assert checks["xss"] is True and len(checks["dialogs"]) >= 1
    build_history(store, revisions=2, models=1, scenarios=2, epochs=1)
    report = render_report(store, tmp_path / "r.html")
    # As if an escaping bug let the payload through: the policy still blocks every part of it.
    injected = tmp_path / "injected.html"
    injected.write_text(report.read_text().replace("<main>", f"<main><p>{HOSTILE}</p>", 1))
    checks = open_report(browser, injected)
    assert checks["xss"] is False
    assert checks["dialogs"] == []
    assert all(f["svg"] >= 1 for f in checks["figures"])
