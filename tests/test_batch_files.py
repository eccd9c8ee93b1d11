"""The batch file format, the batch tables' records, and the organism server's Files and Batches
endpoints through the real openai client."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audit.errors import AuditError
from audit.organisms.batches import BatchSettings, parse_multipart
from audit.organisms.server import RunningServer, start_server
from audit.runner.batch.files import (
    FileCutter,
    custom_id,
    dumps_compact,
    parse_output_line,
    request_line,
)
from audit.runner.batch.waves import line_error
from audit.store import Store
from audit.store.batches import BatchPart, BatchRequest, BatchSample

# -- the format --------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(body=st.dictionaries(st.text(), json_values, max_size=6), key=st.text(min_size=1))
def test_a_request_line_is_one_json_line_holding_the_body_as_the_client_sends_it(
    body: dict, key: str
) -> None:
    line = request_line(key, body)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    parsed = json.loads(line)
    assert parsed == {
        "custom_id": key,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": body,
    }
    # The body's bytes in the line are the openai client's serialization of it.
    assert dumps_compact(body).encode() in line


def test_custom_ids_carry_no_scenario_name_and_sort_like_sample_keys() -> None:
    keys = [f"sha256:{c * 64}" for c in "0a9f"]
    ids = [custom_id(k, 3, 12) for k in keys]
    assert ids[0] == "0" * 64 + "-t3-w12"
    assert sorted(ids) == [custom_id(k, 3, 12) for k in sorted(keys)]


def test_files_are_cut_at_the_request_and_byte_limits_one_model_each(tmp_path: Path) -> None:
    body = {"messages": [{"role": "user", "content": "x" * 200}], "model": "m"}
    size = len(request_line(custom_id("sha256:" + "0" * 64, 0, 0), body))
    cutter = FileCutter(tmp_path, "w0", max_requests=3, max_bytes=size * 2)
    for index in range(7):
        cutter.add("m", None, custom_id(f"sha256:{index:064d}", 0, 0), f"k{index}", 0, body)
    cutter.add("other", None, custom_id("sha256:" + "9" * 64, 0, 0), "k9", 0, body)
    files = cutter.close()
    assert [(f.model, len(f.request_ids)) for f in files] == [
        ("m", 2),
        ("m", 2),
        ("m", 2),
        ("m", 1),
        ("other", 1),
    ]
    assert all(f.path.stat().st_size == f.n_bytes <= size * 2 for f in files)
    lines = [json.loads(line) for f in files[:4] for line in f.path.read_text().splitlines()]
    assert [line["custom_id"] for line in lines] == [
        custom_id(f"sha256:{i:064d}", 0, 0) for i in range(7)
    ]
    by_requests = FileCutter(tmp_path, "w1", max_requests=3, max_bytes=10**6)
    for index in range(7):
        by_requests.add("m", None, f"id{index}", f"k{index}", 0, body)
    assert [len(f.request_ids) for f in by_requests.close()] == [3, 3, 1]


def test_a_request_larger_than_a_file_is_refused_with_the_fix(tmp_path: Path) -> None:
    cutter = FileCutter(tmp_path, "w0", max_requests=10, max_bytes=100)
    with pytest.raises(AuditError, match=r"more than batch\.max_bytes \(100\): raise"):
        cutter.add("m", None, "id", "k", 0, {"content": "x" * 200})


COMPLETION = {
    "id": "c",
    "object": "chat.completion",
    "created": 0,
    "model": "m",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}
    ],
}


@pytest.mark.parametrize(
    "line,expected",
    [
        # OpenAI, success
        (
            {
                "id": "r",
                "custom_id": "a",
                "response": {"status_code": 200, "request_id": "q", "body": COMPLETION},
                "error": None,
            },
            ("a", 200, True, None, None, None),
        ),
        # OpenAI error file: a status code and an error body
        (
            {
                "id": "r",
                "custom_id": "a",
                "response": {
                    "status_code": 429,
                    "request_id": "q",
                    "body": {"error": {"message": "slow down", "type": "x", "code": "rate_limit"}},
                },
                "error": None,
            },
            ("a", 429, False, "slow down", "rate_limit", "rate_limit"),
        ),
        # OpenAI error file: a request the batch never ran
        (
            {
                "id": "r",
                "custom_id": "a",
                "response": None,
                "error": {"code": "batch_expired", "message": "window passed"},
            },
            ("a", None, False, "window passed", "batch_expired", "expired"),
        ),
        # vLLM run-batch: a status code, no body, the error as a string
        (
            {
                "id": "v",
                "custom_id": "a",
                "response": {"status_code": 400, "request_id": "q"},
                "error": "bad tool schema",
            },
            ("a", 400, False, "bad tool schema", None, "other"),
        ),
        # vLLM: an ErrorResponse object
        (
            {
                "id": "v",
                "custom_id": "a",
                "response": {"status_code": 500, "request_id": "q", "body": None},
                "error": {"error": {"message": "engine died", "code": 500}},
            },
            ("a", 500, False, "engine died", "500", "server_error"),
        ),
        # a 200 whose body is not a completion
        (
            {
                "custom_id": "a",
                "response": {"status_code": 200, "body": {"error": {"message": "odd"}}},
            },
            ("a", 200, False, "odd", None, "malformed_response"),
        ),
    ],
)
def test_output_lines_of_every_engine_are_read_alike(line: dict, expected: tuple) -> None:
    parsed = parse_output_line(json.dumps(line), "f line 1")
    kind = None if parsed.ok else line_error(parsed).kind
    assert (
        parsed.custom_id,
        parsed.status_code,
        parsed.ok,
        parsed.error_message,
        parsed.error_code,
        kind,
    ) == expected


@pytest.mark.parametrize(
    "text,message",
    [
        ("not json", "f line 3: not JSON"),
        ("[1, 2]", "f line 3: no custom_id: pass an output file in the OpenAI batch format"),
        ('{"custom_id": "a", "response": [1]}', "f line 3: response is not an object"),
        ('{"custom_id": "a", "response": {"body": "x"}}', "f line 3: response.body is not an"),
    ],
)
def test_a_bad_output_line_is_named_by_its_place(text: str, message: str) -> None:
    with pytest.raises(AuditError) as caught:
        parse_output_line(text, "f line 3")
    assert str(caught.value).startswith(message)


def test_multipart_bodies_are_read_field_by_field() -> None:
    body = (
        b'--XyZ\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
        b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="w.jsonl"\r\n'
        b'Content-Type: application/jsonl\r\n\r\n{"a": 1}\r\n{"b": 2}\r\n\r\n--XyZ--\r\n'
    )
    fields = parse_multipart(body, "multipart/form-data; boundary=XyZ")
    assert fields == {"purpose": (None, b"batch"), "file": ("w.jsonl", b'{"a": 1}\r\n{"b": 2}\r\n')}


# -- records against tables --------------------------------------------------------------------


@pytest.mark.parametrize(
    "record,table",
    [(BatchSample, "batch_samples"), (BatchPart, "batch_parts"), (BatchRequest, "batch_requests")],
)
def test_each_batch_record_has_exactly_its_tables_columns(
    store: Store, record: type, table: str
) -> None:
    columns = store.query(
        "SELECT column_name FROM information_schema.columns WHERE table_name = ? "
        "ORDER BY ordinal_position",
        [table],
    )
    table_columns = {c["column_name"] for c in columns}
    record_fields = set(record.__dataclass_fields__)
    extra = {"batch_samples": {"enrolled_at", "finished_at"}}.get(table, set())
    assert record_fields | extra == table_columns


# -- the organism server's Files and Batches API -----------------------------------------------


@pytest.fixture
def server() -> Iterator[RunningServer]:
    with start_server(port=0, batch=BatchSettings(delay_s=0.3, max_requests=3)) as running:
        yield running


def chat_body(model: str = "steady-v1", text: str = "hello") -> dict:
    return {"model": model, "seed": 7, "messages": [{"role": "user", "content": text}]}


def upload(client: openai.OpenAI, lines: list[dict]) -> str:
    data = "".join(json.dumps(line) + "\n" for line in lines).encode()
    return client.files.create(file=("w.jsonl", data), purpose="batch").id


def wait_final(client: openai.OpenAI, batch_id: str) -> openai.types.Batch:
    deadline = time.monotonic() + 30
    seen = []
    while True:
        batch = client.batches.retrieve(batch_id)
        if not seen or seen[-1] != batch.status:
            seen.append(batch.status)
        if batch.status in ("completed", "expired", "failed", "cancelled"):
            batch.seen = seen  # type: ignore[attr-defined]
            return batch
        assert time.monotonic() < deadline
        time.sleep(0.01)


def request(custom: str, body: dict) -> dict:
    return {"custom_id": custom, "method": "POST", "url": "/v1/chat/completions", "body": body}


def test_a_batch_goes_through_its_statuses_and_answers_each_line_as_the_chat_endpoint(
    server: RunningServer,
) -> None:
    client = openai.OpenAI(base_url=server.base_url, api_key="EMPTY")
    file_id = upload(client, [request("a", chat_body()), request("b", chat_body(text="bye"))])
    batch = client.batches.create(
        input_file_id=file_id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata={"k": "v"},
    )
    assert batch.status == "validating" and batch.metadata == {"k": "v"}
    done = wait_final(client, batch.id)
    assert done.seen == ["validating", "in_progress", "completed"]  # type: ignore[attr-defined]
    assert (done.request_counts.total, done.request_counts.completed) == (2, 2)
    assert done.error_file_id is None
    lines = [json.loads(x) for x in client.files.content(done.output_file_id).text.splitlines()]
    assert [x["custom_id"] for x in lines] == ["a", "b"]
    live = client.post("/chat/completions", body=chat_body(), cast_to=bytes)
    expected = json.loads(live)
    answered = lines[0]["response"]["body"]
    for volatile in ("id", "created"):
        del expected[volatile], answered[volatile]
    assert lines[0]["response"]["status_code"] == 200 and answered == expected


@pytest.mark.parametrize(
    "lines,code",
    [
        ([request("a", chat_body()), request("a", chat_body())], "duplicate_custom_id"),
        ([request("a", chat_body()), request("b", chat_body("watcher-v1"))], "mixed_models"),
        ([request(str(i), chat_body()) for i in range(4)], "too_many_requests"),
    ],
)
def test_files_the_batch_api_would_refuse_fail_validation(
    server: RunningServer, lines: list[dict], code: str
) -> None:
    client = openai.OpenAI(base_url=server.base_url, api_key="EMPTY")
    batch = client.batches.create(
        input_file_id=upload(client, lines),
        endpoint="/v1/chat/completions",
        completion_window="24h",
    )
    done = wait_final(client, batch.id)
    assert done.status == "failed" and done.output_file_id is None
    assert [e.code for e in done.errors.data] == [code]


def test_expiry_errors_cancel_and_listing(tmp_path: Path) -> None:
    settings_ = BatchSettings(expire=(0,), expire_answered=0.5, request_error=0.5, seed=1)
    with start_server(port=0, batch=settings_) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="EMPTY")
        lines = [request(f"r{i}", chat_body(text=str(i))) for i in range(8)]
        expired = wait_final(
            client,
            client.batches.create(
                input_file_id=upload(client, lines),
                endpoint="/v1/chat/completions",
                completion_window="24h",
            ).id,
        )
        assert expired.status == "expired"
        errors = [
            json.loads(x) for x in client.files.content(expired.error_file_id).text.splitlines()
        ]
        outputs = client.files.content(expired.output_file_id).text.splitlines()
        unanswered = [e for e in errors if e["response"] is None]
        assert [e["error"]["code"] for e in unanswered] == ["batch_expired"] * 4
        failed_lines = [e for e in errors if e["response"] is not None]
        assert {e["response"]["status_code"] for e in failed_lines} == {500}
        assert len(outputs) + len(failed_lines) == 4
        assert expired.request_counts.failed == len(errors)
        assert failed_lines, "one line in two is an injected error"

        server.set_batch_settings(BatchSettings(delay_s=60))
        slow = client.batches.create(
            input_file_id=upload(client, lines[:2]),
            endpoint="/v1/chat/completions",
            completion_window="24h",
        )
        assert client.batches.cancel(slow.id).status == "cancelling"
        assert wait_final(client, slow.id).status == "cancelled"
        with pytest.raises(openai.APIStatusError) as refused:
            client.batches.cancel(slow.id)
        assert refused.value.status_code == 409

        listed = [b.id for b in client.batches.list(limit=1)]  # pages through, newest first
        assert listed == [slow.id, expired.id]
        with pytest.raises(openai.BadRequestError):
            client.files.create(file=("x.txt", b"x"), purpose="assistants")
