"""Errors as pages: a domain error or an HTTP error raised by a page handler becomes an HTML page.

The parent application's problem middleware would answer problem+json, which is right for the API and
wrong for a person in a browser.
"""

from __future__ import annotations

import aiohttp_jinja2
import structlog
from aiohttp import web
from aiohttp.typedefs import Handler

from mailer.domain.errors import ConflictError, DomainError, InvalidError, NotFoundError

log = structlog.get_logger(__name__)


def _status_of(exc: DomainError) -> int:
    if isinstance(exc, NotFoundError):
        return 404
    if isinstance(exc, ConflictError):
        return 409
    if isinstance(exc, InvalidError):
        return 422
    return 400


def error_page(request: web.Request, status: int, message: str) -> web.Response:
    return aiohttp_jinja2.render_template(
        "error.html", request, {"status": status, "message": message}, status=status
    )


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except DomainError as exc:
        return error_page(request, _status_of(exc), str(exc))
    except web.HTTPException as exc:
        # Redirects and the sign-in answers (401, 403 from the auth middleware) pass through unchanged.
        if exc.status < 400 or exc.status in (401, 403):
            raise
        return error_page(request, exc.status, exc.text or exc.reason)
