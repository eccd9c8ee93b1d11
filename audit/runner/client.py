"""Talking to an OpenAI-compatible server: clients, the retry loop and one sample's conversation.

The openai client's own retries are switched off (``max_retries=0``) so that this module decides:
exponential backoff with full jitter on rate limits, server errors, timeouts, connection errors
and malformed responses, honouring ``Retry-After``. Errors that retrying cannot fix (400, 401,
404) fail the sample at once.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import random
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from audit.config import ModelConfig, RunConfig
from audit.errors import AuditError
from audit.runner.matrix import PlannedSample, seed_from_key
from audit.scrub import MIN_KEY_LENGTH, Scrubber, checked_base_url, checked_key

__all__ = ["Scrubber"]  # re-exported: the runner's scrubber is audit.scrub's

if TYPE_CHECKING:
    import openai
    from openai.types.chat import ChatCompletion

# openai (with httpx and its hundreds of typed models) takes about 0.4 s to import: it is imported
# where a request is made or answered, so a rerun that finds every sample stored never loads it.

DEFAULT_BASE_URL = "https://api.openai.com/v1"
LOCAL_PLACEHOLDER_KEY = "EMPTY"

T = TypeVar("T")

_THINK_BLOCK = re.compile(r"<think>(.*?)(?:</think>|$)", re.DOTALL)


# -- endpoints and keys ------------------------------------------------------------------------


def endpoint_of(model: ModelConfig, override: str | None) -> str:
    """The base URL for a model: the flag, then the model's config, then OPENAI_BASE_URL.

    A URL carrying a user name or password is refused (it would be stored with the run).
    """
    url = override or model.base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL
    return checked_base_url(url)


def is_loopback(base_url: str) -> bool:
    host = urlsplit(base_url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def api_key_for(model: ModelConfig, base_url: str) -> str:
    """The key from the variable the model names; local servers accept a placeholder.

    A key shorter than :data:`audit.scrub.MIN_KEY_LENGTH` is refused for a remote server: it
    could not be scrubbed from answers without mangling ordinary words. A loopback server takes
    one as the placeholder it is (``OPENAI_API_KEY=EMPTY`` is how vLLM's documentation runs it):
    nothing secret leaves the machine.
    """
    key = os.environ.get(model.api_key_env, "")
    if key and len(key) < MIN_KEY_LENGTH and is_loopback(base_url):
        return key
    if key:
        return checked_key(key, model.api_key_env)
    if is_loopback(base_url):
        return LOCAL_PLACEHOLDER_KEY
    raise AuditError(
        f"environment variable {model.api_key_env} is not set: export the API key for model "
        f"{model.name!r} there (or set api_key_env in audit.toml)"
    )


def make_client(
    base_url: str, api_key: str, pool_size: int, timeout_s: float
) -> openai.AsyncOpenAI:
    """One AsyncOpenAI client per endpoint, with a connection pool as large as its concurrency."""
    import httpx2
    import openai

    limits = httpx2.Limits(max_connections=pool_size, max_keepalive_connections=pool_size)
    http_client = openai.DefaultAsyncHttpxClient(limits=limits, timeout=timeout_s)
    return openai.AsyncOpenAI(
        base_url=base_url,
        api_key=api_key,
        max_retries=0,
        timeout=timeout_s,
        http_client=http_client,
    )


# -- errors and retries ------------------------------------------------------------------------


class MalformedResponse(Exception):
    """The server answered 200 with something that is not a chat completion."""


@dataclass(frozen=True)
class CallError:
    """A classified failure of one request."""

    kind: str
    message: str
    retryable: bool
    retry_after_s: float | None = None


def classify(exc: BaseException) -> CallError | None:
    """Map an exception to an error kind, or None when it is not a request failure (a bug)."""
    import openai

    if isinstance(exc, openai.APITimeoutError):
        return CallError("timeout", "request timed out", True)
    if isinstance(exc, openai.APIConnectionError):
        return CallError("connection", f"connection error: {exc}", True)
    if isinstance(exc, openai.APIStatusError):
        retry_after = _retry_after_s(exc.response.headers)
        return status_error(exc.status_code, str(exc.message), retry_after)
    if isinstance(
        exc, openai.APIResponseValidationError | MalformedResponse | json.JSONDecodeError
    ):
        # JSONDecodeError: the body was labelled JSON and was not.
        return CallError("malformed_response", f"malformed response: {_short(str(exc))}", True)
    return None


def status_error(status: int, message: str, retry_after_s: float | None = None) -> CallError:
    """Classify an HTTP error status (of a live request or of a batch output line)."""
    text = f"HTTP {status}: {_short(message)}"
    if status == 429:
        return CallError("rate_limit", text, True, retry_after_s)
    if status >= 500 or status == 408:
        kind = "timeout" if status == 408 else "server_error"
        return CallError(kind, text, True, retry_after_s)
    return CallError("other", text, False)  # 400, 401, 404: retrying cannot help


def _retry_after_s(headers: Any) -> float | None:
    """The server's requested wait: ``retry-after-ms`` (OpenAI's, finer) or ``retry-after``."""
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if not value:
            continue
        try:
            return max(0.0, float(value) / scale)
        except ValueError:
            continue  # an HTTP date: rare from model servers; fall back to our own backoff
    return None


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def backoff_s(
    attempt: int, run: RunConfig, retry_after_s: float | None, rng: random.Random
) -> float:
    """Full-jitter exponential backoff; a server's Retry-After is a floor."""
    cap = min(run.retry_max_s, run.retry_base_s * (2**attempt))
    delay = rng.uniform(0, cap)
    if retry_after_s is not None:
        delay = max(delay, min(retry_after_s, run.retry_max_s))
    return delay


class SampleFailed(Exception):
    """A sample gave up after its retries (or on an error retrying cannot fix)."""

    def __init__(self, error: CallError, attempts: int) -> None:
        super().__init__(error.message)
        self.error = error
        self.attempts = attempts


@dataclass
class CallStats:
    """Counters shared by every request of a run."""

    calls: int = 0
    retries: int = 0


async def with_retries(
    call: Callable[[], Awaitable[T]],
    run: RunConfig,
    stats: CallStats,
    rng: random.Random,
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    check: Callable[[Any], None] | None = None,
) -> tuple[T, int, float]:
    """Run ``call`` until it succeeds or retries are exhausted.

    Returns (result, attempts, seconds the successful attempt took): latency excludes failed
    attempts and backoff sleeps, which say more about the run than about the model. ``check``
    rejects a 200 answer that is not usable (by default: not a chat completion), which is
    retried like a malformed response.
    """
    attempt = 0
    while True:
        attempt += 1
        stats.calls += 1
        started = time.perf_counter()
        try:
            response = await call()
            (check or check_completion)(response)
            return response, attempt, time.perf_counter() - started
        except Exception as exc:
            error = classify(exc)
            if error is None:
                raise
            if not error.retryable or attempt > run.max_retries:
                raise SampleFailed(error, attempt) from None
            stats.retries += 1
            await sleep(backoff_s(attempt - 1, run, error.retry_after_s, rng))


def parse_completion(body: bytes) -> ChatCompletion:
    """A chat completion from a response body.

    Strict validation in pydantic-core first (about ten times cheaper than openai's lenient
    recursive construction, which cost 14% of the runner's CPU); a body that is valid JSON but
    not quite the schema (servers omit fields) is still read leniently, as the client would.
    """
    import pydantic
    from openai.types.chat import ChatCompletion

    try:
        return ChatCompletion.model_validate_json(body)
    except pydantic.ValidationError:
        data = json.loads(body)  # not JSON at all: JSONDecodeError, a malformed response
        if not isinstance(data, dict):
            raise MalformedResponse(f"expected a JSON object, got {type(data).__name__}") from None
        return ChatCompletion.construct(**data)


def check_completion(response: object) -> None:
    """Reject 200 answers that are not usable completions (text bodies, missing choices)."""
    from openai.types.chat import ChatCompletion

    if not isinstance(response, ChatCompletion):
        raise MalformedResponse(f"expected a chat completion, got {type(response).__name__}")
    choices = getattr(response, "choices", None)
    if not choices or getattr(choices[0], "message", None) is None:
        raise MalformedResponse("completion has no choices")


# -- one conversation --------------------------------------------------------------------------


@dataclass
class Conversation:
    """What one sample's conversation produced."""

    messages: list[dict[str, Any]]
    turns: int
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    latency_ms: float
    system_fingerprint: str | None
    attempts: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    reasoning_tokens: int | None = None
    """Part of ``completion_tokens``; None while the server reported none."""


def scrubbed(conversation: Conversation, scrub: Scrubber) -> Conversation:
    """The conversation with the key removed from everything the server's answers put in it:
    assistant messages (content, reasoning, tool calls), tool replies (canned results may quote
    a call's arguments), the finish reason and the system fingerprint. The system and user
    messages are ours and are kept as sent."""
    messages = [
        scrub.value(m) if m.get("role") in ("assistant", "tool") else m
        for m in conversation.messages
    ]
    return replace(
        conversation,
        messages=messages,
        finish_reason=None
        if conversation.finish_reason is None
        else scrub(conversation.finish_reason),
        system_fingerprint=None
        if conversation.system_fingerprint is None
        else scrub(conversation.system_fingerprint),
        extra=scrub.value(conversation.extra),
    )


def split_reasoning(message: Any) -> tuple[str | None, str | None]:
    """(content without think blocks, reasoning) from an assistant message of any server.

    Servers expose reasoning as ``reasoning_content`` (vLLM, llama.cpp, DeepSeek), ``reasoning``
    (Ollama, OpenRouter) or inline ``<think>...</think>`` blocks in the content.
    """
    extra = getattr(message, "model_extra", None) or {}
    parts = [
        str(value)
        for value in (extra.get("reasoning_content"), extra.get("reasoning"))
        if isinstance(value, str) and value
    ]
    content = message.content
    if content and "<think>" in content:
        parts.extend(block.strip() for block in _THINK_BLOCK.findall(content) if block.strip())
        content = _THINK_BLOCK.sub("", content).strip() or None
    return content, ("\n\n".join(parts) or None)


def assistant_entry(message: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """(message sent back to the server, message kept in the transcript) for one reply."""
    content, reasoning = split_reasoning(message)
    sent: dict[str, Any] = {"role": "assistant", "content": content}
    if message.tool_calls:
        sent["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.function.name, "arguments": call.function.arguments},
            }
            for call in message.tool_calls
            if getattr(call, "function", None) is not None
        ]
    kept = dict(sent)
    if reasoning:
        kept["reasoning"] = reasoning
    return sent, kept


@dataclass
class ConversationState:
    """One sample's conversation between two requests: what to send next, what is kept.

    The live runner (:func:`converse`) and the batch runner (one request per wave) both drive
    a conversation through this object, so a batch run and a live run of the same sample send
    the same requests and keep the same transcript.
    """

    sample: PlannedSample
    sent: list[dict[str, Any]]
    """Messages as sent to the server (assistant turns without reasoning)."""
    result: Conversation
    """The transcript kept (assistant turns with reasoning) and the counters."""
    tools: list[dict[str, Any]]
    request: dict[str, Any]
    finished: bool = False

    @classmethod
    def open(cls, sample: PlannedSample) -> ConversationState:
        """The conversation before its first request."""
        scenario = sample.scenario
        sent = scenario.messages(sample.condition, sample.spec_text, sample.model.spec_placement)
        kept = [dict(m) for m in sent]
        return cls(
            sample=sample,
            sent=sent,
            result=Conversation(kept, 0, None, 0, 0, 0.0, None),
            tools=scenario.openai_tools(),
            request=_request_args(sample),
        )

    def body(self) -> dict[str, Any]:
        """The next chat-completion request body (JSON-ready; the messages list is shared)."""
        return {"messages": self.sent, "tools": self.tools, **self.request}

    def apply(self, response: ChatCompletion, max_turns: int) -> None:
        """Add one answer: answer its tool calls from the scenario's canned results, and stop at
        a final answer, after the submission tool was called, or at ``max_turns``."""
        result = self.result
        result.turns += 1
        _add_usage(result, response)
        choice = response.choices[0]
        result.finish_reason = choice.finish_reason
        sent_message, kept_message = assistant_entry(choice.message)
        self.sent.append(sent_message)
        result.messages.append(kept_message)
        calls = sent_message.get("tool_calls") or []
        submitted = False
        scenario = self.sample.scenario
        for tool_call in calls:
            name = tool_call["function"]["name"]
            answer = scenario.answer_tool_call(name, tool_call["function"]["arguments"])
            reply = {"role": "tool", "tool_call_id": tool_call["id"], "content": answer}
            self.sent.append(reply)
            result.messages.append(dict(reply))
            submitted = submitted or name == scenario.submission.tool
        self.finished = not calls or submitted or result.turns >= max_turns


async def converse(
    client: openai.AsyncOpenAI,
    sample: PlannedSample,
    run: RunConfig,
    stats: CallStats,
    rng: random.Random,
) -> Conversation:
    """Run one sample: offer the scenario's tools, answer calls from canned results, stop at a
    final answer, after the submission tool was called, or at ``run.max_turns``."""
    state = ConversationState.open(sample)
    result = state.result
    while not state.finished:

        async def call(body: dict[str, Any] = state.body()) -> ChatCompletion:
            # The client's generic POST rather than the typed ``create``: ``create`` walks every
            # message of the growing conversation through openai's TypedDict transform, which
            # took a third of the runner's CPU at zero latency; these dicts are already JSON.
            raw = await client.post(
                "/chat/completions",
                body=body,
                cast_to=bytes,
                options={"security": {"bearer_auth": True}},
            )
            return parse_completion(raw)

        response, attempts, elapsed_s = await with_retries(call, run, stats, rng)
        result.latency_ms += elapsed_s * 1000
        result.attempts += attempts
        state.apply(response, run.max_turns)
    return result


def _request_args(sample: PlannedSample) -> dict[str, Any]:
    return request_args(sample.model, seed_from_key(sample.key))


def request_args(model: ModelConfig, seed: int) -> dict[str, Any]:
    """The request fields of every call of a model: its name, the seed, its parameters."""
    params = model.params
    args: dict[str, Any] = {"model": model.name, "seed": seed}
    if params.temperature is not None:
        args["temperature"] = params.temperature
    # Reasoning models (OpenAI's o-series, gpt-5) refuse max_tokens and take
    # max_completion_tokens instead; a model configures one or the other.
    if params.max_completion_tokens is not None:
        args["max_completion_tokens"] = params.max_completion_tokens
    elif params.max_tokens is not None:
        args["max_tokens"] = params.max_tokens
    if params.reasoning_effort is not None:
        args["reasoning_effort"] = params.reasoning_effort
    return args


def _add_usage(result: Conversation, response: ChatCompletion) -> None:
    usage = response.usage
    if usage is not None:
        result.prompt_tokens += usage.prompt_tokens or 0
        result.completion_tokens += usage.completion_tokens or 0
        reasoning = reasoning_tokens_of(usage)
        if reasoning is not None:
            result.reasoning_tokens = (result.reasoning_tokens or 0) + reasoning
    if response.system_fingerprint:
        result.system_fingerprint = response.system_fingerprint


def reasoning_tokens_of(usage: Any) -> int | None:
    """Reasoning tokens a response's usage reports (OpenAI:
    ``completion_tokens_details.reasoning_tokens``), or None when it reports none. Usage read
    leniently from an off-schema body is a plain dict, so both shapes are read."""
    details = _field(usage, "completion_tokens_details")
    value = _field(details, "reasoning_tokens") if details is not None else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _field(value: Any, name: str) -> Any:
    if isinstance(value, dict):
        return value.get(name)
    return getattr(value, name, None)


def dumps(value: Any) -> str:
    """Compact JSON for stored columns."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
