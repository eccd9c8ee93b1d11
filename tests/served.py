"""Serving an ASGI app from a background thread on a free loopback port, for tests."""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn


@contextmanager
def served_in_thread(app: Any, server: uvicorn.Server | None = None) -> Iterator[tuple[str, Any]]:
    """Serve ``app`` (or run the given uvicorn ``server``) on 127.0.0.1; yields
    (``http://127.0.0.1:PORT/v1``, the uvicorn server, whose state counts requests)."""
    if server is None:
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
        server = uvicorn.Server(config)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/v1", server
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def key_forms(key: str) -> dict[str, str]:
    """The ways a hostile server can send a key back: as is, base64 (alone, as the encoded
    header, as Basic auth, URL-safe at another alignment), URL-encoded, and cut short at either
    end. What a test checks is absent from everything specdrift stores and prints."""
    import base64
    from urllib.parse import quote

    def b64(text: str) -> str:
        return base64.b64encode(text.encode()).decode()

    quoted = quote(key, safe="")
    return {
        "exact": key,
        "base64": b64(key),
        "base64 of the header": b64(f"Bearer {key}"),
        "basic auth": b64(f"user:{key}"),
        "base64url": base64.urlsafe_b64encode(f"xy{key}".encode()).decode(),
        "url-encoded": quoted,
        "url-encoded, lower-case escapes": re.sub(
            "%[0-9A-F]{2}", lambda m: m.group().lower(), quoted
        ),
        "truncated": key[:-1],
        "first characters dropped": key[3:],
        "first 8": key[:8],
        "last 8": key[-8:],
    }


def echoing_chat_app(seen: list[dict[str, Any]]) -> Any:
    """An OpenAI-compatible chat server that sends the received bearer key back in every form of
    :func:`key_forms` and in every field: content, reasoning, tool-call id and arguments, system
    fingerprint, response id; every third request (by seed) fails with a 500 whose body quotes
    the key and the request's headers. Request bodies are appended to ``seen``."""
    import json

    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def completions(request: Request) -> JSONResponse:
        auth = request.headers.get("authorization", "")
        key = auth.removeprefix("Bearer ")
        echo = " | ".join(f"{name}: {form}" for name, form in key_forms(key).items())
        headers = ", ".join(f"{k}: {v}" for k, v in request.headers.items())
        body = await request.json()
        seen.append(body)
        if body.get("seed", 0) % 3 == 0:
            error = {"message": f"{auth} refused; upstream failed for {echo}; headers: {headers}"}
            return JSONResponse({"error": error}, status_code=500)
        turn = sum(1 for m in body["messages"] if m["role"] == "assistant")
        message: dict[str, Any] = {
            "role": "assistant",
            "content": f"All done. {echo}",
            "reasoning_content": f"The key is {echo}",
        }
        if turn == 0 and body.get("tools"):
            name = body["tools"][0]["function"]["name"]
            message["tool_calls"] = [
                {
                    "id": f"call-{key}",
                    "type": "function",
                    "function": {"name": name, "arguments": json.dumps({"note": echo})},
                }
            ]
        completion = {
            "id": f"chatcmpl-{key}",
            "object": "chat.completion",
            "created": 0,
            "model": body["model"],
            "system_fingerprint": f"fp-{key[:-1]}",
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "finish_reason": "tool_calls" if "tool_calls" in message else "stop",
                }
            ],
            "usage": {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10},
        }
        return JSONResponse(completion)

    return Starlette(routes=[Route("/v1/chat/completions", completions, methods=["POST"])])
