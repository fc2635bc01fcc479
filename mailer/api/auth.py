"""Bearer tokens for the API: the bootstrap administrator logs in at /auth/token, every /api route checks."""

from __future__ import annotations

import json
from typing import Any

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler

from mailer import keys
from mailer.api.views import read_form, read_json
from mailer.client_address import request_client
from mailer.domain.errors import AuthenticationError, FieldError, InvalidError, RateLimitedError
from mailer.observability.truncate import clip

log = structlog.get_logger(__name__)

PROTECTED_PREFIX = "/api/"
LOGIN_PERIOD_S = 60.0


def bearer_token(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthenticationError("an Authorization: Bearer <access_token> header is required")
    return token.strip()


def require_token(request: web.Request) -> dict[str, Any]:
    """The claims of the request's valid access token; AuthenticationError (401) without one."""
    # config_dict: the service's issuer is found from a sub-application (the sandbox) too.
    claims = request.config_dict[keys.TOKENS].verify(bearer_token(request))
    structlog.contextvars.bind_contextvars(user=claims["sub"])
    return claims


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every route under /api/ needs a valid token; the check does not depend on the route existing."""
    if request.path.startswith(PROTECTED_PREFIX) or request.path == PROTECTED_PREFIX.rstrip("/"):
        require_token(request)
    return await handler(request)


async def _credentials(request: web.Request) -> tuple[str, str]:
    """username and password from an OAuth2 password-grant form or a JSON object."""
    if request.content_type == "application/json":
        data: Any = await read_json(request)
        if not isinstance(data, dict):
            raise InvalidError([FieldError(("body",), "must be a JSON object")])
    else:
        form = await read_form(request)
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
    client = request_client(request)
    username, password = await _credentials(request)
    try:
        issuer.check_login(username, password, client)
    except RateLimitedError:
        log.warning("login rate limited", client=client, username=clip(username))
        raise
    except AuthenticationError:
        log.warning("login failed", client=client, username=clip(username))
        raise
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
