"""The OpenAI batch file format, as the Batch API, ``vllm run-batch`` and Ray Data jobs use it.

A request file is JSON Lines, one request per line::

    {"custom_id": "...", "method": "POST", "url": "/v1/chat/completions", "body": {...}}

and an output file has one line per answered request::

    {"id": "..", "custom_id": "..", "response": {"status_code": 200, "body": {..}}, "error": null}

Errors come as a status code with an OpenAI error body, as ``response: null`` with an ``error``
object (``batch_expired``), or, from vLLM, as a status code with ``error`` a string or an error
object. :func:`parse_output_line` reads all of them into one :class:`OutputLine`.

Files are cut at ``max_requests`` lines and ``max_bytes`` bytes (the Batch API's limits are
50,000 and 200 MB) and hold one model each, as the Batch API requires.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from audit.errors import AuditError

ENDPOINT = "/v1/chat/completions"
"""The one endpoint batch requests go to."""


def dumps_compact(value: Any) -> str:
    """JSON as the openai client sends it (no spaces, non-ASCII kept): a body in a batch file is
    byte for byte what the live runner would have posted."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def custom_id(sample_key: str, turn: int, wave: int) -> str:
    """A request's id: the sample key's digest, the turn and the wave (no scenario names, and
    ids sort like the sample keys, which is the order of a file's lines)."""
    return f"{sample_key.removeprefix('sha256:')}-t{turn}-w{wave}"


def request_line(request_id: str, body: dict[str, Any]) -> bytes:
    """One line of a request file, newline included."""
    line = {"custom_id": request_id, "method": "POST", "url": ENDPOINT, "body": body}
    return (dumps_compact(line) + "\n").encode("utf-8")


@dataclass
class WrittenFile:
    """A request file being written or written: its lines, size and hash."""

    part_id: str
    model: str
    endpoint: str | None
    path: Path
    request_ids: list[str] = field(default_factory=list)
    sample_keys: list[str] = field(default_factory=list)
    turns: list[int] = field(default_factory=list)
    bytes: int = 0
    _hash: Any = field(default_factory=hashlib.sha256)
    _handle: IO[builtins.bytes] | None = None  # builtins: the field `bytes` shadows the type

    @property
    def input_hash(self) -> str:
        return "sha256:" + self._hash.hexdigest()

    def write(self, line: builtins.bytes, request_id: str, sample_key: str, turn: int) -> None:
        if self._handle is None:
            self._handle = self.path.open("wb")
        self._handle.write(line)
        self._hash.update(line)
        self.bytes += len(line)
        self.request_ids.append(request_id)
        self.sample_keys.append(sample_key)
        self.turns.append(turn)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


class FileCutter:
    """Writes request lines into files of one (model, endpoint) each, within the size limits."""

    def __init__(self, folder: Path, prefix: str, max_requests: int, max_bytes: int) -> None:
        self.folder = folder
        self.prefix = prefix
        self.max_requests = max_requests
        self.max_bytes = max_bytes
        self.files: list[WrittenFile] = []
        self._current: dict[tuple[str, str | None], WrittenFile] = {}

    def add(
        self,
        model: str,
        endpoint: str | None,
        request_id: str,
        sample_key: str,
        turn: int,
        body: dict[str, Any],
    ) -> None:
        line = request_line(request_id, body)
        if len(line) > self.max_bytes:
            raise AuditError(
                f"one request of model {model!r} is {len(line)} bytes, more than batch.max_bytes "
                f"({self.max_bytes}): raise batch.max_bytes (at most 200 MB) or shorten the spec"
            )
        slot = (model, endpoint)
        current = self._current.get(slot)
        if current is None or self._full(current, len(line)):
            if current is not None:
                current.close()
            current = self._open(model, endpoint)
            self._current[slot] = current
        current.write(line, request_id, sample_key, turn)

    def _full(self, file: WrittenFile, size: int) -> bool:
        return len(file.request_ids) >= self.max_requests or file.bytes + size > self.max_bytes

    def _open(self, model: str, endpoint: str | None) -> WrittenFile:
        part_id = uuid.uuid4().hex
        path = self.folder / f"{self.prefix}-{part_id}.jsonl"
        written = WrittenFile(part_id, model, endpoint, path)
        self.files.append(written)
        return written

    def close(self) -> list[WrittenFile]:
        """Close every file; returns them in the order they were opened."""
        for file in self.files:
            file.close()
        return self.files


@dataclass(frozen=True)
class OutputLine:
    """One line of an output or error file, whichever engine wrote it."""

    custom_id: str
    status_code: int | None
    body: dict[str, Any] | None
    """The chat completion (status 200) or the error body."""
    error_message: str | None = None
    error_code: str | None = None

    @property
    def ok(self) -> bool:
        return self.status_code == 200 and self.body is not None and "error" not in self.body


def parse_output_line(text: str, where: str) -> OutputLine:
    """Read one output line; ``where`` names it (file and line number) in the error."""
    try:
        line = json.loads(text)
    except json.JSONDecodeError as exc:
        raise AuditError(f"{where}: not JSON ({exc.msg}): pass the engine's output file") from None
    if not isinstance(line, dict) or not isinstance(line.get("custom_id"), str):
        raise AuditError(
            f"{where}: no custom_id: pass an output file in the OpenAI batch format "
            "(one JSON object per line with custom_id and response)"
        )
    response = line.get("response")
    if response is not None and not isinstance(response, dict):
        raise AuditError(f"{where}: response is not an object")
    status = response.get("status_code") if response else None
    body = response.get("body") if response else None
    if body is not None and not isinstance(body, dict):
        raise AuditError(f"{where}: response.body is not an object")
    message, code = _error_of(line.get("error"))
    if body is not None and "error" in body:
        body_message, body_code = _error_of(body["error"])
        message, code = message or body_message, code or body_code
    return OutputLine(
        custom_id=line["custom_id"],
        status_code=status if isinstance(status, int) else None,
        body=body,
        error_message=message,
        error_code=code,
    )


def _error_of(value: Any) -> tuple[str | None, str | None]:
    """(message, code) of an error given as a string, an error object or ``{"error": {...}}``."""
    if value is None:
        return None, None
    if isinstance(value, str):
        return value, None
    if isinstance(value, dict):
        error = value.get("error")
        inner = error if isinstance(error, dict) else value
        message = inner.get("message")
        code = inner.get("code")
        return (
            str(message) if message else dumps_compact(inner),
            str(code) if code is not None else None,
        )
    return str(value), None
