"""Serving an ASGI app from a background thread on a free loopback port, for tests."""

from __future__ import annotations

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
