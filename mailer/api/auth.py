"""Bearer tokens for the API: the bootstrap administrator logs in at /auth/token, every /api route checks."""

from __future__ import annotations

import json
from typing import Any

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler

from mailer import keys
from mailer.domain.errors import AuthenticationError, FieldError, InvalidError, RateLimitedError

log = structlog.get_logger(__name__)

PROTECTED_PREFIX = "/api/"
LOGIN_PERIOD_S = 60.0


def bearer_token(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthenticationError("an Authorization: Bearer <access_token> header is required")
    return token.strip()


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every route under /api/ needs a valid token; the check does not depend on the route existing."""
    if request.path.startswith(PROTECTED_PREFIX) or request.path == PROTECTED_PREFIX.rstrip("/"):
        claims = request.app[keys.TOKENS].verify(bearer_token(request))
        structlog.contextvars.bind_contextvars(user=claims["sub"])
    return await handler(request)


async def _credentials(request: web.Request) -> tuple[str, str]:
    """username and password from an OAuth2 password-grant form or a JSON object."""
    if request.content_type == "application/json":
        try:
            data: Any = await request.json()
        except ValueError:
            raise web.HTTPBadRequest(text="malformed JSON") from None
        if not isinstance(data, dict):
            raise InvalidError([FieldError(("body",), "must be a JSON object")])
    else:
        form = await request.post()
        data = {k: v for k, v in form.items() if isinstance(v, str)}
        grant = data.get("grant_type")
        if grant not in (None, "", "password"):
            raise InvalidError([FieldError(("body", "grant_type"), "only the password grant is supported")])
    errors = [
        FieldError(("body", name), "field required (a string)")
        for name in ("username", "password")
        if not isinstance(data.get(name), str)
    ]
    if errors:
        raise InvalidError(errors)
    return data["username"], data["password"]


async def token_handler(request: web.Request) -> web.Response:
    """POST /auth/token: exchange the administrator's credentials for an access token."""
    issuer = request.app[keys.TOKENS]
    client = request.remote or "unknown"
    wait_s = issuer.login_limiter.hit(client)
    if wait_s is not None:
        log.warning("login rate limited", client=client)
        raise RateLimitedError(wait_s)
    username, password = await _credentials(request)
    if not issuer.check_password(username, password):
        log.warning("login failed", client=client, username=username)
        raise AuthenticationError("wrong username or password")
    log.info("login", client=client, username=username)
    body = {
        "access_token": issuer.issue(username),
        "token_type": "bearer",
        "expires_in": issuer.lifetime_s,
    }
    return web.Response(
        text=json.dumps(body),
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )
