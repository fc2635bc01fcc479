"""The /_control/ API: what the sandbox received, its counters, and changes to its faults."""

from __future__ import annotations

import dataclasses
import hmac
import json
import math
from collections.abc import Callable
from datetime import UTC, datetime
from operator import attrgetter

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler, Middleware

from sandbox.faults import REFUSE_MAX_S, check_fault_changes
from sandbox.state import SANDBOX_STATE
from sandbox.wire import INT64_MAX, INT64_MIN, JSON, error, parse_int64

RECEIVED_LIMIT_DEFAULT = 1000
RECEIVED_LIMIT_MAX = 100_000
CONTROL_PREFIX = "/_control/"

# Checks a request to a /_control/ route; raises (an HTTP error of the host app's choosing) to refuse it.
ControlGuard = Callable[[web.Request], object]


def add_control_routes(app: web.Application) -> None:
    app.router.add_get("/_control/stats", _handle_stats)
    app.router.add_get("/_control/received", _handle_received)
    app.router.add_get("/_control/counts", _handle_counts)
    app.router.add_put("/_control/faults", _handle_faults)
    app.router.add_post("/_control/reset", _handle_reset)
    app.router.add_post("/_control/refuse", _handle_refuse)


def guarded_control(guard: ControlGuard) -> Middleware:
    """A middleware that calls `guard` on every control request (and on nothing else)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        # The path includes wherever the sandbox is mounted; its control routes are all under this prefix.
        if CONTROL_PREFIX in request.path:
            guard(request)
        return await handler(request)

    return middleware


def control_token_guard(token: str) -> ControlGuard:
    """A guard that wants `Authorization: Bearer <token>` (401 otherwise)."""
    expected = f"Bearer {token}".encode()

    def guard(request: web.Request) -> None:
        header = request.headers.get(hdrs.AUTHORIZATION, "")
        if not hmac.compare_digest(header.encode("utf-8", "surrogateescape"), expected):
            raise web.HTTPUnauthorized(
                text=json.dumps({"code": 401, "message": "the control API needs its bearer token"}),
                content_type=JSON,
                headers={hdrs.WWW_AUTHENTICATE: "Bearer"},
            )

    return guard


async def _handle_stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[SANDBOX_STATE].stats())


async def _handle_received(request: web.Request) -> web.Response:
    """Journal entries with id > after_id, by id, then arrival; `next_after` pages on."""
    state = request.app[SANDBOX_STATE]
    after_id = _query_int(request, "after_id", None, INT64_MIN, INT64_MAX)
    limit = _query_int(request, "limit", RECEIVED_LIMIT_DEFAULT, 1, RECEIVED_LIMIT_MAX)
    entries = [entry for entry in state.journal if after_id is None or entry.id > after_id]
    entries.sort(key=attrgetter("id"))  # stable: repeats of one id stay in arrival order
    end = min(limit, len(entries))
    # Never split one id's repeats across pages: paging on id would skip the rest of them.
    while 0 < end < len(entries) and entries[end].id == entries[end - 1].id:
        end += 1
    items = [
        {
            "id": entry.id,
            "phone": str(entry.phone),
            "text": entry.text,
            "received_at": _rfc3339(entry.received_at_s),
            "count": state.counts.get(entry.id, 0),
        }
        for entry in entries[:end]
    ]
    next_after = entries[end - 1].id if end < len(entries) else None
    return web.json_response({"items": items, "next_after": next_after})


def _query_int[T: (int, None)](request: web.Request, name: str, default: T, low: int, high: int) -> int | T:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    value = parse_int64(raw)
    if value is None or not low <= value <= high:
        raise web.HTTPBadRequest(
            text=json.dumps({"code": 400, "message": f"{name} must be an integer in [{low}, {high}]"}),
            content_type=JSON,
        )
    return value


def _rfc3339(unix_s: float) -> str:
    return datetime.fromtimestamp(unix_s, UTC).isoformat().replace("+00:00", "Z")


async def _handle_counts(request: web.Request) -> web.Response:
    counts = request.app[SANDBOX_STATE].counts
    return web.json_response({str(msg_id): n for msg_id, n in counts.items()})


async def _handle_faults(request: web.Request) -> web.Response:
    """Partial update of the faults; a rejected update changes nothing."""
    state = request.app[SANDBOX_STATE]
    try:
        changes = json.loads(await request.read())
    except (ValueError, RecursionError):
        return error(400, "body is not valid JSON")
    problem = check_fault_changes(changes)
    if problem is not None:
        return error(400, problem)
    candidate = dataclasses.replace(state.faults, **changes)
    try:
        candidate.validate()
    except ValueError as exc:
        return error(400, str(exc))
    refuse_s: float = changes.get("refuse_for_s", 0.0)
    if refuse_s > 0 and state.refuser is None:
        return error(409, "refusing connections needs the standalone sandbox")
    for name, value in changes.items():
        # In place: whoever built the faults object (a test, the app factory) sees the change too.
        setattr(state.faults, name, value)
    if "seed" in changes:
        state.rng.seed(state.faults.seed)
    if refuse_s > 0 and state.refuser is not None:
        await state.refuser(refuse_s)
    return web.json_response(dataclasses.asdict(state.faults))


async def _handle_reset(request: web.Request) -> web.Response:
    state = request.app[SANDBOX_STATE]
    state.reset()
    return web.json_response(state.stats())


async def _handle_refuse(request: web.Request) -> web.Response:
    state = request.app[SANDBOX_STATE]
    try:
        seconds = float(request.query.get("seconds", ""))
    except ValueError:
        seconds = math.nan
    if not 0 < seconds <= REFUSE_MAX_S:
        return error(400, f"seconds must be a number in (0, {REFUSE_MAX_S:g}]")
    if state.refuser is None:
        return error(409, "refusing connections needs the standalone sandbox")
    await state.refuser(seconds)
    return web.json_response({"refusing_for_s": seconds})
