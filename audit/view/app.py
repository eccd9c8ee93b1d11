"""The viewer as an ASGI app: HTML pages and the same data as JSON, read-only.

Pages: ``/`` (findings, filtered by model, kind and cause), ``/finding?id=`` (the samples behind
one finding, filtered by revision, scenario, outcome and awareness, paged), ``/sample?key=`` (one
transcript with its evidence marked and the spec edits beside it). ``/api/findings``,
``/api/finding`` and ``/api/sample`` answer the same questions in JSON. Ids travel as query
parameters, so any stored id works, whatever characters it holds.

Nothing here writes: the database is opened read-only with the sandbox ``audit sql`` uses (no
files, no network, no extensions, settings locked), every route answers GET only, and every page
carries a Content-Security-Policy that runs no script at all and loads nothing but the viewer's
own stylesheet. Requests must name the loopback host, so a web page that rebinds its own domain to
127.0.0.1 still cannot read the viewer.
"""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import asdict
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jinja2
from markupsafe import Markup
from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from audit.errors import AuditError, StoreLockedError
from audit.store import Store, open_store
from audit.view import queries
from audit.view.queries import (
    AWARENESS,
    OUTCOMES,
    POINTS,
    FindingFilters,
    SampleDetail,
    SampleFilters,
)
from audit.view.transcript import TranscriptView, build_transcript, visible

_TEMPLATES = Path(__file__).parent / "templates"
_STYLESHEET = _TEMPLATES / "view.css"

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "base-uri 'none'; frame-ancestors 'none'"
)
"""No script runs, nothing is fetched but the stylesheet, forms only reach the viewer itself."""

SECURITY_HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cross-origin-resource-policy": "same-origin",
    "cache-control": "no-store",
}
ALLOWED_HOSTS = ("127.0.0.1", "localhost")


IDLE_CLOSE_S = 2.0
"""Seconds without a request after which the viewer lets go of the database file."""


class Viewer:
    """What every request shares: the database (opened read-only on demand) and the settings.

    DuckDB lets one process write a file only while no other process has it open, so a viewer
    that held the file for its whole life would make every ``audit run`` or ``audit detect``
    fail. The viewer opens the file when a request comes and closes it after
    :data:`IDLE_CLOSE_S` seconds without one. Opening costs about 30-100 ms on a
    1,000,000-sample file, so pages clicked in a row share one open.
    """

    def __init__(
        self,
        path: Path,
        *,
        include_prompts: bool,
        idle_close_s: float = IDLE_CLOSE_S,
    ) -> None:
        self.path = path
        self.include_prompts = include_prompts
        self.idle_close_s = idle_close_s
        self._store: Store | None = None
        self._users = 0
        self._idle_since = time.monotonic()
        self._closed = False
        self._lock = threading.Lock()
        self._reaper: threading.Thread | None = None

    def check(self) -> None:
        """Open and close the database once, so a bad path fails before anything listens."""
        self._open().close()

    def _open(self) -> Store:
        from audit.query import query_settings

        return open_store(self.path, read_only=True, settings=query_settings())

    @contextmanager
    def connection(self) -> Iterator[queries.Connection]:
        """A connection of the request's own (DuckDB connections are not shared by threads)."""
        with self._lock:
            if self._closed:
                raise AuditError("the viewer is shutting down: start audit view again")
            if self._store is None:
                self._store = self._open()
                self._start_reaper()
            self._users += 1
            cursor = self._store.con.cursor()
        try:
            yield cursor
        finally:
            cursor.close()
            with self._lock:
                self._users -= 1
                self._idle_since = time.monotonic()

    @property
    def is_open(self) -> bool:
        """Whether the viewer holds the database file at this moment."""
        with self._lock:
            return self._store is not None

    def _start_reaper(self) -> None:
        if self._reaper is None or not self._reaper.is_alive():
            self._reaper = threading.Thread(
                target=self._close_when_idle, name="audit-view-idle", daemon=True
            )
            self._reaper.start()

    def _close_when_idle(self) -> None:
        while True:
            time.sleep(min(0.25, self.idle_close_s / 4))
            with self._lock:
                if self._store is None:
                    return
                idle = time.monotonic() - self._idle_since
                if self._users == 0 and idle >= self.idle_close_s:
                    self._store.close()
                    self._store = None
                    return

    def close(self) -> None:
        """Let go of the database for good."""
        with self._lock:
            self._closed = True
            if self._store is not None:
                self._store.close()
                self._store = None


def make_app(
    store_path: str | Path, *, include_prompts: bool = False, idle_close_s: float = IDLE_CLOSE_S
) -> Starlette:
    """The viewer's ASGI app over the database at ``store_path``, opened read-only.

    Held-out prompts (system and user messages, tool results) are shown only with
    ``include_prompts``; sealed twins' text never is. Raises AuditError when the database cannot
    be opened, before anything listens. The file is held only while pages are being asked for
    (see :class:`Viewer`) and let go when the server shuts down.
    """
    viewer = Viewer(
        Path(store_path),
        include_prompts=include_prompts,
        idle_close_s=idle_close_s,
    )
    viewer.check()

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        yield
        viewer.close()

    routes = [
        Route("/", _html(viewer, _findings_page), methods=["GET"]),
        Route("/finding", _html(viewer, _finding_page), methods=["GET"]),
        Route("/sample", _html(viewer, _sample_page), methods=["GET"]),
        Route("/api/findings", _json(viewer, _findings_data), methods=["GET"]),
        Route("/api/finding", _json(viewer, _finding_data), methods=["GET"]),
        Route("/api/sample", _json(viewer, _sample_data), methods=["GET"]),
        Route("/view.css", _stylesheet, methods=["GET"]),
        Route("/favicon.ico", _no_icon, methods=["GET"]),
    ]
    middleware = [
        Middleware(SecurityHeaders),
        Middleware(TrustedHostMiddleware, allowed_hosts=list(ALLOWED_HOSTS)),
    ]
    app = Starlette(routes=routes, middleware=middleware, lifespan=lifespan)
    app.state.viewer = viewer
    return app


class SecurityHeaders:
    """Adds :data:`SECURITY_HEADERS` to every response, errors included."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)


# -- request handling ----------------------------------------------------------------------------

Handler = Callable[[Viewer, queries.Connection, Request], Any]


def _html(viewer: Viewer, handler: Handler) -> Callable[[Request], Response]:
    def endpoint(request: Request) -> Response:
        try:
            with viewer.connection() as con:
                template, context = handler(viewer, con, request)
        except (AuditError, LookupError) as exc:
            status = _status(exc)
            page = _render("error.html.j2", message=_message(exc), status=status)
            return HTMLResponse(page, status_code=status)
        return HTMLResponse(_render(template, **context))

    return endpoint


def _json(viewer: Viewer, handler: Handler) -> Callable[[Request], Response]:
    def endpoint(request: Request) -> Response:
        try:
            with viewer.connection() as con:
                data = handler(viewer, con, request)
        except (AuditError, LookupError) as exc:
            return JSONResponse({"error": _message(exc)}, status_code=_status(exc))
        return JSONResponse(data)

    return endpoint


def _status(exc: Exception) -> int:
    """404 for an unknown id, 503 while a writer holds the file, 400 for a bad URL."""
    if isinstance(exc, LookupError):
        return 404
    return 503 if isinstance(exc, StoreLockedError) else 400


def _message(exc: Exception) -> str:
    return str(exc.args[0]) if exc.args else str(exc)


def _stylesheet(_: Request) -> Response:
    return Response(_STYLESHEET.read_bytes(), media_type="text/css")


def _no_icon(_: Request) -> Response:
    return Response(status_code=204)


def _param(request: Request, name: str) -> str | None:
    value = request.query_params.get(name)
    return value if value else None


def _required(request: Request, name: str) -> str:
    value = _param(request, name)
    if value is None:
        raise AuditError(f"the URL needs ?{name}=...: open it from the findings list")
    return value


def _finding_filters(request: Request) -> FindingFilters:
    return FindingFilters(
        model=_param(request, "model"),
        kind=queries.parse_flag(_param(request, "kind"), queries.KINDS, "kind"),
        cause=_param(request, "cause"),
        page=queries.parse_page(_param(request, "page")),
    )


def _sample_filters(request: Request) -> SampleFilters:
    aware = queries.parse_flag(_param(request, "aware"), AWARENESS, "aware")
    return SampleFilters(
        point=queries.parse_flag(_param(request, "point"), POINTS, "point"),
        scenario_id=_param(request, "scenario"),
        outcome=queries.parse_flag(_param(request, "outcome"), OUTCOMES, "outcome"),
        aware=None if aware is None else aware == "aware",
        page=queries.parse_page(_param(request, "page")),
    )


def _load_sample(
    viewer: Viewer, con: queries.Connection, request: Request
) -> tuple[SampleDetail, TranscriptView | None]:
    detail = queries.get_sample(
        con,
        _required(request, "key"),
        finding_id=_param(request, "finding"),
    )
    if detail.sealed:
        return detail, None
    return detail, build_transcript(detail, include_prompts=viewer.include_prompts)


# -- pages ---------------------------------------------------------------------------------------


def _findings_page(viewer: Viewer, con: queries.Connection, request: Request) -> tuple[str, dict]:
    listing = queries.list_findings(con, _finding_filters(request))
    return "findings.html.j2", {"listing": listing, "db": _db_name(viewer)}


def _finding_page(viewer: Viewer, con: queries.Connection, request: Request) -> tuple[str, dict]:
    page = queries.finding_samples(con, _required(request, "id"), _sample_filters(request))
    return "finding.html.j2", {"page": page, "db": _db_name(viewer)}


def _sample_page(viewer: Viewer, con: queries.Connection, request: Request) -> tuple[str, dict]:
    detail, view = _load_sample(viewer, con, request)
    return "sample.html.j2", {
        "sample": detail,
        "view": view,
        "include_prompts": viewer.include_prompts,
        "db": _db_name(viewer),
    }


def _db_name(viewer: Viewer) -> str:
    return str(viewer.path)


# -- JSON ----------------------------------------------------------------------------------------


def _findings_data(viewer: Viewer, con: queries.Connection, request: Request) -> dict[str, Any]:
    listing = queries.list_findings(con, _finding_filters(request))
    return {
        "filters": asdict(listing.filters),
        "total": listing.total,
        "pages": listing.pages,
        "findings": [f.as_dict() for f in listing.rows],
        "options": {"model": listing.models, "kind": listing.kinds, "cause": listing.causes},
    }


def _finding_data(viewer: Viewer, con: queries.Connection, request: Request) -> dict[str, Any]:
    page = queries.finding_samples(con, _required(request, "id"), _sample_filters(request))
    return {
        "finding": page.finding.as_dict(),
        "points": [
            {"point": p.name, "model": p.model, "revision": p.revision.as_dict()}
            for p in page.points
        ],
        "filters": asdict(page.filters),
        "total": page.total,
        "pages": page.pages,
        "outcome_counts": page.outcome_counts,
        "aware": page.aware_count,
        "scenarios": [asdict(s) for s in page.scenarios],
        "samples": [asdict(r) for r in page.rows],
    }


def _sample_data(viewer: Viewer, con: queries.Connection, request: Request) -> dict[str, Any]:
    detail, view = _load_sample(viewer, con, request)
    data: dict[str, Any] = {
        "sample": _sample_fields(detail),
        "revision": detail.revision.as_dict() if detail.revision else None,
        "finding": detail.finding.finding_id if detail.finding else None,
        "point": detail.point,
        "spec_changes": _changes_data(detail),
    }
    if view is None:
        # A sealed twin: ids and grades only.
        return data
    data["grade"] = {
        "rule": view.rule,
        "explain": view.explain,
        "matched": [asdict(item) for item in view.evidence],
        **view.extra,
    }
    data["awareness"] = [asdict(item) for item in view.awareness]
    data["messages"] = _messages_data(detail, viewer.include_prompts)
    data["prompts_hidden"] = view.hidden_prompts
    return data


_GRADE_FIELDS = (
    "sample_key",
    "origin",
    "model",
    "model_version",
    "set_hash",
    "spec_sha",
    "scenario_id",
    "family",
    "condition",
    "epoch",
    "outcome",
    "eval_aware",
    "spec_cited",
    "score",
    "sealed",
    "turns",
    "prompt_tokens",
    "completion_tokens",
    "latency_ms",
    "finish_reason",
)


def _sample_fields(detail: SampleDetail) -> dict[str, Any]:
    out = {name: getattr(detail, name) for name in _GRADE_FIELDS}
    out["created_at"] = detail.created_at.isoformat() if detail.created_at else None
    return out


def _messages_data(detail: SampleDetail, include_prompts: bool) -> list[dict[str, Any]]:
    """Stored messages; a held-out prompt is replaced by its role and length unless asked for."""
    out = []
    for message in detail.messages or []:
        if message.get("role") == "assistant" or include_prompts:
            out.append(message)
            continue
        content = message.get("content")
        out.append(
            {
                "role": message.get("role"),
                "hidden": True,
                "chars": len(content) if isinstance(content, str) else None,
            }
        )
    return out


def _changes_data(detail: SampleDetail) -> dict[str, Any] | None:
    changes = detail.spec_changes
    if changes is None:
        return None
    return {
        "revision": changes.revision.as_dict(),
        "since": changes.since.as_dict() if changes.since else None,
        "omitted_revisions": changes.omitted_revisions,
        "revisions": [
            {
                "revision": block.revision.as_dict(),
                "previous": block.previous.as_dict() if block.previous else None,
                "counts": block.counts(),
                "omitted": block.omitted,
                "changes": [asdict(c) for c in block.changes],
            }
            for block in changes.revisions
        ],
    }


# -- templates -----------------------------------------------------------------------------------


def _render(template: str, **context: Any) -> str:
    return _environment().get_template(template).render(**context)


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(_TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        finalize=_finalize,
    )
    env.filters["pct"] = pct
    env.filters["points"] = points
    env.globals["interval"] = interval
    env.globals["url"] = url
    env.globals["sample_params"] = sample_params
    env.globals["MARKS"] = {"added": "+", "removed": "-", "reworded": "~", "moved": ">"}
    return env


def _finalize(value: Any) -> Any:
    """Every value printed by a template: None as nothing, text with its controls visible.

    Runs before autoescape, so the escapes written out here are escaped like any other text.
    """
    if value is None:
        return ""
    if isinstance(value, str) and not isinstance(value, Markup):
        return visible(value)
    return value


def pct(value: float | None, digits: int = 1) -> str:
    """'12.5%', or 'n/a'."""
    return "n/a" if value is None else f"{100 * value:.{digits}f}%"


def points(value: float | None) -> str:
    """A change of rate in percentage points: '+3.2 pts', or 'n/a'."""
    return "n/a" if value is None else f"{100 * value:+.1f} pts"


def interval(low: float | None, high: float | None, as_points: bool = False) -> str:
    """'95% CI 8.0–17.0%' (or in points), or '' when the interval is missing."""
    if low is None or high is None:
        return ""
    if as_points:
        return f"95% CI {100 * low:+.1f} to {100 * high:+.1f}"
    return f"95% CI {100 * low:.1f}–{100 * high:.1f}%"


def url(path: str, params: Mapping[str, Any] | None = None, **more: Any) -> str:
    """``path`` with the non-empty parameters as a query string."""
    merged = {**(params or {}), **more}
    query = {k: v for k, v in merged.items() if v not in (None, "")}
    return f"{path}?{urlencode(query)}" if query else path


def sample_params(filters: SampleFilters) -> dict[str, Any]:
    """Query parameters that reproduce ``filters`` (the page number left out)."""
    aware = None if filters.aware is None else ("aware" if filters.aware else "unaware")
    return {
        "point": filters.point,
        "scenario": filters.scenario_id,
        "outcome": filters.outcome,
        "aware": aware,
    }
