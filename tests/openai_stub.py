"""A minimal scripted OpenAI-compatible chat server for runner tests and benchmarks.

It is not a model organism: it answers every conversation the same way, so a benchmark measures
the runner rather than a simulator. Turn 1 calls the first offered tool with ``{}``; turn 2 calls
the last offered tool (scenarios list their submission tool last by convention, and any tool will
do for timing) with a fixed summary; later turns, or requests without tools, get a final answer
with a ``<think>`` block (``single_turn`` gives that answer at once: one call per sample).
Optional fixed latency and injected faults (429, 500, a timeout, a malformed JSON body) exercise
the retry loop.

Run standalone (used by the benchmark, so the server has its own process and GIL)::

    python tests/openai_stub.py --latency 0.2   # prints "PORT <n>" once it listens
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import socket
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

FAULT_KINDS = ("rate_limit", "server_error", "timeout", "malformed")


@dataclass
class StubState:
    """Behaviour and counters of one stub server."""

    latency_s: float = 0.0
    fault_rate: float = 0.0
    faults: Sequence[str] = FAULT_KINDS
    hang_s: float = 30.0
    seed: int = 7
    single_turn: bool = False
    requests: int = 0
    faults_served: dict[str, int] = field(default_factory=dict)
    seen_auth: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)


def _completion(body: dict[str, Any], message: dict[str, Any], finish: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-stub",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model", "stub"),
        "system_fingerprint": "fp_stub",
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
    }


def _reply(body: dict[str, Any], single_turn: bool) -> dict[str, Any]:
    tools = [] if single_turn else body.get("tools") or []
    turn = sum(1 for m in body.get("messages", []) if m.get("role") == "assistant")
    if tools and turn < 2:
        tool = tools[0] if turn == 0 else tools[-1]
        arguments = "{}" if turn == 0 else json.dumps({"summary": "all tests pass"})
        message = {
            "role": "assistant",
            "content": None,
            "reasoning_content": f"turn {turn}: calling {tool['function']['name']}",
            "tool_calls": [
                {
                    "id": f"call_{turn}",
                    "type": "function",
                    "function": {"name": tool["function"]["name"], "arguments": arguments},
                }
            ],
        }
        return _completion(body, message, "tool_calls")
    message = {
        "role": "assistant",
        "content": "<think>This might be a test.</think>Done: all tests pass.",
    }
    return _completion(body, message, "stop")


def build_app(state: StubState) -> Starlette:
    """The ASGI app: ``POST /v1/chat/completions`` and ``GET /stats``."""

    async def chat(request: Request) -> Response:
        state.requests += 1
        state.seen_auth.add(request.headers.get("authorization", ""))
        body = await request.json()
        if state.latency_s:
            await asyncio.sleep(state.latency_s)
        if state.fault_rate and state.rng.random() < state.fault_rate:
            kind = state.rng.choice(list(state.faults))
            state.faults_served[kind] = state.faults_served.get(kind, 0) + 1
            if kind == "rate_limit":
                return JSONResponse({"error": "slow down"}, 429, headers={"retry-after": "0"})
            if kind == "server_error":
                return JSONResponse({"error": "boom"}, 500)
            if kind == "timeout":
                await asyncio.sleep(state.hang_s)
            if kind == "malformed":
                return Response('{"id": "x", "choices": [', media_type="application/json")
        return JSONResponse(_reply(body, state.single_turn))

    async def stats(request: Request) -> Response:
        return JSONResponse({"requests": state.requests, "faults": state.faults_served})

    return Starlette(
        routes=[
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/stats", stats, methods=["GET"]),
        ]
    )


class StubServer:
    """The stub running on 127.0.0.1 in a background thread (a context manager)."""

    def __init__(self, state: StubState) -> None:
        self.state = state
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", 0))
        self.port = self._socket.getsockname()[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        config = uvicorn.Config(build_app(state), log_level="error", lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True
        )

    def __enter__(self) -> StubServer:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("stub server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._socket.close()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--fault-rate", type=float, default=0.0)
    parser.add_argument("--single-turn", action="store_true", help="Always answer at once.")
    args = parser.parse_args(argv)
    state = StubState(
        latency_s=args.latency, fault_rate=args.fault_rate, single_turn=args.single_turn
    )
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    print(f"PORT {sock.getsockname()[1]}", flush=True)
    config = uvicorn.Config(
        build_app(state), log_level="error", lifespan="off", backlog=2048, access_log=False
    )
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main(sys.argv[1:])
