"""The outermost aiohttp middleware: request id, resource ids in the log context, HTTP metrics, access log."""

from __future__ import annotations

import asyncio
import logging
import os
import time

import structlog
from aiohttp import web, web_response
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.typedefs import Handler

from mailer.observability import metrics
from mailer.observability.truncate import clip

log = structlog.get_logger("mailer.access")

REQUEST_ID_HEADER = "X-Request-ID"
# Long enough for any tracing id in use (UUIDs, W3C trace ids with spans), short enough to keep lines small.
REQUEST_ID_MAX_CHARS = 128
UNMATCHED_ROUTE = "unmatched"
# nginx's convention for "the client went away before the answer": there is no real HTTP status to count.
CLIENT_CLOSED_STATUS = 499
# Probes and scrapes arrive every few seconds; logging them at INFO would drown the lines that matter.
QUIET_ROUTES = frozenset({"/healthz", "/readyz", "/metrics"})
# Any other method a client invents is counted as "other": label values must stay a bounded set.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Named without a version: which aiohttp and Python answer is worth nothing to a client and much to a scanner.
SERVER_NAME = "mailer"
# Route prefixes whose `{id}` names a resource; bound under these keys so that one grep for an id finds the
# API calls on it as well as the engine's work.
_ID_KEYS = (
    ("/api/mailouts/{id}", "mailout_id"),
    ("/api/customers/{id}", "customer_id"),
    ("/api/messages/{id}", "message_id"),
)


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: headers every response carries, whichever handler (or error) made it."""
    # Browsers must not guess a type: a JSON error or an uploaded CSV must never run as a script or page.
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Server"] = SERVER_NAME


def hide_server_software() -> None:
    """Have aiohttp's own answers (a malformed request line, headers too long) name no versions either.

    Those are made before any application sees the request, so on_response_prepare never runs for them;
    aiohttp fills the Server header from this module global. Called once by the entry point.
    """
    web_response.SERVER_SOFTWARE = SERVER_NAME  # type: ignore[attr-defined]  # a re-export aiohttp reads


class MalformedRequestFilter(logging.Filter):
    """aiohttp logs every request it cannot parse (a request line over 8 KB, a bad header) at ERROR with a
    traceback, though it is the client's mistake and answered 400: anyone could fill the error log at will.
    Such a record is kept, as one INFO line naming the kind of mistake; every other record passes as it is.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError) and 400 <= exc.code < 500:
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.msg, record.args = "malformed request refused with %d (%s)", (exc.code, type(exc).__name__)
            record.exc_info = record.exc_text = None
        return True


def quiet_malformed_requests() -> None:
    """Install `MalformedRequestFilter` on aiohttp's server logger, once. Called by the entry point."""
    server_log = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, MalformedRequestFilter) for f in server_log.filters):
        server_log.addFilter(MalformedRequestFilter())


def client_went_away(request: web.Request, exc: BaseException) -> bool:
    """True when `exc` comes from the client's connection closing (mid-body), not from anything of ours.

    A body read from a closed connection fails with an OSError (aiohttp's "Connection lost"); the same type
    from the database driver is told apart by the client's transport, which is then still open.
    """
    transport = request.transport
    return isinstance(exc, OSError) and (transport is None or transport.is_closing())


def request_id_from(header: str | None) -> str:
    """The client's id when it is printable ASCII of at most 128 characters, else a fresh one."""
    if header and len(header) <= REQUEST_ID_MAX_CHARS and header.isascii() and header.isprintable():
        stripped = header.strip()
        if stripped:
            return stripped
    # 128 random bits as 32 hex digits, like uuid4().hex, without building a UUID for each request.
    return os.urandom(16).hex()


def route_template(request: web.Request) -> str:
    """`/api/mailouts/{id}` rather than `/api/mailouts/4711`: ids must never become label values."""
    resource = request.match_info.route.resource
    if resource is None:
        return UNMATCHED_ROUTE
    return resource.canonical


def _resource_ids(request: web.Request, route: str) -> dict[str, int]:
    raw = request.match_info.get("id")
    if raw is None or not raw.isdigit():
        return {}
    for prefix, key in _ID_KEYS:
        if route == prefix or route.startswith(prefix + "/"):
            return {key: int(raw)}
    return {}


@web.middleware
async def observability_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Bind `request_id` (and the resource id) for the request, return the id, count, time and log it.

    It must come first in the middleware list: then it sees the final status after errors became problem
    responses, and everything logged while handling the request carries the request id.
    """
    # Keep-alive requests on one connection share a task, hence a context: start from a clean one.
    structlog.contextvars.clear_contextvars()
    request_id = request_id_from(request.headers.get(REQUEST_ID_HEADER))
    route = route_template(request)
    structlog.contextvars.bind_contextvars(request_id=request_id, **_resource_ids(request, route))
    started_s = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        if not response.prepared:
            response.headers[REQUEST_ID_HEADER] = request_id
        return response
    except web.HTTPException as exc:
        # Redirects travel as exceptions; the problem middleware has turned every error into a response.
        status = exc.status
        exc.headers[REQUEST_ID_HEADER] = request_id
        raise
    except asyncio.CancelledError:
        status = CLIENT_CLOSED_STATUS
        raise
    except OSError as exc:
        if not client_went_away(request, exc):
            raise
        # Nobody is left to answer: count and log it as what it is, not as a failure of ours. aiohttp drops
        # a response to a closed connection quietly.
        status = CLIENT_CLOSED_STATUS
        return web.Response(status=CLIENT_CLOSED_STATUS, reason="Client Closed Request")
    finally:
        duration_s = time.perf_counter() - started_s
        method = request.method if request.method in KNOWN_METHODS else "other"
        metrics.http_request(method, route, status, duration_s)
        quiet = route in QUIET_ROUTES and status < 400
        (log.debug if quiet else log.info)(
            "http.request",
            method=request.method,
            route=route,
            path=clip(request.path),
            status=status,
            duration_ms=round(duration_s * 1000, 3),
        )
        structlog.contextvars.clear_contextvars()
