"""The outermost aiohttp middleware: request id, resource ids in the log context, HTTP metrics, access log."""

from __future__ import annotations

import asyncio
import time
import uuid

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler

from mailer.observability import metrics

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
# Route prefixes whose `{id}` names a resource; bound under these keys so that one grep for an id finds the
# API calls on it as well as the engine's work.
_ID_KEYS = (
    ("/api/mailouts/{id}", "mailout_id"),
    ("/api/customers/{id}", "customer_id"),
    ("/api/messages/{id}", "message_id"),
)


def request_id_from(header: str | None) -> str:
    """The client's id when it is printable ASCII of at most 128 characters, else a fresh one."""
    if header and len(header) <= REQUEST_ID_MAX_CHARS and header.isascii() and header.isprintable():
        stripped = header.strip()
        if stripped:
            return stripped
    return uuid.uuid4().hex


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
    finally:
        duration_s = time.perf_counter() - started_s
        method = request.method if request.method in KNOWN_METHODS else "other"
        metrics.HTTP_REQUESTS.labels(method=method, route=route, status=str(status)).inc()
        metrics.HTTP_LATENCY.labels(method=method, route=route).observe(duration_s)
        quiet = route in QUIET_ROUTES and status < 400
        (log.debug if quiet else log.info)(
            "http.request",
            method=request.method,
            route=route,
            path=request.path,
            status=status,
            duration_ms=round(duration_s * 1000, 3),
        )
        structlog.contextvars.clear_contextvars()
