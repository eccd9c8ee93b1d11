"""Asking a server to continue a prefilled assistant turn, per server.

The OpenAI chat API has no prefill: a trailing assistant message is, to most servers, a finished
turn after which a new one starts. Servers that can continue one do it differently:

* **organisms** (``audit serve-organisms``): a trailing assistant message whose ``content`` or
  ``reasoning_content`` holds text is the start of the turn being generated; the reply is the
  rest of that turn. Earlier assistant messages carry their reasoning as ``reasoning_content``
  too, since the simulator decides awareness from the reasoning it is sent.
* **vllm**: the trailing assistant message plus ``continue_final_message: true`` and
  ``add_generation_prompt: false`` in the request body (the chat template then leaves the turn
  open). The reasoning is prefilled as text in an open ``<think>`` block, the convention of the
  open reasoning models vLLM serves; with a reasoning parser the continuation comes back in
  ``reasoning_content``, without one as ``...</think>answer`` in the content, and both are read.
* **llama.cpp** (``llama-server``): the same request as vLLM. Builds since 2025 continue a
  trailing assistant message by default (``--no-prefill-assistant`` turns that off) and newer
  ones also accept ``continue_final_message``; both are sent, so either kind continues.
* **llama-cpp-python** (``python -m llama_cpp.server``): its chat endpoint always appends a new
  model turn after the last message (measured: a prefill of "One, two, three, four," came back
  as a new turn repeating it). So the conversation is rendered with the model's chat template
  here and sent to ``/v1/completions``, whose text continues the prompt (the same prefill came
  back as " five, six, seven, ..."). The template is named by the model's ``chat_template``
  setting (``gemma`` or ``chatml``); the server adds the BOS token itself.

Hosted APIs that hide reasoning (OpenAI's reasoning models) cannot be continued from an edited
reasoning at all. :func:`probe` asks the server's ``/v1/models`` once who serves the model
(``owned_by``: the organisms' ``specdrift-organisms (simulator)``, vLLM's ``vllm``, llama.cpp's
``llamacpp``, llama-cpp-python's ``me``) and refuses any other server in one line, unless the
model's ``prefill`` setting names the protocol.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import openai

from audit.errors import AuditError
from audit.runner.client import (
    MalformedResponse,
    check_completion,
    parse_completion,
    reasoning_tokens_of,
    split_reasoning,
)

Protocol = Literal["organisms", "vllm", "llama.cpp", "llama-cpp-python"]
PROTOCOLS: tuple[Protocol, ...] = ("organisms", "vllm", "llama.cpp", "llama-cpp-python")

#: ``owned_by`` of ``/v1/models`` entries -> the protocol that server continues prefills with.
OWNERS: dict[str, Protocol] = {
    "specdrift-organisms (simulator)": "organisms",
    "vllm": "vllm",
    "llamacpp": "llama.cpp",
    "me": "llama-cpp-python",
}
_CHAT_ONLY = ("max_completion_tokens", "reasoning_effort")
_END_OF_TURN: dict[str, str] = {"gemma": "<end_of_turn>", "chatml": "<|im_end|>"}


@dataclass(frozen=True)
class Prefill:
    """The start of the turn the model continues."""

    reasoning: str
    content: str

    @property
    def in_reasoning(self) -> bool:
        """The model continues the reasoning (no visible text is prefilled)."""
        return not self.content


@dataclass
class Continued:
    """What the model added to a prefilled turn, with the call's accounting."""

    reasoning: str
    """Reasoning the model wrote after the prefilled reasoning ('' if none)."""
    content: str | None
    """The turn's whole visible text (prefilled visible text included)."""
    tool_calls: list[dict[str, Any]]
    finish_reason: str | None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    system_fingerprint: str | None = None
    reasoning_tokens: int | None = None
    """Part of ``completion_tokens``, when the server reports it."""

    @property
    def generated_text(self) -> str:
        """Everything the model itself wrote in the turn (what re-verbalized awareness is
        looked for in), reasoning first."""
        return "\n\n".join(part for part in (self.reasoning, self.content) if part)


# -- finding out what the server can do ---------------------------------------------------------


def probe(
    base_url: str,
    api_key: str,
    model: str,
    configured: str,
    *,
    timeout_s: float,
    scrub: Callable[[str], str],
) -> Protocol:
    """The protocol to continue prefills with at ``base_url``; AuditError when there is none.

    ``configured`` is the model's ``prefill`` setting: a protocol name is used as given,
    ``auto`` asks ``/v1/models`` (once per command) who serves the model. ``scrub`` removes the
    key from a server's error text before it is shown.
    """
    if configured in PROTOCOLS:
        return configured
    client = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=1, timeout=timeout_s)
    try:
        page = client.models.list()
    except openai.APIError as exc:
        raise AuditError(
            f"cannot ask {base_url}/models which server this is ({scrub(_short(exc))}): set "
            f'prefill = "vllm", "llama.cpp", "llama-cpp-python" or "organisms" for model '
            f"{model!r} in audit.toml (or pass --prefill) if the server continues prefilled turns"
        ) from None
    finally:
        client.close()
    owners = {entry.id: str(getattr(entry, "owned_by", "") or "") for entry in page.data}
    owner = owners.get(model) or next(iter(owners.values()), "")
    protocol = OWNERS.get(owner)
    if protocol is None:
        raise AuditError(
            f"the server at {base_url} (models owned by {scrub(owner) or 'nobody'!r}) is not "
            "known to continue a prefilled assistant turn, and hosted APIs that hide reasoning "
            "cannot: serve the model with vLLM or llama.cpp, or pass --prefill if this server does"
        )
    return protocol


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 160 else text[:157] + "..."


# -- sending history and the prefilled turn -----------------------------------------------------


def history_message(protocol: Protocol, message: Mapping[str, Any]) -> dict[str, Any]:
    """A stored message as sent back to the server in a counterfactual conversation.

    Assistant turns carry their reasoning only to the organisms, which decide awareness from it
    (real chat templates drop earlier turns' reasoning anyway); the ``reasoning`` key of stored
    transcripts is never sent as such.
    """
    if message.get("role") != "assistant":
        return dict(message)
    sent: dict[str, Any] = {"role": "assistant", "content": message.get("content")}
    if message.get("tool_calls"):
        sent["tool_calls"] = message["tool_calls"]
    if protocol == "organisms" and message.get("reasoning"):
        sent["reasoning_content"] = message["reasoning"]
    return sent


def prefill_text(prefill: Prefill) -> str:
    """The prefilled turn as text: reasoning in a ``<think>`` block, left open when the model
    is to continue the reasoning itself."""
    if prefill.in_reasoning:
        return "<think>\n" + prefill.reasoning
    head = f"<think>\n{prefill.reasoning}\n</think>\n\n" if prefill.reasoning else ""
    return head + prefill.content


async def continue_turn(
    protocol: Protocol,
    client: openai.AsyncOpenAI,
    history: Sequence[Mapping[str, Any]],
    prefill: Prefill,
    request: Mapping[str, Any],
    tools: list[dict[str, Any]],
    chat_template: str | None,
) -> Continued:
    """One call that continues the prefilled turn; returns what the model added."""
    sent = [history_message(protocol, m) for m in history]
    if protocol == "llama-cpp-python":
        return await _continue_by_completion(client, sent, prefill, request, chat_template)
    if protocol == "organisms":
        last = {
            "role": "assistant",
            "content": prefill.content,
            "reasoning_content": prefill.reasoning or None,
        }
        body = {"messages": [*sent, last], "tools": tools, **request}
    else:
        last = {"role": "assistant", "content": prefill_text(prefill)}
        body = {
            "messages": [*sent, last],
            "tools": tools,
            **request,
            "continue_final_message": True,
            "add_generation_prompt": False,
        }
    raw = await client.post(
        "/chat/completions", body=body, cast_to=bytes, options={"security": {"bearer_auth": True}}
    )
    response = parse_completion(raw)
    check_completion(response)
    return _from_chat(protocol, prefill, response)


def _from_chat(protocol: Protocol, prefill: Prefill, response: Any) -> Continued:
    choice = response.choices[0]
    message = choice.message
    calls = [
        {
            "id": call.id,
            "type": "function",
            "function": {"name": call.function.name, "arguments": call.function.arguments},
        }
        for call in message.tool_calls or []
        if getattr(call, "function", None) is not None
    ]
    if protocol == "organisms":
        content, reasoning = split_reasoning(message)
        added = reasoning or ""
        text = prefill.content + (content or "") if prefill.content else content
        continued = Continued(added, text or None, calls, choice.finish_reason)
    else:
        extra = getattr(message, "model_extra", None) or {}
        separate = extra.get("reasoning_content") or extra.get("reasoning") or ""
        continued = _from_text(prefill, message.content or "", str(separate))
        continued.tool_calls = calls
        continued.finish_reason = choice.finish_reason
    usage = response.usage
    if usage is not None:
        continued.prompt_tokens = usage.prompt_tokens or 0
        continued.completion_tokens = usage.completion_tokens or 0
        continued.reasoning_tokens = reasoning_tokens_of(usage)
    continued.system_fingerprint = response.system_fingerprint
    return continued


def _from_text(prefill: Prefill, text: str, separate_reasoning: str = "") -> Continued:
    """Split a text continuation of :func:`prefill_text` into reasoning and visible text.

    A server with a reasoning parser returns the continued reasoning apart; otherwise the text
    continues the open ``<think>`` block until ``</think>``.
    """
    if not prefill.in_reasoning:
        return Continued(separate_reasoning, prefill.content + text, [], None)
    if "</think>" in text:
        reasoning, _, content = text.partition("</think>")
        return Continued(separate_reasoning + reasoning, content.strip() or None, [], None)
    if separate_reasoning:
        return Continued(separate_reasoning, text.strip() or None, [], None)
    return Continued(text, None, [], None)  # still thinking when the tokens ran out


# -- llama-cpp-python: render the chat, continue it as text ------------------------------------


def render_prompt(template: str, messages: Sequence[Mapping[str, Any]], prefill: Prefill) -> str:
    """The conversation in the model's chat format, ending inside the prefilled turn."""
    if template == "gemma":
        return _render_gemma(messages) + "<start_of_turn>model\n" + prefill_text(prefill)
    if template == "chatml":
        return _render_chatml(messages) + "<|im_start|>assistant\n" + prefill_text(prefill)
    raise AuditError(f"unknown chat_template {template!r}: use gemma or chatml")


def _plain(message: Mapping[str, Any]) -> str:
    """A message's text, with tool calls written out (chat formats without a tool role)."""
    text = str(message.get("content") or "")
    calls = message.get("tool_calls") or []
    written = [
        json.dumps({"tool": c["function"]["name"], "arguments": c["function"]["arguments"]})
        for c in calls
    ]
    return "\n".join(part for part in (text, *written) if part)


def _render_gemma(messages: Sequence[Mapping[str, Any]]) -> str:
    # Gemma has user and model turns only: the system and developer text opens the first user
    # turn (as Gemma's own template does), tool results are user turns.
    preamble = [str(m.get("content") or "") for m in messages if m.get("role") in _SYSTEM_ROLES]
    out, pending = [], "\n\n".join(p for p in preamble if p)
    for message in messages:
        role = message.get("role")
        if role in _SYSTEM_ROLES:
            continue
        text = _plain(message) if role != "tool" else f"Tool result: {message.get('content')}"
        if role in ("user", "tool"):
            text = f"{pending}\n\n{text}" if pending else text
            pending = ""
            out.append(f"<start_of_turn>user\n{text}<end_of_turn>\n")
        else:
            out.append(f"<start_of_turn>model\n{text}<end_of_turn>\n")
    return "".join(out)


_SYSTEM_ROLES = ("system", "developer")


def _render_chatml(messages: Sequence[Mapping[str, Any]]) -> str:
    out = []
    for message in messages:
        role = message.get("role")
        if role == "tool":
            role, text = "user", f"Tool result: {message.get('content')}"
        else:
            role, text = ("system" if role == "developer" else role), _plain(message)
        out.append(f"<|im_start|>{role}\n{text}<|im_end|>\n")
    return "".join(out)


async def _continue_by_completion(
    client: openai.AsyncOpenAI,
    sent: Sequence[Mapping[str, Any]],
    prefill: Prefill,
    request: Mapping[str, Any],
    chat_template: str | None,
) -> Continued:
    if chat_template not in _END_OF_TURN:
        raise AuditError(
            "llama-cpp-python's server cannot continue a prefilled turn through chat "
            'completions, so specdrift renders the chat itself: set chat_template = "gemma" '
            'or "chatml" for the model in audit.toml (or pass --chat-template)'
        )
    body = {
        "prompt": render_prompt(chat_template, sent, prefill),
        "stop": [_END_OF_TURN[chat_template]],
        # A text completion knows no reasoning effort, and names its token limit max_tokens.
        **{k: v for k, v in request.items() if k not in _CHAT_ONLY},
    }
    if "max_completion_tokens" in request and "max_tokens" not in body:
        body["max_tokens"] = request["max_completion_tokens"]
    raw = await client.post(
        "/completions", body=body, cast_to=bytes, options={"security": {"bearer_auth": True}}
    )
    data = _completion_json(raw)
    choice = data["choices"][0]
    continued = _from_text(prefill, str(choice.get("text") or ""))
    continued.finish_reason = choice.get("finish_reason")
    usage = data.get("usage") or {}
    continued.prompt_tokens = int(usage.get("prompt_tokens") or 0)
    continued.completion_tokens = int(usage.get("completion_tokens") or 0)
    continued.reasoning_tokens = reasoning_tokens_of(usage)
    continued.system_fingerprint = data.get("system_fingerprint")
    return continued


def _completion_json(raw: bytes) -> dict[str, Any]:
    data = json.loads(raw)  # JSONDecodeError is a malformed response for the retry loop
    choices = data.get("choices") if isinstance(data, dict) else None
    if not choices or not isinstance(choices[0], dict):
        raise MalformedResponse("text completion has no choices")
    return data
