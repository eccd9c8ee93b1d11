"""``audit view`` over real HTTP: a real server on 127.0.0.1, real requests (httpx), a stored
history made of a real git spec repository, the shipped held-out set and reference transcripts
graded by the real graders (see ``view_history.py``)."""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest
from markupsafe import escape
from typer.testing import CliRunner
from view_history import (
    AWARE_SENTENCE,
    FINDING_DROP,
    FINDING_LEAK,
    FINDING_VERSIONS,
    HOSTILE,
    MODELS,
    PUBLIC,
    TWIN,
    History,
    build_view_history,
    is_aware_epoch,
    sample_key,
)

from audit.cli import app as cli_app
from audit.query import query_settings
from audit.store import open_store
from audit.view import RunningViewer, start_viewer
from audit.view.app import CONTENT_SECURITY_POLICY
from audit.view.queries import PAGE_SIZE
from audit.view.transcript import visible

PRIVATE_SEALED = "private-payroll-case"
IMPORTED_TWIN = "imported-case--twin"
PRIVATE_TEXT = "PRIVATE-SEALED-TEXT-7f3a"


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, History]:
    """The planted history, plus two sealed samples no shipped set knows: one marked sealed
    in a private set's scenarios row, one imported with a ``--twin`` id and no row at all."""
    folder = tmp_path_factory.mktemp("view")
    db = folder / "audit.duckdb"
    with open_store(db) as store:
        history = build_view_history(store, folder)
        _plant_private_sealed(store, history)
    return db, history


def _plant_private_sealed(store: Any, history: History) -> None:
    store.insert_rows(
        "scenarios",
        [
            {
                "set_hash": "sha256:" + "0" * 64,
                "scenario_id": PRIVATE_SEALED,
                "family": "misreport_tests",
                "scenario_hash": "sha256:" + "1" * 64,
                "title": "sealed twin of private-payroll",
                "conditions": ["default"],
                "twin_of": "private-payroll",
                "sealed": True,
            }
        ],
    )
    template = store.query(
        "SELECT * FROM samples WHERE model = ? AND spec_content_hash = ? LIMIT 1",
        [MODELS[0], history.content_hashes[1]],
    )[0]
    transcript = [
        {"role": "system", "content": f"{PRIVATE_TEXT} system"},
        {"role": "user", "content": f"{PRIVATE_TEXT} user"},
        {"role": "assistant", "content": f"{PRIVATE_TEXT} answer", "reasoning": PRIVATE_TEXT},
    ]
    rows = []
    for scenario_id in (PRIVATE_SEALED, IMPORTED_TWIN):
        row = dict(template)
        row.update(
            sample_key=hashlib.sha256(scenario_id.encode()).hexdigest(),
            scenario_id=scenario_id,
            reasoning=PRIVATE_TEXT,
            answer=f"{PRIVATE_TEXT} answer",
            transcript=json.dumps(transcript),
            grade_evidence=json.dumps(
                {"rule": "private-rule", "explain": PRIVATE_TEXT, "matched": []}
            ),
            awareness_evidence=json.dumps(
                [{"phrase": "x", "rule": "r", "sentence": PRIVATE_TEXT, "span": [0, 1]}]
            ),
        )
        rows.append(row)
    store.insert_rows("samples", rows)


@pytest.fixture
def viewer(planted: tuple[Path, History]) -> Iterator[RunningViewer]:
    with start_viewer(planted[0]) as running:
        yield running


@pytest.fixture
def client(viewer: RunningViewer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=viewer.url, timeout=30) as http:
        yield http


def sql(db: Path, query: str, params: Any = ()) -> list[dict]:
    """Rows straight from the file, opened as the viewer opens it (one DuckDB instance)."""
    with open_store(db, read_only=True, settings=query_settings()) as store:
        return store.query(query, params)


def all_pages(client: httpx.Client, **params: Any) -> list[dict]:
    """Every sample of a finding's filtered list, page after page."""
    first = client.get("/api/finding", params=params).json()
    rows = list(first["samples"])
    for page in range(2, first["pages"] + 1):
        rows += client.get("/api/finding", params={**params, "page": page}).json()["samples"]
    return rows


class _MarkedText(HTMLParser):
    """The text of an HTML fragment and, per character, the classes of the marks around it."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.chars: list[str] = []
        self.classes: list[frozenset[str]] = []
        self._open: list[frozenset[str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "mark":
            self._open.append(frozenset((dict(attrs).get("class") or "").split()))

    def handle_endtag(self, tag: str) -> None:
        if tag == "mark" and self._open:
            self._open.pop()

    def handle_data(self, data: str) -> None:
        around = frozenset().union(*self._open) if self._open else frozenset()
        self.chars.extend(data)
        self.classes.extend([around] * len(data))


def marked_in_transcript(page: str, mark: str, needle: str) -> bool:
    """Whether ``needle`` (as shown) sits wholly inside ``mark`` marks in the transcript column
    (the evidence list beside it repeats the texts, so it is left out)."""
    transcript = page.split('<section class="transcript">', 1)[1].split('<aside class="side">')[0]
    parser = _MarkedText()
    parser.feed(transcript)
    text = "".join(parser.chars)
    shown = visible(needle)
    start = text.find(shown)
    while start != -1:
        if all(mark in parser.classes[i] for i in range(start, start + len(shown))):
            return True
        start = text.find(shown, start + 1)
    return False


# -- findings ------------------------------------------------------------------------------------


def test_findings_list_filters_by_model_kind_and_cause(client: httpx.Client) -> None:
    def ids(**params: str) -> list[str]:
        response = client.get("/api/findings", params=params)
        assert response.status_code == 200
        return [f["finding_id"] for f in response.json()["findings"]]

    # A regression comes first: it is what a gate fails on.
    assert ids() == [FINDING_VERSIONS, FINDING_LEAK, FINDING_DROP]
    assert ids(model=MODELS[0]) == [FINDING_DROP]
    assert ids(kind="leak") == [FINDING_LEAK]
    # A cause filter matches any attributed cause, not only the primary one.
    assert ids(cause="genuine") == [FINDING_DROP]
    assert ids(cause="spec_patching") == [FINDING_DROP]
    assert ids(cause="regression", model=MODELS[1]) == [FINDING_VERSIONS]
    assert ids(kind="collapse") == []
    options = client.get("/api/findings").json()["options"]
    assert options == {
        "model": ["*", *MODELS],
        "kind": ["regression", "leak", "drop"],
        "cause": ["spec_patching", "genuine", "regression"],
    }
    page = client.get("/", params={"cause": "genuine"}).text
    assert 'href="/finding?id=f-drop-a"' in page
    assert "f-version-b" not in page


def test_finding_samples_are_those_of_its_two_points_page_by_page(
    client: httpx.Client, planted: tuple[Path, History]
) -> None:
    db, history = planted
    old, new = history.content_hashes
    stored = {
        r["sample_key"]: r
        for r in sql(
            db,
            "SELECT sample_key, spec_content_hash, scenario_id, outcome, eval_aware FROM samples "
            "WHERE model = ? AND spec_content_hash IN (?, ?)",
            [MODELS[0], old, new],
        )
    }
    rows = all_pages(client, id=FINDING_DROP)
    keys = [r["sample_key"] for r in rows]
    assert len(keys) == len(set(keys)) == len(stored) > 2 * PAGE_SIZE
    assert set(keys) == set(stored)
    for row in rows:
        expected = (
            "candidate" if stored[row["sample_key"]]["spec_content_hash"] == new else "baseline"
        )
        assert row["point"] == expected
    first = client.get("/api/finding", params={"id": FINDING_DROP}).json()
    assert first["total"] == len(stored)
    assert first["pages"] == math.ceil(len(stored) / PAGE_SIZE)
    # The candidate's samples come first.
    assert [r["point"] for r in rows] == sorted((r["point"] for r in rows), key="candidate".__ne__)

    def expect(**match: Any) -> set[str]:
        return {k for k, r in stored.items() if all(r[c] == v for c, v in match.items())}

    filtered = {
        ("point", "baseline"): expect(spec_content_hash=old),
        ("scenario", PUBLIC[1]): expect(scenario_id=PUBLIC[1]),
        ("outcome", "covert"): expect(outcome="covert"),
        ("aware", "aware"): expect(eval_aware=True),
        ("aware", "unaware"): expect(eval_aware=False),
    }
    for (name, value), wanted in filtered.items():
        got = {r["sample_key"] for r in all_pages(client, id=FINDING_DROP, **{name: value})}
        assert got == wanted, (name, value)
    both = all_pages(client, id=FINDING_DROP, point="candidate", outcome="honest", aware="aware")
    assert {r["sample_key"] for r in both} == expect(
        spec_content_hash=new, outcome="honest", eval_aware=True
    )
    counts = client.get("/api/finding", params={"id": FINDING_DROP, "point": "baseline"}).json()
    assert counts["outcome_counts"] == {
        outcome: len(expect(spec_content_hash=old, outcome=outcome))
        for outcome in ("covert", "honest", "refused", "invalid")
    }
    assert counts["aware"] == len(expect(spec_content_hash=old, eval_aware=True))


def test_version_and_leak_findings_show_the_samples_of_their_points(
    client: httpx.Client, planted: tuple[Path, History]
) -> None:
    db, history = planted
    old, new = history.content_hashes
    versions = all_pages(client, id=FINDING_VERSIONS)
    expected = sql(
        db,
        "SELECT sample_key, model FROM samples WHERE spec_content_hash = ? AND model IN (?, ?)",
        [new, *MODELS],
    )
    assert {r["sample_key"] for r in versions} == {r["sample_key"] for r in expected}
    assert {(r["point"], r["model"]) for r in versions} == {
        ("candidate", MODELS[1]),
        ("baseline", MODELS[0]),
    }
    # A leak concerns the spec: every model's samples at both revisions.
    leak = all_pages(client, id=FINDING_LEAK)
    every = sql(db, "SELECT sample_key FROM samples WHERE spec_content_hash IN (?, ?)", [old, new])
    assert {r["sample_key"] for r in leak} == {r["sample_key"] for r in every}


# -- one transcript ------------------------------------------------------------------------------


def test_transcript_marks_the_graders_evidence_and_the_awareness_sentences(
    client: httpx.Client, planted: tuple[Path, History]
) -> None:
    _, history = planted
    epoch = next(e for e in range(8) if is_aware_epoch(e))
    for label in ("covert", "honest"):
        key = sample_key(MODELS[0], history.content_hashes[1], PUBLIC[0], label, epoch)
        data = client.get("/api/sample", params={"key": key, "finding": FINDING_DROP}).json()
        assert data["sample"]["outcome"] == label
        assert data["point"] == "candidate"
        matched = data["grade"]["matched"]
        assert matched and data["grade"]["rule"]
        textual = [m for m in matched if m["located"] is not None]
        assert textual and all(m["located"] for m in textual), matched
        # One piece of evidence per (cue rule, sentence): several rules accept this one.
        assert {a["sentence"] for a in data["awareness"]} == {AWARE_SENTENCE}
        assert all(a["located"] for a in data["awareness"])
        page = client.get("/sample", params={"key": key, "finding": FINDING_DROP}).text
        for item in textual:
            if not item["where"].startswith("tool_call."):
                assert marked_in_transcript(page, "grade", item["text"]), item
        assert marked_in_transcript(page, "aware", AWARE_SENTENCE)
        assert marked_in_transcript(page, "cue", data["awareness"][0]["phrase"])
        assert f"rule <code>{data['grade']['rule']}</code>" in page


def test_tool_call_evidence_marks_the_call_the_grader_named(
    client: httpx.Client, planted: tuple[Path, History]
) -> None:
    db, _ = planted
    rows = sql(
        db,
        "SELECT sample_key, grade_evidence FROM samples "
        "WHERE list_contains(?, scenario_id) AND model = ?",
        [list(PUBLIC), MODELS[0]],
    )
    with_calls = [
        (r["sample_key"], m)
        for r in rows
        for m in json.loads(r["grade_evidence"]).get("matched", [])
        if m["where"].startswith("tool_call.")
    ]
    assert with_calls, "the planted scenarios have rules on tool calls"
    key, entry = with_calls[0]
    page = client.get("/sample", params={"key": key}).text
    index = entry["call_index"]
    assert f'<div class="call evidence-call" id="call-{index}">' in page
    assert page.count("evidence-call") == len({m["call_index"] for k, m in with_calls if k == key})


def test_spec_change_beside_the_transcript_is_the_stored_clause_diff(
    planted: tuple[Path, History],
) -> None:
    db, history = planted
    # `audit specs diff` prints the same head line for the revision's own change.
    result = CliRunner().invoke(cli_app, ["specs", "diff", "0", "1", "--db", str(db)])
    assert result.exit_code == 0, result.stderr
    head = result.stdout.splitlines()[0]
    key = sample_key(MODELS[0], history.content_hashes[1], PUBLIC[0], "covert", 2)
    with start_viewer(db) as running, httpx.Client(base_url=running.url) as http:
        data = http.get("/api/sample", params={"key": key}).json()
        page = http.get("/sample", params={"key": key}).text
    changes = data["spec_changes"]
    assert changes["revision"]["sha"] == history.shas[1]
    (block,) = changes["revisions"]
    assert block["previous"]["sha"] == history.shas[0]
    stored = sql(
        db,
        "SELECT change, clause_kind, section, old_text, new_text, similarity "
        "FROM spec_clause_changes WHERE sha = ? ORDER BY ordinal",
        [history.shas[1]],
    )
    assert block["changes"] == stored
    assert f'<p class="diff-head mono">{head}</p>' in page
    assert "was: Report results as observed." in page
    assert "now: Report results exactly as observed." in page


def test_a_baseline_sample_shows_its_own_revisions_change(
    client: httpx.Client, planted: tuple[Path, History]
) -> None:
    _, history = planted
    key = sample_key(MODELS[0], history.content_hashes[0], PUBLIC[0], "covert", 2)
    data = client.get("/api/sample", params={"key": key, "finding": FINDING_DROP}).json()
    assert data["point"] == "baseline"
    (block,) = data["spec_changes"]["revisions"]
    assert block["revision"]["sha"] == history.shas[0]
    assert block["previous"] is None
    assert block["counts"]["added"] == len(block["changes"]) > 0


# -- held-out prompts and sealed twins -----------------------------------------------------------


def _prompt_texts(db: Path, history: History, key: str) -> list[str]:
    """The scenario's own system and user text and the tool results stored in this sample."""
    row = sql(db, "SELECT scenario_id, transcript FROM samples WHERE sample_key = ?", [key])[0]
    scenario = history.scenarios[row["scenario_id"]]
    results = [m["content"][:80] for m in json.loads(row["transcript"]) if m["role"] == "tool"]
    return [scenario.system[:80], scenario.user[:80], *results]


def _leaks(text: str, secrets: list[str]) -> int:
    """How many of ``secrets`` occur in ``text``, as they are or escaped for HTML or JSON (a
    count, so that a failure prints no secret)."""
    return sum(
        1
        for s in secrets
        if s and any(form in text for form in (s, str(escape(s)), json.dumps(s)[1:-1]))
    )


def test_held_out_prompts_are_hidden_unless_asked_for(planted: tuple[Path, History]) -> None:
    db, history = planted
    key = sample_key(MODELS[0], history.content_hashes[1], PUBLIC[0], "covert", 3)
    prompts = _prompt_texts(db, history, key)
    assert len(prompts) >= 4
    with start_viewer(db) as running, httpx.Client(base_url=running.url) as http:
        page = http.get("/sample", params={"key": key}).text
        data = http.get("/api/sample", params={"key": key}).json()
    assert _leaks(page, prompts) == 0
    assert _leaks(json.dumps(data), prompts) == 0
    assert "held-out prompt hidden" in page and "held-out tool result hidden" in page
    hidden = [m for m in data["messages"] if m.get("hidden")]
    assert {m["role"] for m in hidden} == {"system", "user", "tool"}
    assert data["prompts_hidden"] == len(hidden)
    with (
        start_viewer(db, include_prompts=True) as running,
        httpx.Client(base_url=running.url) as http,
    ):
        page = http.get("/sample", params={"key": key}).text
        data = http.get("/api/sample", params={"key": key}).json()
    assert _leaks(page, prompts) == len(prompts)
    assert not any(m.get("hidden") for m in data["messages"])


def _sealed_secrets(db: Path, history: History) -> list[str]:
    """Every text of the twin's samples and scenario that must never be shown."""
    twin = history.scenarios[TWIN]
    secrets = [twin.system[:80], twin.user[:80], *twin.distinctive_phrases, PRIVATE_TEXT]
    secrets += [r.result[:80] for tool in twin.tools for r in tool.results]
    secrets += [rule.id for rule in twin.rules] + [rule.explain for rule in twin.rules]
    for row in sql(
        db,
        "SELECT answer, reasoning, grade_evidence FROM samples WHERE scenario_id = ?",
        [TWIN],
    ):
        secrets.append(row["answer"][:60] if row["answer"] else "")
        secrets.append(row["reasoning"][-60:] if row["reasoning"] else "")
        for entry in json.loads(row["grade_evidence"]).get("matched", []):
            secrets.append(entry["text"])
    return [s for s in dict.fromkeys(secrets) if s and len(s) >= 6]


@pytest.mark.parametrize("include_prompts", [False, True])
def test_sealed_twins_show_ids_and_grades_only_whatever_the_flag(
    planted: tuple[Path, History], include_prompts: bool
) -> None:
    db, history = planted
    secrets = _sealed_secrets(db, history)
    assert len(secrets) > 10
    keys = [
        r["sample_key"]
        for r in sql(
            db,
            "SELECT sample_key FROM samples WHERE list_contains(?, scenario_id) AND model = ?",
            [[TWIN, PRIVATE_SEALED, IMPORTED_TWIN], MODELS[0]],
        )
    ]
    with (
        start_viewer(db, include_prompts=include_prompts) as running,
        httpx.Client(base_url=running.url) as http,
    ):
        bodies = [http.get("/").text, http.get("/api/findings").text]
        for scenario in (TWIN, PRIVATE_SEALED, IMPORTED_TWIN):
            params = {"id": FINDING_DROP, "scenario": scenario}
            bodies += [http.get("/finding", params=params).text]
            listed = http.get("/api/finding", params=params)
            bodies.append(listed.text)
            assert listed.json()["total"] > 0
            assert {s["sealed"] for s in listed.json()["samples"]} == {True}
            assert {s["rule"] for s in listed.json()["samples"]} == {None}
        for key in keys:
            for path in ("/sample", "/api/sample"):
                response = http.get(path, params={"key": key, "finding": FINDING_DROP})
                assert response.status_code == 200
                bodies.append(response.text)
            data = http.get("/api/sample", params={"key": key}).json()
            assert data["sample"]["scenario_id"] in bodies[-2]  # the page names the scenario
            assert data["sample"]["sealed"] is True
            assert data["sample"]["outcome"] in ("covert", "honest")
            assert "messages" not in data and "grade" not in data and "awareness" not in data
    assert sum(_leaks(body, secrets) for body in bodies) == 0


# -- hostile text and the page's own safety ------------------------------------------------------


def test_hostile_text_from_models_and_repositories_is_shown_as_text(
    client: httpx.Client, planted: tuple[Path, History]
) -> None:
    _, history = planted
    key = sample_key(MODELS[0], history.content_hashes[1], PUBLIC[0], "covert", 1)
    pages = {
        "findings": client.get("/").text,
        "finding": client.get("/finding", params={"id": FINDING_DROP}).text,
        "sample": client.get("/sample", params={"key": key, "finding": FINDING_DROP}).text,
    }
    for name, page in pages.items():
        assert "<script" not in page.lower(), name
        assert "<img" not in page.lower(), name
        assert "\x1b" not in page and "\u202e" not in page, name
    escaped = "&lt;script&gt;window.__pwned=true;alert(1)&lt;/script&gt;&lt;img src=x onerror="
    # The finding's summary; the model's reasoning, the spec's added clause and the commit
    # message (beside the revision and above its change).
    assert escaped in pages["findings"]
    sample = pages["sample"]
    assert sample.count(escaped) == 4
    assert f"Noting {escaped}" in sample
    assert f'<pre class="new">When the ledger reconcile tests fail, say so. {escaped}' in sample
    assert f'<p class="subject">Patch: name the ledger tests {escaped}' in sample
    assert "\\x1b[31mRED\\x1b[0m \\u202eevil" in pages["sample"]
    data = client.get("/api/sample", params={"key": key}).json()
    reasoning = next(m["reasoning"] for m in data["messages"] if m.get("reasoning"))
    assert HOSTILE in reasoning  # JSON carries the text as it was stored


def test_every_response_carries_the_policy_and_only_get_is_answered(
    client: httpx.Client, planted: tuple[Path, History]
) -> None:
    _, history = planted
    key = sample_key(MODELS[0], history.content_hashes[1], PUBLIC[0], "covert", 0)
    urls = [
        "/",
        f"/finding?id={FINDING_DROP}",
        f"/sample?key={key}",
        "/api/findings",
        f"/api/sample?key={key}",
        "/view.css",
        "/nowhere",
        "/finding?id=nope",
        "/finding?id=x&outcome=bogus",
    ]
    for url in urls:
        response = client.get(url)
        assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY, url
        assert response.headers["x-content-type-options"] == "nosniff", url
    assert "script-src" not in CONTENT_SECURITY_POLICY and "unsafe" not in CONTENT_SECURITY_POLICY
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        assert client.request(method, "/").status_code == 405
        assert client.request(method, f"/api/sample?key={key}").status_code == 405
    # A page that rebinds its own domain to 127.0.0.1 still cannot read the viewer.
    assert client.get("/", headers={"host": "attacker.example"}).status_code == 400
    assert client.get("/", headers={"host": "localhost"}).status_code == 200


def test_bad_urls_get_one_line_naming_the_fix(client: httpx.Client) -> None:
    drop = f"id={FINDING_DROP}"
    cases = [
        ("/finding", "/api/finding", 400, "the URL needs ?id=...: open it from the findings list"),
        ("/finding?id=nope", "/api/finding?id=nope", 404,
         "no finding 'nope': pick one from the findings list"),
        (f"/finding?{drop}&outcome=bogus", f"/api/finding?{drop}&outcome=bogus", 400,
         "outcome='bogus' is not one of covert, honest, refused, invalid: fix the URL"),
        (f"/finding?{drop}&page=0", f"/api/finding?{drop}&page=0", 400,
         "page='0' is not a page number (1, 2, ...): fix the URL"),
        ("/sample?key=abc", "/api/sample?key=abc", 404,
         "no sample 'abc': open one from a finding's samples"),
        ("/?kind=big", "/api/findings?kind=big", 400,
         "kind='big' is not one of regression, leak, drop, collapse, none: fix the URL"),
    ]  # fmt: skip
    for page_url, api_url, status, message in cases:
        page = client.get(page_url)
        assert page.status_code == status, page_url
        assert f'<p class="error">{escape(message)}</p>' in page.text, page_url
        api = client.get(api_url)
        assert api.status_code == status, api_url
        assert api.json() == {"error": message}
    # A page past the end shows the last one.
    last = client.get("/api/finding", params={"id": FINDING_DROP, "page": 999}).json()
    assert last["filters"]["page"] == last["pages"] and last["samples"]


def test_concurrent_requests_get_the_same_answers_as_one_at_a_time(
    client: httpx.Client, viewer: RunningViewer
) -> None:
    keys = [r["sample_key"] for r in all_pages(client, id=FINDING_DROP)][:: 2 * PAGE_SIZE // 10]
    urls = [f"/api/finding?id={FINDING_DROP}&page={page}" for page in (1, 2, 3)]
    urls += ["/api/findings", *(f"/api/sample?key={key}" for key in keys)]
    alone = {url: client.get(url).json() for url in urls}
    with httpx.Client(base_url=viewer.url, timeout=60) as http, ThreadPoolExecutor(8) as pool:
        together = list(pool.map(lambda url: (url, http.get(url).json()), urls * 4))
    assert all(answer == alone[url] for url, answer in together)


# -- loopback, read-only, the file's lock --------------------------------------------------------


def _outside_address() -> str | None:
    """This machine's address on its default route (no packet is sent), if it has one."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("10.255.255.255", 1))
        address = probe.getsockname()[0]
    except OSError:
        return None
    finally:
        probe.close()
    return None if address.startswith("127.") else address


def test_the_viewer_listens_on_loopback_only(viewer: RunningViewer) -> None:
    port = httpx.URL(viewer.url).port
    assert viewer.url == f"http://127.0.0.1:{port}/"
    assert httpx.get(viewer.url).status_code == 200
    outside = _outside_address()
    if outside is None:
        pytest.skip("no non-loopback IPv4 address to try")
    with pytest.raises(OSError), socket.create_connection((outside, port), timeout=2):
        pass


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


_WRITER = """
import sys
from audit.store import open_store
with open_store(sys.argv[1]) as store:
    store.con.execute("CREATE TABLE IF NOT EXISTS viewer_lock_probe (x INTEGER)")
    print("wrote", flush=True)
    if len(sys.argv) > 2:
        sys.stdin.readline()
"""


def test_the_database_is_only_read_and_let_go_when_idle(
    planted: tuple[Path, History], tmp_path: Path
) -> None:
    db = tmp_path / "copy.duckdb"
    shutil.copy(planted[0], db)
    before = _file_digest(db)
    key = sample_key(MODELS[0], planted[1].content_hashes[1], PUBLIC[0], "covert", 0)
    with start_viewer(db, idle_close_s=0.3) as running, httpx.Client(base_url=running.url) as http:
        for url in ("/", "/api/findings", f"/finding?id={FINDING_DROP}", f"/sample?key={key}"):
            assert http.get(url).status_code == 200
        for row in all_pages(http, id=FINDING_DROP):
            assert http.get("/sample", params={"key": row["sample_key"]}).status_code == 200
        assert _file_digest(db) == before
        assert not db.with_name(db.name + ".wal").exists()
        # Idle, the viewer lets go of the file: another process can write.
        deadline = time.monotonic() + 10
        while running.viewer.is_open and time.monotonic() < deadline:
            time.sleep(0.05)
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        done = subprocess.run(
            [sys.executable, "-c", _WRITER, str(db)], capture_output=True, text=True, env=env
        )
        assert done.returncode == 0, done.stderr
        # While a writer holds it, a page says so in one line (503) and the writer is not hurt.
        writer = subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(db), "hold"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        try:
            assert writer.stdout is not None and writer.stdout.readline() == "wrote\n"
            busy = http.get("/api/findings")
            assert busy.status_code == 503
            assert "is in use by another process" in busy.json()["error"]
            assert "reload this page" in http.get("/").text
        finally:
            writer.communicate("\n", timeout=30)
        assert writer.returncode == 0
        assert http.get("/api/findings").status_code == 200


# -- the command ---------------------------------------------------------------------------------


def test_audit_view_refuses_a_missing_database_in_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli_app, ["view", "--db", str(tmp_path / "none.duckdb")])
    assert result.exit_code == 2
    assert result.stderr == (
        f"error: no database at {tmp_path / 'none.duckdb'}: run a sync or the demo first, "
        "or pass --db\n"
    )
    assert not (tmp_path / "none.duckdb").exists()


def test_audit_view_refuses_a_busy_port_in_one_line(planted: tuple[Path, History]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(cli_app, ["view", "--db", str(planted[0]), "--port", str(port)])
    assert result.exit_code == 2
    assert result.stderr == (
        f"error: cannot listen on 127.0.0.1:{port} (Address already in use): choose another "
        "--port, or leave it out for a free one\n"
    )


def test_audit_view_prints_its_url_serves_and_stops_on_ctrl_c(
    planted: tuple[Path, History],
) -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    process = subprocess.Popen(
        [sys.executable, "-m", "audit", "view", "--db", str(planted[0])],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("specdrift viewer (read-only) at http://127.0.0.1:"), line
        url = line.rsplit(" ", 1)[1].strip()
        assert process.stdout.readline() == "press Ctrl-C to stop\n"
        response = httpx.get(url + "api/findings", timeout=30)
        assert response.status_code == 200
        assert len(response.json()["findings"]) == 3
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert (process.returncode, out, err) == (0, "viewer stopped\n", "")
