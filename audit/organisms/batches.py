"""The Files and Batches endpoints of the organism server (a SIMULATOR of the OpenAI Batch API).

Enough of the API for the ``openai`` client's ``files`` and ``batches`` resources to run a batch
end to end, offline: ``POST /v1/files`` (multipart, purpose ``batch``), ``GET /v1/files/{id}``,
``GET /v1/files/{id}/content``, ``POST /v1/batches``, ``GET /v1/batches`` (newest first, cursor
``after``), ``GET /v1/batches/{id}`` and ``POST /v1/batches/{id}/cancel``.

A batch is ``validating`` for the first tenth of its delay (half a second at most), then
``in_progress`` while its lines are answered by the same handler as the chat endpoint (so a
line gets exactly the answer the live endpoint gives its body), then ``finalizing`` and
``completed`` once ``delay_s`` has passed since it was created. :class:`BatchSettings`
injects what real batches do: per-request errors (a deterministic share, by custom_id),
batches that expire with part of their requests answered, batches that fail validation, and a
slow answer to ``batches.create`` (so a client can die after the batch exists but before it
learns its id). Files over the Batch API's limits (50,000 requests, 200 MB) and files naming
more than one model fail validation as they do at OpenAI. Everything lives in memory.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from audit.config import OPENAI_BATCH_MAX_BYTES, OPENAI_BATCH_MAX_REQUESTS

_UINT64 = float(2**64)
FINAL = frozenset({"completed", "expired", "failed", "cancelled"})


class BatchSettings(BaseModel):
    """How the simulated Batch API behaves."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    delay_s: float = Field(0.0, ge=0, description="From creation until the batch is final.")
    request_error: float = Field(
        0.0, ge=0, le=1, description="Share of requests answered with an error line."
    )
    request_error_status: int = Field(500, ge=400, le=599)
    request_error_message: str = "Internal error (simulated batch request error)."
    expire: tuple[int, ...] = Field(
        (), description="Creation numbers (0-based) of batches that expire."
    )
    expire_answered: float = Field(
        0.5, ge=0, le=1, description="Share of an expiring batch's requests answered first."
    )
    fail: tuple[int, ...] = Field((), description="Creation numbers of batches that fail.")
    create_latency_s: float = Field(
        0.0, ge=0, description="Delay before answering batches.create (the batch exists already)."
    )
    max_requests: int = Field(OPENAI_BATCH_MAX_REQUESTS, ge=1)
    max_bytes: int = Field(OPENAI_BATCH_MAX_BYTES, ge=1)
    seed: int = 0

    def request_fails(self, custom_id: str) -> bool:
        """Whether this request gets an error line (deterministic: a hash of seed and id)."""
        if self.request_error <= 0:
            return False
        digest = hashlib.blake2b(
            f"batch-error\x1f{self.seed}\x1f{custom_id}".encode(), digest_size=8
        ).digest()
        return int.from_bytes(digest, "little") / _UINT64 < self.request_error


@dataclass
class StoredFile:
    id: str
    filename: str
    purpose: str
    data: bytes
    created_at: int

    def card(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "file",
            "bytes": len(self.data),
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
        }


@dataclass
class SimulatedBatch:
    """One batch and what became of it."""

    id: str
    number: int
    input_file_id: str
    created: float
    metadata: dict[str, str] | None
    status: str = "validating"
    total: int = 0
    completed: int = 0
    failed: int = 0
    custom_ids: list[str] = field(default_factory=list)
    output_file_id: str | None = None
    error_file_id: str | None = None
    errors: list[dict[str, Any]] = field(default_factory=list)
    stamps: dict[str, int] = field(default_factory=dict)
    cancel_requested: bool = False
    polls: int = 0
    """How many times ``GET /v1/batches/{id}`` asked for it."""
    settings: BatchSettings = field(default_factory=BatchSettings)
    """The service's settings when the batch was created."""
    task: asyncio.Task[None] | None = None

    def card(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "batch",
            "endpoint": "/v1/chat/completions",
            "errors": {"object": "list", "data": self.errors} if self.errors else None,
            "input_file_id": self.input_file_id,
            "completion_window": "24h",
            "status": self.status,
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "created_at": int(self.created),
            "expires_at": int(self.created) + 24 * 3600,
            **{f"{name}_at": value for name, value in self.stamps.items()},
            "request_counts": {
                "total": self.total,
                "completed": self.completed,
                "failed": self.failed,
            },
            "metadata": self.metadata,
        }


def _error(status: int, message: str, param: str | None = None) -> Response:
    body = {"error": {"message": message, "type": "invalid_request_error", "param": param}}
    return JSONResponse(body, status_code=status)


def parse_multipart(body: bytes, content_type: str) -> dict[str, tuple[str | None, bytes]]:
    """The fields of a multipart/form-data body: name -> (filename, bytes)."""
    boundary = None
    for parameter in content_type.split(";")[1:]:
        name, _, value = parameter.strip().partition("=")
        if name.lower() == "boundary":
            boundary = value.strip('"')
    if not boundary:
        raise ValueError("multipart body without a boundary")
    fields_found: dict[str, tuple[str | None, bytes]] = {}
    for part in body.split(b"--" + boundary.encode())[1:]:
        if part.startswith(b"--"):
            break
        head, _, data = part.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        disposition = {}
        for line in head.decode("utf-8", "replace").split("\r\n"):
            key, _, value = line.partition(":")
            if key.strip().lower() == "content-disposition":
                for item in value.split(";")[1:]:
                    k, _, v = item.strip().partition("=")
                    disposition[k] = v.strip('"')
        if "name" in disposition:
            fields_found[disposition["name"]] = (
                disposition.get("filename"),
                data.removesuffix(b"\r\n"),
            )
    return fields_found


class BatchService:
    """In-memory files and batches, answered by ``answer(body) -> (status, body)``."""

    def __init__(
        self, answer: Callable[[bytes], tuple[int, bytes]], settings: BatchSettings
    ) -> None:
        self.answer = answer
        self.settings = settings
        self.files: dict[str, StoredFile] = {}
        self.batches: dict[str, SimulatedBatch] = {}
        self._ids = itertools.count()

    def _next_id(self, prefix: str) -> str:
        return f"{prefix}-sim{next(self._ids):06d}"

    def routes(self) -> list[Route]:
        return [
            Route("/v1/files", self.upload, methods=["POST"]),
            Route("/v1/files/{file_id}", self.file_card, methods=["GET"]),
            Route("/v1/files/{file_id}/content", self.file_content, methods=["GET"]),
            Route("/v1/batches", self.create, methods=["POST"]),
            Route("/v1/batches", self.list_batches, methods=["GET"]),
            Route("/v1/batches/{batch_id}", self.retrieve, methods=["GET"]),
            Route("/v1/batches/{batch_id}/cancel", self.cancel, methods=["POST"]),
        ]

    # -- files ----------------------------------------------------------------------------------

    async def upload(self, request: Request) -> Response:
        try:
            form = parse_multipart(await request.body(), request.headers.get("content-type", ""))
        except ValueError as exc:
            return _error(400, str(exc))
        if "file" not in form:
            return _error(400, "missing the file field", "file")
        purpose = form.get("purpose", (None, b""))[1].decode()
        if purpose != "batch":
            return _error(400, f"the simulator stores batch files only, not {purpose!r}", "purpose")
        filename, data = form["file"]
        if len(data) > self.settings.max_bytes:
            return _error(400, f"file of {len(data)} bytes exceeds {self.settings.max_bytes}")
        stored = StoredFile(
            self._next_id("file"), filename or "upload.jsonl", purpose, data, int(time.time())
        )
        self.files[stored.id] = stored
        return JSONResponse(stored.card())

    async def file_card(self, request: Request) -> Response:
        stored = self.files.get(request.path_params["file_id"])
        return JSONResponse(stored.card()) if stored else _error(404, "no such file")

    async def file_content(self, request: Request) -> Response:
        stored = self.files.get(request.path_params["file_id"])
        if stored is None:
            return _error(404, "no such file")
        return Response(stored.data, media_type="application/octet-stream")

    def _store_output(self, name: str, lines: list[bytes]) -> str | None:
        if not lines:
            return None
        stored = StoredFile(
            self._next_id("file"), name, "batch_output", b"".join(lines), int(time.time())
        )
        self.files[stored.id] = stored
        return stored.id

    # -- batches --------------------------------------------------------------------------------

    async def create(self, request: Request) -> Response:
        try:
            params = json.loads(await request.body())
        except json.JSONDecodeError:
            return _error(400, "the body is not JSON")
        file_id = params.get("input_file_id")
        if file_id not in self.files:
            return _error(404, f"no file {file_id!r}", "input_file_id")
        if params.get("endpoint") != "/v1/chat/completions":
            return _error(400, "the simulator runs /v1/chat/completions batches only", "endpoint")
        if params.get("completion_window") != "24h":
            return _error(400, "completion_window must be 24h", "completion_window")
        number = len(self.batches)
        batch = SimulatedBatch(
            self._next_id("batch"),
            number,
            file_id,
            time.time(),
            params.get("metadata"),
            settings=self.settings,
        )
        self.batches[batch.id] = batch
        batch.task = asyncio.get_running_loop().create_task(self._run(batch))
        if self.settings.create_latency_s:
            await asyncio.sleep(self.settings.create_latency_s)
        return JSONResponse(batch.card())

    async def retrieve(self, request: Request) -> Response:
        batch = self.batches.get(request.path_params["batch_id"])
        if batch is None:
            return _error(404, "no such batch")
        batch.polls += 1
        return JSONResponse(batch.card())

    async def list_batches(self, request: Request) -> Response:
        newest = list(reversed(self.batches.values()))
        after = request.query_params.get("after")
        if after:
            ids = [b.id for b in newest]
            newest = newest[ids.index(after) + 1 :] if after in ids else []
        limit = int(request.query_params.get("limit", "20"))
        page = newest[:limit]
        return JSONResponse(
            {
                "object": "list",
                "data": [b.card() for b in page],
                "first_id": page[0].id if page else None,
                "last_id": page[-1].id if page else None,
                "has_more": len(newest) > limit,
            }
        )

    async def cancel(self, request: Request) -> Response:
        batch = self.batches.get(request.path_params["batch_id"])
        if batch is None:
            return _error(404, "no such batch")
        if batch.status in FINAL:
            return _error(409, f"cannot cancel a batch that is {batch.status}")
        batch.cancel_requested = True
        batch.status = "cancelling"
        batch.stamps["cancelling"] = int(time.time())
        return JSONResponse(batch.card())

    async def _run(self, batch: SimulatedBatch) -> None:
        """Validate, answer, wait out the delay, and finish the batch."""
        settings = batch.settings
        await asyncio.sleep(min(settings.delay_s / 10, 0.5))
        lines, problem = self._validate(self.files[batch.input_file_id].data, settings)
        batch.total = len(lines)
        if problem is None and batch.number in settings.fail:
            problem = {"code": "simulated_failure", "message": "validation failed (simulated)"}
        if problem is not None:
            batch.errors = [problem]
            batch.status = "failed"
            batch.stamps["failed"] = int(time.time())
            return
        if not batch.cancel_requested:
            batch.status = "in_progress"
            batch.stamps["in_progress"] = int(time.time())
        outputs, errors = await self._answer(batch, lines)
        remaining = batch.created + settings.delay_s - time.time()
        while remaining > 0 and not batch.cancel_requested:
            await asyncio.sleep(min(remaining, 0.05))
            remaining = batch.created + settings.delay_s - time.time()
        self._finish(batch, lines, outputs, errors)

    def _validate(
        self, data: bytes, settings: BatchSettings
    ) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
        lines: list[dict[str, Any]] = []
        seen: set[str] = set()
        models: set[str] = set()
        for number, raw in enumerate(data.splitlines(), start=1):
            if not raw.strip():
                continue
            try:
                line = json.loads(raw)
            except json.JSONDecodeError:
                return [], {"code": "invalid_json_line", "message": "not JSON", "line": number}
            if line.get("url") != "/v1/chat/completions" or line.get("method") != "POST":
                return [], {"code": "invalid_url", "message": "wrong url or method", "line": number}
            custom_id = line.get("custom_id")
            if not isinstance(custom_id, str) or custom_id in seen:
                message = "missing or repeated custom_id"
                return [], {"code": "duplicate_custom_id", "message": message, "line": number}
            seen.add(custom_id)
            models.add(str(line.get("body", {}).get("model")))
            lines.append(line)
        if len(lines) > settings.max_requests:
            message = f"{len(lines)} requests, more than {settings.max_requests}"
            return [], {"code": "too_many_requests", "message": message}
        if len(models) > 1:
            message = f"one model per batch file, found {len(models)}"
            return [], {"code": "mixed_models", "message": message}
        return lines, None

    async def _answer(
        self, batch: SimulatedBatch, lines: list[dict[str, Any]]
    ) -> tuple[list[bytes], list[bytes]]:
        settings = batch.settings
        answered_limit = len(lines)
        if batch.number in settings.expire:
            answered_limit = int(len(lines) * settings.expire_answered)
        outputs: list[bytes] = []
        errors: list[bytes] = []
        for index, line in enumerate(lines[:answered_limit]):
            if batch.cancel_requested:
                break
            custom_id = line["custom_id"]
            batch.custom_ids.append(custom_id)
            if settings.request_fails(custom_id):
                body = json.dumps(
                    {
                        "error": {
                            "message": settings.request_error_message,
                            "type": "server_error",
                            "code": None,
                        }
                    }
                ).encode()
                status = settings.request_error_status
            else:
                # Re-serialized as the openai client serializes a live request, so a line gets
                # the answer (token counts included) its body gets from the live endpoint.
                status, body = self.answer(
                    json.dumps(line["body"], ensure_ascii=False, separators=(",", ":")).encode()
                )
            target = outputs if status == 200 else errors
            target.append(_output_line(custom_id, status, body))
            if status == 200:
                batch.completed += 1
            else:
                batch.failed += 1
            if index % 100 == 99:
                await asyncio.sleep(0)  # keep polls answered while a large batch runs
        return outputs, errors

    def _finish(
        self,
        batch: SimulatedBatch,
        lines: list[dict[str, Any]],
        outputs: list[bytes],
        errors: list[bytes],
    ) -> None:
        batch.status = "finalizing"
        batch.stamps["finalizing"] = int(time.time())
        answered = set(batch.custom_ids)
        if batch.cancel_requested:
            final, code = "cancelled", "batch_cancelled"
        elif batch.number in batch.settings.expire:
            final, code = "expired", "batch_expired"
        else:
            final, code = "completed", None
        if code is not None:
            for line in lines:
                if line["custom_id"] not in answered:
                    errors.append(_unanswered_line(line["custom_id"], code))
                    batch.failed += 1
        batch.output_file_id = self._store_output(f"{batch.id}_output.jsonl", outputs)
        batch.error_file_id = self._store_output(f"{batch.id}_error.jsonl", errors)
        batch.status = final
        batch.stamps[final] = int(time.time())


_line_numbers = itertools.count()


def _output_line(custom_id: str, status: int, body: bytes) -> bytes:
    number = next(_line_numbers)
    head = (
        f'{{"id":"batch_req_sim{number:x}","custom_id":{json.dumps(custom_id)},'
        f'"response":{{"status_code":{status},"request_id":"req_sim{number:x}","body":'
    )
    return head.encode() + body + b'},"error":null}\n'


def _unanswered_line(custom_id: str, code: str) -> bytes:
    number = next(_line_numbers)
    message = (
        "This request could not be executed before the completion window expired."
        if code == "batch_expired"
        else "This request was not executed because the batch was cancelled."
    )
    line = {
        "id": f"batch_req_sim{number:x}",
        "custom_id": custom_id,
        "response": None,
        "error": {"code": code, "message": message},
    }
    return (json.dumps(line) + "\n").encode()
