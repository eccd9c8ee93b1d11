"""``audit view``: a local, read-only web viewer of findings, samples and transcripts.

:func:`make_app` builds the ASGI app over a database (opened read-only); :func:`serve_viewer`
serves it on 127.0.0.1 until interrupted and :func:`start_viewer` in a background thread. The
queries live in :mod:`audit.view.queries`, the transcript layout in :mod:`audit.view.transcript`.
"""

from __future__ import annotations

from audit.view.app import make_app
from audit.view.server import RunningViewer, serve_viewer, start_viewer

__all__ = ["RunningViewer", "make_app", "serve_viewer", "start_viewer"]
