"""One place that turns every error into an RFC 9457 problem+json response."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from http import HTTPStatus
from typing import Any

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler
from pydantic import ValidationError
from sqlalchemy import exc as sa_exc

from mailer.domain.errors import (
    AuthenticationError,
    ConflictError,
    DomainError,
    FieldError,
    InvalidError,
    NotFoundError,
    RateLimitedError,
)
from mailer.observability.middleware import client_went_away
from mailer.observability.truncate import clip
from mailer.schemas.errors import field_errors
from mailer.store.outage import is_disconnect

PROBLEM_CONTENT_TYPE = "application/problem+json"
# What a client is told to wait while the database is away: the pool reconnects within about a second of the
# database's return (store/outage.py), and a restart takes a few.
DATABASE_RETRY_AFTER_S = 5
# SQLite's words for "another writer holds the lock": the same statement succeeds once it is released.
_SQLITE_BUSY = ("database is locked", "database is busy", "database table is locked")
# PostgreSQL's SQLSTATE class 53, insufficient resources: too many connections, out of memory or disk.
_INSUFFICIENT_RESOURCES = "53"
log = structlog.get_logger(__name__)


def problem(
    status: int,
    detail: str,
    errors: Iterable[FieldError] = (),
    headers: dict[str, str] | None = None,
) -> web.Response:
    phrase = HTTPStatus(status).phrase
    body = {
        "type": f"https://mailer.invalid/problems/{phrase.lower().replace(' ', '-')}",
        "title": phrase,
        "status": status,
        "detail": detail,
        "errors": [{"loc": list(e.loc), "msg": e.msg} for e in errors],
    }
    return web.Response(
        status=status, text=json.dumps(body), content_type=PROBLEM_CONTENT_TYPE, headers=headers
    )


def from_domain(exc: DomainError) -> web.Response:
    if isinstance(exc, NotFoundError):
        return problem(404, str(exc))
    if isinstance(exc, ConflictError):
        return problem(409, str(exc))
    if isinstance(exc, InvalidError):
        return problem(422, str(exc), exc.errors)
    if isinstance(exc, AuthenticationError):
        return problem(401, str(exc), headers={"WWW-Authenticate": 'Bearer realm="mailer"'})
    if isinstance(exc, RateLimitedError):
        return problem(429, str(exc), headers={"Retry-After": str(max(1, math.ceil(exc.retry_after_s)))})
    return problem(400, str(exc))


def from_http(exc: web.HTTPException) -> web.Response:
    detail = exc.reason
    if exc.text and exc.content_type == "application/json":
        # aiohttp-pydantic answers malformed bodies with JSON of its own; keep its words as the detail.
        try:
            parsed: Any = json.loads(exc.text)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict) and "error" in parsed:
            detail = str(parsed["error"])
        elif isinstance(parsed, list) and parsed and isinstance(parsed[0], dict):
            detail = str(parsed[0].get("msg", detail))
    elif exc.text and not exc.text.startswith(f"{exc.status}:"):
        detail = exc.text
    headers = {k: v for k, v in exc.headers.items() if k in ("Allow", "WWW-Authenticate", "Retry-After")}
    return problem(exc.status, detail, headers=headers)


def database_unavailable(exc: BaseException) -> bool:
    """True when a retry can cure `exc`: the database is unreachable, restarting, busy or out of
    connections."""
    if is_disconnect(exc):
        return True
    if isinstance(exc, sa_exc.TimeoutError):  # no connection free in the pool within its timeout
        return True
    if isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError):
        # DB-API: "errors related to the database's operation and not necessarily under the control of the
        # programmer"; on SQLite chiefly a lock held too long by another writer.
        return True
    if not isinstance(exc, sa_exc.DBAPIError):
        return False
    if exc.statement is None:
        # Raised while connecting, before any statement of ours: the server refused the session ("the
        # database system is starting up", "not currently accepting connections", too many clients).
        return True
    code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
    if isinstance(code, str) and code.startswith(_INSUFFICIENT_RESOURCES):
        return True
    return any(words in str(exc) for words in _SQLITE_BUSY)


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except DomainError as exc:
        return from_domain(exc)
    except ValidationError as exc:
        return problem(422, "the request is not valid", field_errors(exc))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return from_http(exc)
    except UnicodeDecodeError:
        return problem(400, "the body is not valid UTF-8")
    except RecursionError:
        # json.loads on a body nested thousands deep; aiohttp-pydantic parses it before any handler runs.
        return problem(400, "the body is nested too deeply")
    except ValueError as exc:
        # json.loads refuses integers longer than sys.get_int_max_str_digits() with a plain ValueError
        # (not JSONDecodeError, which aiohttp-pydantic catches); that is the client's malformed body.
        if "integer string conversion" in str(exc):
            return problem(400, "a number in the body has too many digits")
        log.exception("unhandled error", path=clip(request.path), method=request.method)
        return problem(500, "internal error; it has been logged")
    except Exception as exc:
        if client_went_away(request, exc):
            raise  # nobody to answer; the observability middleware counts it as 499
        if database_unavailable(exc):
            log.warning(
                "database unavailable",
                path=clip(request.path),
                method=request.method,
                error=type(exc).__name__,
            )
            return problem(
                503,
                "the database is unavailable for the moment; retry after a few seconds",
                headers={"Retry-After": str(DATABASE_RETRY_AFTER_S)},
            )
        log.exception("unhandled error", path=clip(request.path), method=request.method)
        return problem(500, "internal error; it has been logged")
