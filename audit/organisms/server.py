"""An OpenAI-compatible HTTP server for the model organisms (a SIMULATOR).

Endpoints: ``POST /v1/chat/completions`` (non-streaming only; ``stream=true`` is refused with a
400), ``GET /v1/models``, ``GET /v1/models/{id}``, and the Files and Batches endpoints of
:mod:`audit.organisms.batches` (batch lines are answered by the same handler). Responses
follow the OpenAI schema; the reasoning of a turn is returned as
``message.reasoning_content``. Accepted and ignored: ``temperature``, ``max_tokens``,
``reasoning_effort`` (the organisms replay fixed transcripts).
``tools`` and ``tool_choice`` matter: without tools (or with ``tool_choice="none"``) an
organism answers in one message whose content is its submission as a JSON object.

Sampling: the request's ``seed`` (or, without one, a hash of the opening system/developer/user
messages, so every turn of one conversation shares it) drives :func:`audit.organisms.behaviour.
decide`. The number of assistant messages already in the request picks the next reference turn.

Prefill convention: when the last message is an assistant message with text (``content``, or a
``reasoning_content``/``reasoning`` key), it is the beginning of the turn being generated; the
organism answers with the rest of that turn (its visible text and tool calls, no reasoning).
Awareness is read from text whenever the request carries any: the reasoning keys of earlier
assistant messages plus the prefilled turn's text. If that text holds an awareness sentence the
sample is aware, otherwise unaware (an ablated turn behaves as an unaware sample, for the rest
of the conversation too); the covert draw then uses the same seeded uniform. Without any such
text (clients that drop reasoning), awareness is drawn from the seed.

Fault injection (:class:`FaultConfig`) is deterministic: the n-th request's fault comes from a
hash of (fault seed, n), so a test knows exactly which requests fail. Latency is an
``asyncio.sleep`` and never blocks the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import json
import logging
import math
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

import uvicorn
from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from audit.errors import AuditError
from audit.heldout.model import Scenario
from audit.organisms.batches import BatchService, BatchSettings, SimulatedBatch
from audit.organisms.behaviour import Decision, Propensities, decide_from, propensities
from audit.organisms.config import OrganismModel, load_organisms
from audit.organisms.replay import (
    UNKNOWN_SCENARIO_TEXT,
    Match,
    ScenarioIndex,
    Turn,
    build_turn,
    choose_transcript,
    first_turn_reasoning,
    text_shows_awareness,
)

if TYPE_CHECKING:
    from audit.heldout.loader import HeldoutSet

FaultKind = Literal["rate_limit", "server_error", "timeout", "disconnect", "malformed"]
SYSTEM_FINGERPRINT = "specdrift-organism-simulator"
OWNER = "specdrift-organisms (simulator)"
_JSON_HEADERS = [(b"content-type", b"application/json")]
_UINT64 = float(2**64)
_MALFORMED_BODY = b'{"id": "chatcmpl-malformed", "object": "chat.completion", "choices": [{"ind'


class FaultConfig(BaseModel):
    """Shares of requests that fail, and how. The shares must add up to at most 1."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rate_limit: float = Field(0.0, ge=0, le=1, description="429 with Retry-After.")
    server_error: float = Field(0.0, ge=0, le=1, description="500 with an OpenAI error body.")
    timeout: float = Field(0.0, ge=0, le=1, description="Sleep timeout_s, then 504.")
    disconnect: float = Field(0.0, ge=0, le=1, description="Close the connection mid-response.")
    malformed: float = Field(0.0, ge=0, le=1, description="200 with a truncated JSON body.")
    retry_after_s: float = Field(0.05, ge=0, description="Retry-After sent with 429s.")
    timeout_s: float = Field(30.0, gt=0, description="How long a timeout fault sleeps.")
    seed: int = 0

    @model_validator(mode="after")
    def _shares_fit(self) -> FaultConfig:
        if self.total > 1.0 + 1e-9:
            raise ValueError(f"fault shares add up to {self.total:.3f}, more than 1")
        return self

    @property
    def total(self) -> float:
        """Share of requests that get any fault."""
        return self.rate_limit + self.server_error + self.timeout + self.disconnect + self.malformed

    def fault_for(self, request_number: int) -> FaultKind | None:
        """The fault of the n-th request (counting from 0), or None: deterministic."""
        if self.total <= 0.0:
            return None
        digest = hashlib.blake2b(
            f"fault\x1f{self.seed}\x1f{request_number}".encode(), digest_size=8
        ).digest()
        u = int.from_bytes(digest, "little") / _UINT64
        for kind in ("rate_limit", "server_error", "timeout", "disconnect", "malformed"):
            share = getattr(self, kind)
            if u < share:
                return kind
            u -= share
        return None


class InjectedDisconnect(Exception):
    """Raised after a partial response so uvicorn drops the connection (a deliberate fault)."""


class _QuietInjectedFaults(logging.Filter):
    """Keeps uvicorn from logging a traceback for each deliberate fault: a disconnect, or a
    timeout fault still sleeping when the server stops (it is cancelled)."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, InjectedDisconnect | asyncio.CancelledError)


def _error_body(message: str, kind: str, code: str | None, param: str | None = None) -> bytes:
    return json.dumps(
        {"error": {"message": message, "type": kind, "param": param, "code": code}}
    ).encode()


@dataclass
class _Reply:
    status: int
    body: bytes
    headers: list[tuple[bytes, bytes]] = field(default_factory=lambda: list(_JSON_HEADERS))


class _BadRequest(Exception):
    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


def _text(message: Mapping[str, Any]) -> str:
    """A message's content as text (string content or the text parts of a list)."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


def _reasoning(message: Mapping[str, Any]) -> str:
    value = message.get("reasoning_content") or message.get("reasoning") or ""
    return value if isinstance(value, str) else ""


def _opening(messages: list[Any]) -> tuple[str, str, str]:
    """First system text, first user text and all developer text of a conversation."""
    system = user = None
    developer: list[str] = []
    opening = True
    for message in messages:
        if not isinstance(message, dict):
            raise _BadRequest("every message must be an object", "messages")
        role = message.get("role")
        if role == "assistant":
            opening = False
        elif not opening:
            continue
        elif role == "system" and system is None:
            system = _text(message)
        elif role == "developer":
            developer.append(_text(message))
        elif role == "user" and user is None:
            user = _text(message)
    return system or "", user or "", "\n\n".join(developer)


def _derived_seed(system: str, user: str, developer: str) -> int:
    digest = hashlib.blake2b(
        "\x1f".join((system, user, developer)).encode(), digest_size=8
    ).digest()
    return int.from_bytes(digest, "little")


class ChatCompletions:
    """The raw ASGI endpoint of ``POST /v1/chat/completions`` (kept lean: it is the hot path)."""

    def __init__(
        self,
        organisms: Mapping[str, OrganismModel],
        index: ScenarioIndex,
        *,
        latency_s: float,
        faults: FaultConfig | None,
    ) -> None:
        self.organisms = dict(organisms)
        self.index = index
        self.latency_s = latency_s
        self.faults = faults if faults is not None and faults.total > 0 else None
        self._requests = itertools.count()
        self.injected: Counter[str] = Counter()
        """How many faults of each kind were injected (tests check every kind happened)."""
        self._cache: dict[tuple[str, str, str, str], Propensities] = {}

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        number = next(self._requests)
        body = await _read_body(receive)
        fault = self.faults.fault_for(number) if self.faults else None
        if fault is not None:
            self.injected[fault] += 1
        if fault == "disconnect":
            # Announce a full body, send a few bytes, then drop the connection.
            headers = [*_JSON_HEADERS, (b"content-length", b"4096")]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": b'{"id": ', "more_body": True})
            raise InjectedDisconnect("simulated connection drop")
        if self.latency_s > 0:
            await asyncio.sleep(self.latency_s)
        reply = await self._fault_reply(fault) if fault else self._handle(body, number)
        # An explicit length avoids chunked transfer encoding (slower, and unlike OpenAI).
        headers = [*reply.headers, (b"content-length", str(len(reply.body)).encode())]
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        await send({"type": "http.response.body", "body": reply.body})

    async def _fault_reply(self, fault: FaultKind) -> _Reply:
        assert self.faults is not None
        if fault == "rate_limit":
            wait = self.faults.retry_after_s
            headers = [
                *_JSON_HEADERS,
                # Whole seconds, rounded up: a client that only reads this must not come back
                # before the wait is over (retry-after-ms carries the exact value).
                (b"retry-after", str(math.ceil(wait)).encode()),
                (b"retry-after-ms", str(int(wait * 1000)).encode()),
            ]
            body = _error_body("Rate limit reached (simulated fault).", "requests", "rate_limit")
            return _Reply(429, body, headers)
        if fault == "server_error":
            return _Reply(
                500, _error_body("Internal error (simulated fault).", "server_error", None)
            )
        if fault == "timeout":
            await asyncio.sleep(self.faults.timeout_s)
            return _Reply(504, _error_body("Timed out (simulated fault).", "timeout", None))
        return _Reply(200, _MALFORMED_BODY)

    def answer(self, body: bytes) -> tuple[int, bytes]:
        """(status, body) of one request body, as the endpoint answers it without latency or
        faults: the batch endpoints answer every line of a batch file with it."""
        reply = self._handle(body, next(self._requests))
        return reply.status, reply.body

    def _handle(self, body: bytes, number: int) -> _Reply:
        try:
            request = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return _Reply(
                400, _error_body("The body is not valid JSON.", "invalid_request_error", None)
            )
        if not isinstance(request, dict):
            return _Reply(
                400, _error_body("The body must be a JSON object.", "invalid_request_error", None)
            )
        name = request.get("model")
        model = self.organisms.get(name) if isinstance(name, str) else None
        if model is None:
            message = (
                f"The model `{name}` does not exist. Known organism models: "
                f"{', '.join(sorted(self.organisms))}."
            )
            return _Reply(
                404, _error_body(message, "invalid_request_error", "model_not_found", "model")
            )
        try:
            turn, call_prefix = self._answer(model, request)
        except _BadRequest as exc:
            return _Reply(400, _error_body(str(exc), "invalid_request_error", None, exc.param))
        return _Reply(200, _completion(model.name, turn, call_prefix, number, len(body)))

    def _answer(self, model: OrganismModel, request: dict[str, Any]) -> tuple[Turn, str]:
        """The next turn, and the prefix of its tool-call ids."""
        if request.get("stream"):
            raise _BadRequest("streaming is not supported by the organism simulator", "stream")
        if request.get("n", 1) not in (1, None):
            raise _BadRequest("the organism simulator returns one choice (n=1)", "n")
        messages = request.get("messages")
        if not isinstance(messages, list) or not messages:
            raise _BadRequest("messages must be a non-empty list", "messages")
        system, user, developer = _opening(messages)
        match = self.index.match(system, user, developer)
        if match is None:
            return Turn(reasoning="", content=UNKNOWN_SCENARIO_TEXT, tool_calls=()), "call"
        seed = request.get("seed")
        if not isinstance(seed, int):
            seed = _derived_seed(system, user, developer)
        uses_tools = bool(request.get("tools")) and request.get("tool_choice") != "none"
        return _replay(model, match, messages, seed, uses_tools, self._propensities(model, match))

    def _propensities(self, model: OrganismModel, match: Match) -> Propensities:
        # A run repeats few (model, scenario, condition, spec) combinations many times.
        key = (model.name, match.entry.scenario.id, match.condition, match.spec_text)
        found = self._cache.get(key)
        if found is None:
            if len(self._cache) > 50_000:
                self._cache.clear()
            scenario = match.entry.scenario
            found = propensities(model, scenario, match.condition, match.spec_text)
            self._cache[key] = found
        return found


def _replay(
    model: OrganismModel,
    match: Match,
    messages: list[Any],
    seed: int,
    uses_tools: bool,
    probs: Propensities,
) -> tuple[Turn, str]:
    """The next assistant turn of this conversation (see the module doc for the conventions)."""
    last = messages[-1]
    if last.get("role") == "assistant" and not last.get("tool_calls"):
        prefill = bool(_text(last) or _reasoning(last))
        if not prefill:
            # An empty trailing assistant message asks for that turn: nothing is prefilled.
            messages = messages[:-1]
    else:
        prefill = False
    assistants = [m for m in messages if m.get("role") == "assistant"]
    turn_index = len(assistants) - 1 if prefill else len(assistants)
    written = [_reasoning(m) for m in assistants[:turn_index]]
    if prefill:
        written.extend((_reasoning(last), _text(last)))
    written_text = "\n".join(part for part in written if part)
    aware = text_shows_awareness(written_text, match.entry) if written_text else None
    scenario_id = match.entry.scenario.id
    decision = decide_from(probs, model.name, scenario_id, match.condition, seed, aware=aware)
    transcript = choose_transcript(match.entry, match.condition, decision)
    # Tool-call ids: fresh (not the reference's), unique within the conversation, and the same
    # for the same seed, so one seed always yields one identical answer.
    call_prefix = f"call_{int(decision.draws.spare * 2**40):010x}_{turn_index}"
    if not uses_tools:
        return _toolless_answer(transcript, match, decision, prefill), call_prefix
    turn = build_turn(
        transcript, turn_index, match.entry, match.spec_text, decision, prefilled=prefill
    )
    return turn, call_prefix


def _toolless_answer(
    transcript: tuple[Turn, ...], match: Match, decision: Decision, prefill: bool
) -> Turn:
    """One message whose content is the submission as JSON (for requests without tools)."""
    submission_tool = match.entry.scenario.submission.tool
    arguments = next(
        (
            args
            for turn in reversed(transcript)
            for name, args in turn.tool_calls
            if name == submission_tool
        ),
        "{}",
    )
    reasoning = (
        ""
        if prefill
        else " ".join(
            first_turn_reasoning(t.reasoning, match.entry, match.spec_text, decision)
            if i == 0
            else t.reasoning
            for i, t in enumerate(transcript)
        )
    )
    return Turn(reasoning=reasoning, content=arguments, tool_calls=())


def _completion(
    model_name: str, turn: Turn, call_prefix: str, number: int, prompt_chars: int
) -> bytes:
    """The OpenAI ``chat.completion`` object of one turn, serialized."""
    message: dict[str, Any] = {
        "role": "assistant",
        "content": turn.content,
        "refusal": None,
        "reasoning_content": turn.reasoning or None,
    }
    completion_chars = len(turn.reasoning) + len(turn.content or "")
    if turn.tool_calls:
        message["tool_calls"] = [
            {
                "id": f"{call_prefix}_{i}",
                "type": "function",
                "function": {"name": name, "arguments": arguments},
            }
            for i, (name, arguments) in enumerate(turn.tool_calls)
        ]
        completion_chars += sum(len(a) + len(n) for n, a in turn.tool_calls)
    # Token counts are estimates (4 characters per token): the simulator has no tokenizer.
    prompt_tokens = prompt_chars // 4 + 1
    completion_tokens = completion_chars // 4 + 1
    usage: dict[str, Any] = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
    if turn.reasoning:
        # As OpenAI reports a reasoning model's: a part of the completion tokens, not added.
        usage["completion_tokens_details"] = {"reasoning_tokens": len(turn.reasoning) // 4}
    return json.dumps(
        {
            "id": f"chatcmpl-sim{number:x}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model_name,
            "system_fingerprint": SYSTEM_FINGERPRINT,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": turn.finish_reason,
                }
            ],
            "usage": usage,
        },
        ensure_ascii=False,
    ).encode()


async def _read_body(receive: Any) -> bytes:
    chunks: list[bytes] = []
    while True:
        event = await receive()
        chunks.append(event.get("body", b""))
        if not event.get("more_body", False):
            break
    return b"".join(chunks)


def _model_card(model: OrganismModel) -> dict[str, Any]:
    return {
        "id": model.name,
        "object": "model",
        "created": 0,
        "owned_by": OWNER,
        "metadata": model.metadata(),
    }


def _scenarios_of(heldout: HeldoutSet | Iterable[Scenario]) -> list[Scenario]:
    """Scenarios of a held-out set object, or of any iterable of scenarios."""
    from audit.heldout.loader import HeldoutSet

    return list(heldout.scenarios if isinstance(heldout, HeldoutSet) else heldout)


def _default_heldout() -> HeldoutSet:
    from audit.heldout import load_heldout

    return load_heldout()


def create_app(
    organisms: Mapping[str, OrganismModel] | None,
    heldout: HeldoutSet | Iterable[Scenario] | None,
    *,
    latency_s: float = 0.0,
    faults: FaultConfig | None = None,
    batch: BatchSettings | None = None,
) -> Starlette:
    """The starlette app serving ``organisms`` (all shipped ones if None) on ``heldout``.

    ``heldout`` is a held-out set (anything with ``.scenarios``) or an iterable of scenarios;
    None loads the shipped set. ``batch`` configures the Files and Batches endpoints
    (:mod:`audit.organisms.batches`), which are always served.
    """
    models = dict(organisms) if organisms is not None else load_organisms()
    scenarios = _scenarios_of(heldout if heldout is not None else _default_heldout())
    chat = ChatCompletions(models, ScenarioIndex(scenarios), latency_s=latency_s, faults=faults)
    cards = [_model_card(models[name]) for name in sorted(models)]

    async def list_models(request: Request) -> Response:
        return JSONResponse({"object": "list", "data": cards})

    async def get_model(request: Request) -> Response:
        name = request.path_params["model"]
        if name not in models:
            body = _error_body(
                f"The model `{name}` does not exist.",
                "invalid_request_error",
                "model_not_found",
                "model",
            )
            return Response(body, status_code=404, media_type="application/json")
        return JSONResponse(_model_card(models[name]))

    async def http_error(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        detail = exc.detail if isinstance(exc, HTTPException) else "internal error"
        body = _error_body(
            f"{detail}: {request.method} {request.url.path}", "invalid_request_error", None
        )
        return Response(body, status_code=status, media_type="application/json")

    batches = BatchService(chat.answer, batch or BatchSettings())
    routes = [
        Route("/v1/chat/completions", chat, methods=["POST"]),
        Route("/v1/models", list_models, methods=["GET"]),
        Route("/v1/models/{model:path}", get_model, methods=["GET"]),
        *batches.routes(),
    ]
    app = Starlette(routes=routes, exception_handlers={HTTPException: http_error})
    app.state.chat = chat
    app.state.batches = batches
    return app


@dataclass
class RunningServer:
    """A server running in a background thread; use as a context manager or call ``stop()``."""

    host: str
    port: int
    models: tuple[str, ...]
    _server: uvicorn.Server
    _thread: threading.Thread
    _chat: ChatCompletions
    _batches: BatchService

    @property
    def batches(self) -> list[SimulatedBatch]:
        """Every batch created so far, oldest first (tests check none was submitted twice)."""
        return list(self._batches.batches.values())

    @property
    def uploaded_files(self) -> dict[str, bytes]:
        """Content of every file stored by the Files API, by id."""
        return {file_id: f.data for file_id, f in self._batches.files.items()}

    def set_batch_settings(self, settings: BatchSettings) -> None:
        """Change how batches created from now on behave (e.g. a slow first batch only)."""
        self._batches.settings = settings

    @property
    def injected_faults(self) -> dict[str, int]:
        """Faults injected so far, by kind."""
        return dict(self._chat.injected)

    @property
    def base_url(self) -> str:
        """What to give the openai client: ``http://HOST:PORT/v1``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/v1"

    def stop(self) -> None:
        """Stop serving and wait for the thread (pending slow requests are abandoned)."""
        self._server.should_exit = True
        # Deliberately slow requests (timeout faults) must not hold the shutdown.
        self._server.force_exit = True
        self._thread.join(timeout=10)

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio only sets TCP_NODELAY on sockets whose proto says TCP, and
    # without it every response waits ~40 ms for a delayed ACK (Nagle).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise AuditError(
            f"cannot listen on {host}:{port} ({exc.strerror}): choose another --port, or 0 for a "
            "free one"
        ) from None
    sock.listen(2048)
    return sock


def make_uvicorn_server(app: Starlette) -> uvicorn.Server:
    """A quiet uvicorn server for ``app`` (httptools/uvloop only if installed, via "auto")."""
    logging.getLogger("uvicorn.error").addFilter(_QuietInjectedFaults())
    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_keep_alive=30,
        backlog=2048,
    )
    return uvicorn.Server(config)


def start_server(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    latency_s: float = 0.0,
    faults: FaultConfig | None = None,
    organisms: Mapping[str, OrganismModel] | Iterable[OrganismModel] | None = None,
    heldout: HeldoutSet | Iterable[Scenario] | None = None,
    batch: BatchSettings | None = None,
) -> RunningServer:
    """Serve the organisms on ``host:port`` (0: a free port) in a background thread."""
    if organisms is not None and not isinstance(organisms, Mapping):
        organisms = {model.name: model for model in organisms}
    app = create_app(organisms, heldout, latency_s=latency_s, faults=faults, batch=batch)
    sock = _bind(host, port)
    server = make_uvicorn_server(app)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="organism-server", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            sock.close()
            raise AuditError(f"the organism server did not start on {host}:{port}")
        time.sleep(0.005)
    bound_port = sock.getsockname()[1]
    names = tuple(sorted(app.state.chat.organisms))
    return RunningServer(host, bound_port, names, server, thread, app.state.chat, app.state.batches)


class ServerProcess:
    """The organism server in a child process (a second core for the demo); stop() ends it."""

    _READY = "organism simulator listening on "

    def __init__(
        self,
        host: str = "127.0.0.1",
        *,
        startup_timeout_s: float = 30.0,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        # The child's errors go to a file, so a failed start can say why.
        self._stderr = tempfile.TemporaryFile(mode="w+", encoding="utf-8")  # noqa: SIM115 (closed in stop)
        command = [sys.executable, "-m", "audit", "serve-organisms", "--host", host, "--port", "0"]
        self._process = subprocess.Popen(
            [*command, *extra_args],
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        self._startup_timeout_s = startup_timeout_s
        self._base_url: str | None = None

    @property
    def base_url(self) -> str:
        """The server's URL; the first access waits until it listens (the caller can do other
        work while the child starts)."""
        if self._base_url is None:
            self._base_url = self._wait_for_url(self._startup_timeout_s)
        return self._base_url

    def _wait_for_url(self, timeout_s: float) -> str:
        assert self._process.stdout is not None
        timer = threading.Timer(timeout_s, self._process.kill)
        timer.start()
        try:
            for line in self._process.stdout:
                if line.startswith(self._READY):
                    return line[len(self._READY) :].strip()
        finally:
            timer.cancel()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._process.wait(timeout=10)
        reason = self.last_error() or "no output"
        self.stop()
        raise AuditError(
            f"the organism server process did not start ({reason}): "
            "run `audit serve-organisms` to see why"
        )

    def last_error(self) -> str:
        """The last line the server process wrote to stderr, if any."""
        self._stderr.seek(0)
        lines = [line.strip() for line in self._stderr.read().splitlines() if line.strip()]
        return lines[-1] if lines else ""

    def stop(self) -> None:
        """Terminate the child and wait for it."""
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        if self._process.stdout is not None:
            self._process.stdout.close()
        self._stderr.close()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve_organisms(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    latency_s: float = 0.0,
    faults: FaultConfig | None = None,
    organisms: Mapping[str, OrganismModel] | None = None,
    heldout: HeldoutSet | Iterable[Scenario] | None = None,
    batch: BatchSettings | None = None,
    on_ready: Callable[[str, tuple[str, ...]], None] | None = None,
) -> None:
    """Serve in the foreground until interrupted (Ctrl-C / SIGTERM stop it cleanly).

    ``on_ready(base_url, model_names)`` is called once the socket listens, before serving.
    """
    app = create_app(organisms, heldout, latency_s=latency_s, faults=faults, batch=batch)
    sock = _bind(host, port)
    bound_port = sock.getsockname()[1]
    shown_host = f"[{host}]" if ":" in host else host
    if on_ready is not None:
        on_ready(f"http://{shown_host}:{bound_port}/v1", tuple(sorted(app.state.chat.organisms)))
    server = make_uvicorn_server(app)
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        # uvicorn shuts down gracefully, then re-raises the Ctrl-C it captured: that is the
        # normal way to stop, not an error.
        pass
    finally:
        sock.close()
