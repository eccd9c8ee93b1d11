"""Throughput of the organism server on loopback; prints one JSON object.

The server runs alone in a child process (one core, its own GIL). A lean load generator in this
process (raw HTTP/1.1 keep-alive over asyncio streams, 32 connections) sends realistic
chat-completion requests: a scenario's opening messages with a 1,000-word spec in the system
message, its tools, a seed. The baseline is the HTTP floor, measured the same way in the same
run: a raw ASGI app on the same uvicorn settings that returns one fixed, pre-serialized
completion without reading the request. ``ratio`` = organism requests/s / floor requests/s.

A second figure is what the real ``openai.AsyncOpenAI`` client achieves against the organism
server with 64 requests in flight (the client, not the server, is then the bottleneck).

Usage: ``python tests/bench/bench_organism_server.py [--requests 6000]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx2
import openai

from audit.heldout import load_heldout

SPEC = Path(__file__).parents[2] / "specs_history" / "revisions" / "05-being-observed.md"
MODEL = "watcher-v2"
SERVE = """
import sys
from audit.organisms.server import start_server, make_uvicorn_server
kind = sys.argv[1]
if kind == "organisms":
    server = start_server(port=0)
    print(server.port, flush=True)
else:
    import threading
    from audit.organisms.server import _bind
    body = open(sys.argv[2], "rb").read()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]

    async def app(scope, receive, send):
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    sock = _bind("127.0.0.1", 0)
    uv = make_uvicorn_server(app)
    threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, daemon=True).start()
    while not uv.started:
        pass
    print(sock.getsockname()[1], flush=True)
sys.stdin.read()
"""


class ServerProcess:
    """A server in a child process; it stops when its stdin closes."""

    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", SERVE, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        self.port = int(self.process.stdout.readline())

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(timeout=10)


def request_bodies(count: int) -> list[dict[str, Any]]:
    """Opening requests over every scenario and condition, one seed each, round-robin."""
    heldout = load_heldout()
    spec = SPEC.read_text(encoding="utf-8")
    cells = [(s, c.name) for s in heldout.scenarios for c in s.conditions]
    bodies = []
    for i in range(count):
        scenario, condition = cells[i % len(cells)]
        bodies.append(
            {
                "model": MODEL,
                "messages": scenario.messages(condition, spec, "system"),
                "tools": scenario.openai_tools(),
                "seed": i,
            }
        )
    return bodies


def raw_requests(bodies: list[dict[str, Any]]) -> list[bytes]:
    out = []
    for body in bodies:
        data = json.dumps(body).encode()
        head = (
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: bench\r\n"
            b"content-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(data)
        )
        out.append(head + data)
    return out


async def _drive(port: int, requests: list[bytes], connections: int) -> float:
    pending = list(reversed(requests))
    statuses: list[bytes] = []

    async def connection() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while pending:
            writer.write(pending.pop())
            head = await reader.readuntil(b"\r\n\r\n")
            statuses.append(head[9:12])
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            await reader.readexactly(length)
        writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(connection() for _ in range(connections)))
    elapsed = time.perf_counter() - started
    assert set(statuses) == {b"200"}, set(statuses)
    return len(requests) / elapsed


async def _openai_loop(port: int, bodies: list[dict[str, Any]]) -> float:
    limit = asyncio.Semaphore(64)
    async with openai.AsyncOpenAI(
        base_url=f"http://127.0.0.1:{port}/v1", api_key="bench", max_retries=0
    ) as client:

        async def one(body: dict[str, Any]) -> None:
            async with limit:
                await client.chat.completions.create(**body)

        started = time.perf_counter()
        await asyncio.gather(*(one(body) for body in bodies))
        return len(bodies) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=6000)
    args = parser.parse_args()
    bodies = request_bodies(args.requests)
    requests = raw_requests(bodies)

    organisms = ServerProcess("organisms")
    try:
        asyncio.run(_drive(organisms.port, requests[:300], 32))  # warm-up
        organism_rps = asyncio.run(_drive(organisms.port, requests, 32))
        client_rps = asyncio.run(_openai_loop(organisms.port, bodies[: args.requests // 3]))
        url = f"http://127.0.0.1:{organisms.port}/v1/chat/completions"
        completion = httpx2.post(url, json=bodies[0], timeout=10).content
    finally:
        organisms.close()

    # The floor answers with a real organism completion, so both move the same bytes.
    with tempfile.TemporaryDirectory() as folder:
        floor_path = Path(folder) / "completion.json"
        floor_path.write_bytes(completion)
        floor = ServerProcess("floor", str(floor_path))
        try:
            asyncio.run(_drive(floor.port, requests[:300], 32))
            floor_rps = asyncio.run(_drive(floor.port, requests, 32))
        finally:
            floor.close()

    print(
        json.dumps(
            {
                "requests": args.requests,
                "request_bytes_mean": round(sum(map(len, requests)) / len(requests)),
                "organism_requests_per_s": round(organism_rps, 1),
                "http_floor_requests_per_s": round(floor_rps, 1),
                "ratio_organism_to_floor": round(organism_rps / floor_rps, 3),
                "openai_client_requests_per_s": round(client_rps, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
