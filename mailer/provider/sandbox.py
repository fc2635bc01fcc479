"""mailer's own fake of the provider's send API (PROVIDER_API.md), with faults injected on request.

Mounted in-process by the app factory, served by tests, or run standalone for benchmarks.
Per-request work is O(1): counts per id in a dict and a bounded journal, never full histories.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import hmac
import json
import math
import random
import re
import signal
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from operator import attrgetter
from typing import Any, NamedTuple

from aiohttp import hdrs, web

DEFAULT_JOURNAL_SIZE = 100_000
DEFAULT_PORT = 8081
RECEIVED_LIMIT_DEFAULT = 1000
RECEIVED_LIMIT_MAX = 100_000
THROTTLE_RETRY_AFTER_S = 1
# Longest refuse window the control API accepts; longer is surely a typo.
REFUSE_MAX_S = 3600.0
# How long a standalone shutdown waits for handlers still running (latency sleeps) before cancelling them.
SHUTDOWN_GRACE_S = 2.0

_INT64 = re.compile(r"-?[0-9]{1,19}")
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
# An 11-digit number starting with 7, as an integer.
_PHONE_MIN, _PHONE_MAX = 70_000_000_000, 79_999_999_999
_ERROR_STATUSES = (500, 502, 503)
_OK_BODY = b'{"code": 0, "message": "OK"}'
_JSON = "application/json"
# Bad bodies in a 200, used in turn so that a handful of requests meets every kind.
_GARBAGE: tuple[tuple[bytes, str], ...] = (
    (b"<html><body>Service temporarily overloaded</body></html>", "text/html"),
    (b'{"code": 1, "message": "queue full"}', _JSON),
    (b"", _JSON),
    (b'[{"code": 0, "message": "OK"}]', _JSON),
)


@dataclass
class SandboxFaults:
    """Faults to inject; mutable at runtime (directly or with PUT /_control/faults).

    The rates are shares of valid /send requests, tried in the order hang, error, throttle, reject, garbage
    against one random draw, so they must add up to at most 1. `seed` is read at start and on PUT.
    `refuse_for_s` only works standalone: setting it opens a window of refused connections.
    """

    latency_ms: float = 0.0  # mean of an exponential distribution; 0 = none
    latency_max_ms: float = 10_000.0  # cap on one latency sample
    error_rate: float = 0.0  # 500/502/503
    throttle_rate: float = 0.0  # 429 with Retry-After: 1
    garbage_rate: float = 0.0  # 200 with a bad body
    hang_rate: float = 0.0  # no answer until the client gives up or the sandbox shuts down
    reject_rate: float = 0.0  # 400
    refuse_for_s: float = 0.0
    seed: int | None = None

    def validate(self) -> None:
        """Raise ValueError when a value is out of range."""
        for name in ("latency_ms", "latency_max_ms", "refuse_for_s", *_RATES):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0")
        for name in _RATES:
            if getattr(self, name) > 1:
                raise ValueError(f"{name} must be <= 1")
        if sum(getattr(self, name) for name in _RATES) > 1 + 1e-9:
            raise ValueError("the rates must add up to at most 1")
        if self.refuse_for_s > REFUSE_MAX_S:
            raise ValueError(f"refuse_for_s must be <= {REFUSE_MAX_S:g}")


_RATES = ("hang_rate", "error_rate", "throttle_rate", "reject_rate", "garbage_rate")
_FLOAT_FIELDS = frozenset(f.name for f in dataclasses.fields(SandboxFaults)) - {"seed"}


class _Fault(StrEnum):
    NONE = "none"
    HANG = "hang"
    ERROR = "error"
    THROTTLE = "throttle"
    REJECT = "reject"
    GARBAGE = "garbage"


_FAULT_OF_RATE = {
    "hang_rate": _Fault.HANG,
    "error_rate": _Fault.ERROR,
    "throttle_rate": _Fault.THROTTLE,
    "reject_rate": _Fault.REJECT,
    "garbage_rate": _Fault.GARBAGE,
}


class JournalEntry(NamedTuple):
    """One accepted request."""

    id: int
    phone: int
    text: str
    received_at_s: float  # Unix time: cheaper to store than a datetime, formatted only when asked for


Refuser = Callable[[float], Awaitable[None]]


class SandboxState:
    """Everything one sandbox app knows: faults, counters, the journal."""

    def __init__(self, faults: SandboxFaults, token: str | None, journal_size: int) -> None:
        self.faults = faults
        self.rng = random.Random(faults.seed)
        self.counts: dict[int, int] = {}
        self.journal: deque[JournalEntry] = deque(maxlen=journal_size)
        self.requests = 0
        self.accepted = 0
        self.hung = 0
        self.by_status: dict[int, int] = {}
        # Set at shutdown: hanging handlers wait on it, so nothing sleeps past the app's life.
        self.released = asyncio.Event()
        # Installed by run_standalone, the only place where the listening socket can be closed.
        self.refuser: Refuser | None = None
        self._expected_auth = f"Bearer {token}".encode() if token is not None else None
        self._garbage_next = 0
        self._last_text = ""

    def authorized(self, header: str | None) -> bool:
        if self._expected_auth is None:
            return True
        if header is None:
            return False
        return hmac.compare_digest(header.encode("utf-8", "surrogateescape"), self._expected_auth)

    def draw_latency_s(self) -> float:
        mean_ms = self.faults.latency_ms
        if mean_ms <= 0:
            return 0.0
        return min(self.rng.expovariate(1.0 / mean_ms), self.faults.latency_max_ms) / 1000.0

    def draw_fault(self) -> _Fault:
        faults = self.faults
        if not (
            faults.hang_rate
            or faults.error_rate
            or faults.throttle_rate
            or faults.reject_rate
            or faults.garbage_rate
        ):
            return _Fault.NONE  # the benchmark's fast path
        draw = self.rng.random()
        for name, fault in _FAULT_OF_RATE.items():
            rate: float = getattr(faults, name)
            if draw < rate:
                return fault
            draw -= rate
        return _Fault.NONE

    def next_garbage(self) -> tuple[bytes, str]:
        body = _GARBAGE[self._garbage_next]
        self._garbage_next = (self._garbage_next + 1) % len(_GARBAGE)
        return body

    def accept(self, msg_id: int, phone: int, text: str) -> None:
        self.counts[msg_id] = self.counts.get(msg_id, 0) + 1
        self.accepted += 1
        # A mailout sends one text to everyone: share one string instead of keeping 100,000 copies.
        if text == self._last_text:
            text = self._last_text
        else:
            self._last_text = text
        self.journal.append(JournalEntry(msg_id, phone, text, time.time()))

    def record_status(self, status: int) -> None:
        self.by_status[status] = self.by_status.get(status, 0) + 1

    def reset(self) -> None:
        self.counts.clear()
        self.journal.clear()
        self.requests = self.accepted = self.hung = 0
        self.by_status.clear()

    def stats(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "accepted": self.accepted,
            "unique": len(self.counts),
            "duplicates": self.accepted - len(self.counts),
            "hung": self.hung,
            "by_status": {str(status): n for status, n in sorted(self.by_status.items())},
        }


SANDBOX_STATE = web.AppKey("sandbox_state", SandboxState)


def create_sandbox_app(
    faults: SandboxFaults | None = None,
    token: str | None = None,
    journal_size: int = DEFAULT_JOURNAL_SIZE,
) -> web.Application:
    """The sandbox as an aiohttp app: POST /send/{msgId} and the /_control/ API."""
    faults = faults if faults is not None else SandboxFaults()
    faults.validate()
    if journal_size < 0:
        raise ValueError("journal_size must be >= 0")
    app = web.Application()
    app[SANDBOX_STATE] = SandboxState(faults, token, journal_size)
    app.router.add_post("/send/{msgId}", _handle_send)
    app.router.add_get("/_control/stats", _handle_stats)
    app.router.add_get("/_control/received", _handle_received)
    app.router.add_get("/_control/counts", _handle_counts)
    app.router.add_put("/_control/faults", _handle_faults)
    app.router.add_post("/_control/reset", _handle_reset)
    app.router.add_post("/_control/refuse", _handle_refuse)
    app.on_shutdown.append(_release_hanging)
    return app


async def _release_hanging(app: web.Application) -> None:
    app[SANDBOX_STATE].released.set()


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"code": status, "message": message}, status=status)


async def _handle_send(request: web.Request) -> web.Response:
    state = request.app[SANDBOX_STATE]
    state.requests += 1
    response = await _answer_send(state, request)
    state.record_status(response.status)
    return response


async def _answer_send(state: SandboxState, request: web.Request) -> web.Response:
    if not state.authorized(request.headers.get(hdrs.AUTHORIZATION)):
        response = _error(401, "missing or invalid bearer token")
        response.headers[hdrs.WWW_AUTHENTICATE] = "Bearer"
        return response
    try:
        raw_body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        return _error(413, "body too large")
    parsed = _parse_send(request.match_info["msgId"], raw_body)
    if isinstance(parsed, str):
        return _error(400, parsed)
    # Decided before anything is counted: a faulty answer means the provider did not take the message.
    fault = state.draw_fault()
    delay_s = state.draw_latency_s()
    if fault is _Fault.HANG:
        state.hung += 1
        await state.released.wait()
        return _error(503, "sandbox shutting down")
    if delay_s:
        await asyncio.sleep(delay_s)
    match fault:
        case _Fault.ERROR:
            status = state.rng.choice(_ERROR_STATUSES)
            return _error(status, "injected server error")
        case _Fault.THROTTLE:
            response = _error(429, "too many requests")
            response.headers[hdrs.RETRY_AFTER] = str(THROTTLE_RETRY_AFTER_S)
            return response
        case _Fault.REJECT:
            return _error(400, "injected rejection")
        case _Fault.GARBAGE:
            body, content_type = state.next_garbage()
            return web.Response(body=body, content_type=content_type)
    state.accept(*parsed)
    return web.Response(body=_OK_BODY, content_type=_JSON)


def _parse_send(raw_id: str, raw_body: bytes) -> tuple[int, int, str] | str:
    """(id, phone, text) from a valid request, else the reason it is not."""
    msg_id = _parse_int64(raw_id)
    if msg_id is None:
        return "msgId must be an int64"
    try:
        body = json.loads(raw_body)
    except (ValueError, RecursionError):
        return "body is not valid JSON"
    if not isinstance(body, dict):
        return "body must be a JSON object"
    body_id, phone, text = body.get("id"), body.get("phone"), body.get("text")
    # `type(...) is int`: JSON true must not pass for 1.
    if type(body_id) is not int or body_id != msg_id:
        return "id must be an integer equal to msgId"
    if type(phone) is not int or not _PHONE_MIN <= phone <= _PHONE_MAX:
        return "phone must be an 11-digit integer starting with 7"
    if not isinstance(text, str):
        return "text must be a string"
    return msg_id, phone, text


def _parse_int64(raw: str) -> int | None:
    if not _INT64.fullmatch(raw):
        return None
    value = int(raw)
    return value if _INT64_MIN <= value <= _INT64_MAX else None


async def _handle_stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[SANDBOX_STATE].stats())


async def _handle_received(request: web.Request) -> web.Response:
    """Journal entries with id > after_id, by id, then arrival; `next_after` pages on."""
    state = request.app[SANDBOX_STATE]
    after_id = _query_int(request, "after_id", None, _INT64_MIN, _INT64_MAX)
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
    value = _parse_int64(raw)
    if value is None or not low <= value <= high:
        raise web.HTTPBadRequest(
            text=json.dumps({"code": 400, "message": f"{name} must be an integer in [{low}, {high}]"}),
            content_type=_JSON,
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
        return _error(400, "body is not valid JSON")
    problem = _check_fault_changes(changes)
    if problem is not None:
        return _error(400, problem)
    candidate = dataclasses.replace(state.faults, **changes)
    try:
        candidate.validate()
    except ValueError as exc:
        return _error(400, str(exc))
    refuse_s: float = changes.get("refuse_for_s", 0.0)
    if refuse_s > 0 and state.refuser is None:
        return _error(409, "refusing connections needs the standalone sandbox")
    for name, value in changes.items():
        # In place: whoever built the faults object (a test, the app factory) sees the change too.
        setattr(state.faults, name, value)
    if "seed" in changes:
        state.rng.seed(state.faults.seed)
    if refuse_s > 0 and state.refuser is not None:
        await state.refuser(refuse_s)
    return web.json_response(dataclasses.asdict(state.faults))


def _check_fault_changes(changes: object) -> str | None:
    if not isinstance(changes, dict):
        return "body must be a JSON object"
    for name, value in changes.items():
        if name == "seed":
            if value is not None and type(value) is not int:
                return "seed must be an integer or null"
        elif name in _FLOAT_FIELDS:
            if type(value) not in (int, float):
                return f"{name} must be a number"
        else:
            return f"unknown field {name!r}"
    return None


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
        return _error(400, f"seconds must be a number in (0, {REFUSE_MAX_S:g}]")
    if state.refuser is None:
        return _error(409, "refusing connections needs the standalone sandbox")
    await state.refuser(seconds)
    return web.json_response({"refusing_for_s": seconds})


class _Listener:
    """The standalone sandbox's listening socket: it can close for a while and come back on the same port."""

    def __init__(self, runner: web.AppRunner, host: str, port: int) -> None:
        self._runner = runner
        self._host = host
        self._port = port
        self._site: web.TCPSite | None = None
        self._reopening: asyncio.Task[None] | None = None
        # A failure of the reopening task ends run_standalone: no background failure is dropped.
        self.failure: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def open(self) -> int:
        site = web.TCPSite(self._runner, self._host, self._port, reuse_address=True)
        await site.start()
        self._site = site
        self._port = site.port  # with port 0, come back on the port the system chose
        return self._port

    async def refuse(self, seconds: float) -> None:
        """Refuse connections for `seconds` from now (a new call replaces the window)."""
        await self._cancel_reopening()
        if self._site is not None:
            await self._site.stop()
            self._site = None
            server = self._runner.server
            if server is not None:
                # Keep-alive connections would otherwise go on being served; each closes after its answer.
                for connection in server.connections:
                    connection.close()
        self._reopening = asyncio.create_task(self._reopen_after(seconds), name="sandbox-reopen")

    async def _reopen_after(self, seconds: float) -> None:
        await asyncio.sleep(seconds)  # a timer, not synchronisation: the window is the point
        try:
            await self.open()
        except OSError as exc:
            if not self.failure.done():
                self.failure.set_exception(exc)

    async def _cancel_reopening(self) -> None:
        if self._reopening is not None:
            self._reopening.cancel()
            await asyncio.wait([self._reopening])  # waits without re-raising its cancellation
            self._reopening = None

    async def close(self) -> None:
        await self._cancel_reopening()
        if not self.failure.done():
            self.failure.cancel()


async def run_standalone(host: str, port: int, faults: SandboxFaults, token: str | None) -> None:
    """Serve the sandbox on host:port until cancelled; POST /_control/refuse works here."""
    app = create_sandbox_app(faults, token)
    runner = web.AppRunner(
        app,
        access_log=None,  # a benchmark's 100,000 requests would spend more time logging than answering
        handler_cancellation=True,  # a client that gives up (hang, latency) frees its handler at once
        shutdown_timeout=SHUTDOWN_GRACE_S,
    )
    await runner.setup()
    listener = _Listener(runner, host, port)
    try:
        bound_port = await listener.open()
        app[SANDBOX_STATE].refuser = listener.refuse
        print(f"sandbox listening on http://{_url_host(host)}:{bound_port}", flush=True)
        if faults.refuse_for_s > 0:
            await listener.refuse(faults.refuse_for_s)
        await listener.failure
    finally:
        await listener.close()
        await runner.cleanup()


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def main(argv: list[str] | None = None) -> int:
    """Command line: run the sandbox standalone until SIGINT or SIGTERM."""
    defaults = SandboxFaults()
    parser = argparse.ArgumentParser(prog="mailer sandbox", description="mailer's fake send-API provider")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="0 picks a free port")
    parser.add_argument("--token", default=None, help="require 'Authorization: Bearer TOKEN'")
    for name in sorted(_FLOAT_FIELDS):
        flag = "--" + name.replace("_", "-")
        parser.add_argument(flag, type=float, default=getattr(defaults, name), dest=name)
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)
    faults = SandboxFaults(**{name: getattr(args, name) for name in (*_FLOAT_FIELDS, "seed")})
    try:
        faults.validate()
    except ValueError as exc:
        parser.error(str(exc))
    try:
        asyncio.run(_serve_until_signal(args.host, args.port, faults, args.token))
    except OSError as exc:  # for example, the port is taken
        print(f"sandbox: {exc}", file=sys.stderr)
        return 1
    return 0


async def _serve_until_signal(host: str, port: int, faults: SandboxFaults, token: str | None) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = (signal.SIGINT, signal.SIGTERM)
    for signum in signals:
        loop.add_signal_handler(signum, stop.set)
    serving = asyncio.create_task(run_standalone(host, port, faults, token), name="sandbox")
    stopping = asyncio.create_task(stop.wait(), name="sandbox-stop")
    try:
        await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)
        stopping.cancel()
        serving.cancel()
        await asyncio.wait({serving, stopping})
    if not serving.cancelled():
        serving.result()  # surfaces a failure, such as a port in use
