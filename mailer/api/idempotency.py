"""`Idempotency-Key` on the creating routes: a retried create answers the first response and creates nothing.

A middleware keyed on the route (`ROUTES`), so no view knows about it. With a key, the request's body is
hashed with its method, path and content type (the fingerprint), and the key is claimed in the database
(mailer/store/idempotency.py) before the view runs:

- the first request with a key runs; its response, when it succeeded (2xx), is stored with the key for 24 h;
- the same key and fingerprint again answers that response, with `Idempotent-Replayed: true`;
- the same key with another fingerprint is 422; the same key while the first still runs is 409;
- a request that did not succeed (refused, failed, or a 5xx) releases the key: it created nothing, and its
  retry, corrected or not, runs afresh (a refusal is given again by the same checks);
- a process that dies while running leaves the key locked only for `LEASE_S`, after which a retry runs.

Keys are per API user: the access token's `sub`.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from datetime import datetime, timedelta
from typing import Final

import structlog
from aiohttp import web
from aiohttp.streams import StreamReader
from aiohttp.typedefs import Handler, Middleware
from sqlalchemy.ext.asyncio import AsyncEngine

from mailer import keys
from mailer.api.auth import bearer_token
from mailer.domain.clock import Clock, utc_now
from mailer.domain.errors import ConflictError, FieldError, InvalidError
from mailer.observability.middleware import route_template
from mailer.store import idempotency as store

log = structlog.get_logger(__name__)

HEADER: Final = "Idempotency-Key"
REPLAYED_HEADER: Final = "Idempotent-Replayed"
MAX_KEY_CHARS: Final = 255
# Printable ASCII, no blank at either end: what survives a header unchanged (servers strip surrounding blanks,
# and other bytes are decoded differently by different proxies). The OpenAPI document states the same pattern.
KEY_PATTERN: Final = r"^[!-~]([ -~]*[!-~])?$"
_KEY: Final = re.compile(KEY_PATTERN)
# The contract's promise: a retry within a day of the first request answers the first response.
TTL_S: Final = 24 * 3600
# Longer than any create may take (the largest import, 64 MB, writes in well under a minute): a key stays
# locked this long after its process died mid-request, and a slower first request would be run twice.
LEASE_S: Final = 300
# Expired keys are deleted at most this often per process, by the request that finds the time has come.
PURGE_INTERVAL_S: Final = 60.0
# (method, route template) of every create. The import reads its body as a stream: see `_read_body`.
ROUTES: Final = frozenset(
    {
        ("POST", "/api/customers/"),
        ("POST", "/api/customers"),
        ("POST", "/api/customers/import"),
        ("POST", "/api/mailouts/"),
        ("POST", "/api/mailouts/{id}/messages"),
    }
)
METHODS: Final = frozenset(method for method, _ in ROUTES)
STREAMED_ROUTES: Final = frozenset({("POST", "/api/customers/import")})
# aiohttp's own default for a request body stream's buffer.
STREAM_LIMIT_BYTES: Final = 2**16
LIFETIMES: Final = store.Lifetimes(ttl=timedelta(seconds=TTL_S), lease=timedelta(seconds=LEASE_S))
# Answers that are stored: the successes, the only ones that created something.
STORED_STATUSES: Final = range(200, 300)


def check_key(value: str) -> str:
    """The key as sent; InvalidError (422) unless it is `KEY_PATTERN`, of 1 to 255 characters."""
    if not 1 <= len(value) <= MAX_KEY_CHARS or not _KEY.fullmatch(value):
        raise InvalidError(
            [
                FieldError(
                    ("header", HEADER),
                    f"must be 1 to {MAX_KEY_CHARS} printable ASCII characters, such as a UUID: "
                    "9f0c2a5e-3b1d-4c8e-9a7f-2d6b1e4c8a90",
                )
            ],
            "the Idempotency-Key header is not valid",
        )
    return value


def one_key(values: list[str]) -> str:
    """The one key sent; InvalidError (422) for several, which would otherwise mean whichever came first."""
    if len(values) > 1:
        raise InvalidError(
            [FieldError(("header", HEADER), "must be sent once; this request has it several times")],
            "the Idempotency-Key header is not valid",
        )
    return values[0]


def fingerprint(method: str, path_qs: str, content_type: str, body: bytes) -> str:
    """What "the same request" means: method, path with query, Content-Type and the exact body bytes."""
    digest = hashlib.sha256()
    for part in (method.encode(), path_qs.encode(), content_type.encode("latin-1", "replace")):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    digest.update(body)
    return digest.hexdigest()


async def _read_body(request: web.Request, streamed: bool) -> tuple[bytes, web.Request]:
    """The body's bytes, and the request to hand the view (one whose body can still be read)."""
    if not streamed:
        # Cached by aiohttp: the view's own read gets the same bytes; client_max_size still applies (413).
        return await request.read(), request
    # The import reads `request.content` itself, as a stream; read it whole here (bounded by the import's own
    # limit, and only for requests that carry a key) and give the view a copy of the request over the bytes.
    limit = request.app[keys.SETTINGS].import_max_bytes
    if request.content_length is not None and request.content_length > limit:
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=request.content_length)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
        if size > limit:
            raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=size)
        chunks.append(chunk)
    body = b"".join(chunks)
    stream = StreamReader(request.protocol, limit=STREAM_LIMIT_BYTES, loop=asyncio.get_running_loop())
    stream.feed_data(body)
    stream.feed_eof()
    copy = request.clone()
    # aiohttp has no public way to give a request another body; a fresh clone has not read `content` yet.
    copy._payload = stream
    return body, copy


def _user(request: web.Request) -> str:
    # The auth middleware has already checked the token; this only reads whose it is.
    return str(request.app[keys.TOKENS].verify(bearer_token(request))["sub"])


def _replay(stored: store.StoredResponse) -> web.Response:
    return web.Response(
        status=stored.status,
        body=stored.body,
        headers={"Content-Type": stored.content_type, REPLAYED_HEADER: "true"},
    )


def _storable(response: web.StreamResponse) -> store.StoredResponse | None:
    if not isinstance(response, web.Response) or response.status not in STORED_STATUSES:
        return None
    body = response.body
    if body is None:
        body = b""
    if not isinstance(body, bytes):
        return None
    return store.StoredResponse(response.status, response.headers.get("Content-Type", ""), body)


def idempotency_middleware(clock: Clock = utc_now) -> Middleware:
    """The middleware; it must come after the auth middleware (it needs the token's user)."""
    next_purge_s = 0.0

    async def purge_now_and_then(request: web.Request, now: datetime) -> None:
        nonlocal next_purge_s
        if time.monotonic() < next_purge_s:
            return
        next_purge_s = time.monotonic() + PURGE_INTERVAL_S
        purged = await store.purge(request.app[keys.DB], now)
        if purged:
            log.info("idempotency.purged", keys=purged)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        # Reads (most requests) pass without a look at headers or routes.
        if request.method not in METHODS:
            return await handler(request)
        raw_keys = request.headers.getall(HEADER, [])
        route = (request.method, route_template(request))
        if not raw_keys or route not in ROUTES:
            return await handler(request)
        key = check_key(one_key(raw_keys))
        user = _user(request)
        body, request = await _read_body(request, route in STREAMED_ROUTES)
        content_type = request.headers.get("Content-Type", "")
        request_print = fingerprint(request.method, request.path_qs, content_type, body)
        db = request.app[keys.DB]
        now = clock()
        await purge_now_and_then(request, now)
        decision = await store.begin(db, user, key, request_print, now, LIFETIMES)
        if decision.verdict is store.Verdict.REPLAY:
            assert decision.response is not None
            log.info("idempotency.replayed", status=decision.response.status)
            return _replay(decision.response)
        if decision.verdict is store.Verdict.MISMATCH:
            raise InvalidError(
                [FieldError(("header", HEADER), "was used with another request body within 24 hours")],
                "this Idempotency-Key belongs to another request; use a new key for a new request",
            )
        if decision.verdict is store.Verdict.IN_PROGRESS:
            raise ConflictError("a request with this Idempotency-Key is still running; retry in a moment")
        return await _run(request, handler, db, user, key)

    return middleware


async def _run(
    request: web.Request, handler: Handler, db: AsyncEngine, user: str, key: str
) -> web.StreamResponse:
    try:
        response = await handler(request)
    except Exception:
        # The view failed, so its transaction was rolled back: nothing was created, a retry may run.
        await _release_quietly(db, user, key)
        raise
    stored = _storable(response)
    if stored is None:
        await _release_quietly(db, user, key)
    else:
        await store.finish(db, user, key, stored)
    return response


async def _release_quietly(db: AsyncEngine, user: str, key: str) -> None:
    try:
        await store.release(db, user, key)
    except Exception:
        # The database may be what failed; the key's lease lapses by itself then.
        log.warning("idempotency.release_failed", exc_info=True)
