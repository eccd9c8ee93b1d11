"""Serving the viewer on the loopback interface only.

The socket is bound here, to 127.0.0.1, before uvicorn sees it, so no option can make the viewer
listen on another interface, and port 0 gives a free port that is known before serving starts.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import uvicorn
from starlette.applications import Starlette

from audit.errors import AuditError
from audit.view.app import IDLE_CLOSE_S, Viewer, make_app

HOST = "127.0.0.1"


def bind_loopback(port: int = 0) -> socket.socket:
    """A listening TCP socket on 127.0.0.1 (``port`` 0: any free port)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    # A viewer restarted on its old port must not wait for the old connections' TIME_WAIT; a
    # port another socket listens on is still refused.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((HOST, port))
    except OSError as exc:
        sock.close()
        raise AuditError(
            f"cannot listen on {HOST}:{port} ({exc.strerror}): choose another --port, or leave "
            "it out for a free one"
        ) from None
    sock.listen(128)
    return sock


def viewer_url(sock: socket.socket) -> str:
    """The address to open in a browser."""
    return f"http://{HOST}:{sock.getsockname()[1]}/"


def _server(app: Starlette) -> uvicorn.Server:
    config = uvicorn.Config(
        app, log_level="warning", access_log=False, lifespan="on", timeout_keep_alive=5
    )
    return uvicorn.Server(config)


def serve_viewer(
    store_path: str | Path,
    *,
    port: int = 0,
    include_prompts: bool = False,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve the viewer of ``store_path`` on 127.0.0.1 until interrupted (Ctrl-C); returns then.

    The database is opened (read-only) and the port bound before ``on_ready`` gets the URL, so
    a bad database or a busy port fails before anything is printed as ready.
    """
    app = make_app(store_path, include_prompts=include_prompts)
    sock = bind_loopback(port)
    try:
        if on_ready is not None:
            on_ready(viewer_url(sock))
        _server(app).run(sockets=[sock])
    except KeyboardInterrupt:
        # uvicorn shuts down gracefully, then re-raises the Ctrl-C it captured: that is the
        # normal way to stop the viewer, not an error.
        pass
    finally:
        sock.close()


@dataclass
class RunningViewer:
    """A viewer served from a background thread; a context manager, or call ``stop()``."""

    url: str
    viewer: Viewer
    _server: uvicorn.Server
    _thread: threading.Thread
    _sock: socket.socket

    def stop(self) -> None:
        """Stop serving and close the database."""
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._sock.close()

    def __enter__(self) -> RunningViewer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def start_viewer(
    store_path: str | Path,
    *,
    port: int = 0,
    include_prompts: bool = False,
    idle_close_s: float = IDLE_CLOSE_S,
) -> RunningViewer:
    """Serve the viewer in a background thread (for notebooks and tests); returns at once."""
    app = make_app(store_path, include_prompts=include_prompts, idle_close_s=idle_close_s)
    sock = bind_loopback(port)
    server = _server(app)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="audit-view", daemon=True
    )
    thread.start()
    url = viewer_url(sock)
    deadline = time.monotonic() + 15
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            sock.close()
            raise AuditError(f"the viewer did not start at {url}")
        time.sleep(0.01)
    return RunningViewer(url, app.state.viewer, server, thread, sock)
