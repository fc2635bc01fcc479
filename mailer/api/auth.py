"""Bearer tokens for the API: the bootstrap administrator logs in at /auth/token, every /api route checks."""

from __future__ import annotations

import hmac
import json
import time
from dataclasses import dataclass
from typing import Any

import jwt
import structlog
from aiohttp import web
from aiohttp.typedefs import Handler

from mailer import keys
from mailer.api.problems import problem
from mailer.domain.errors import AuthenticationError, FieldError, InvalidError, RateLimitedError
from mailer.domain.ratelimit import SlidingWindowLimiter

log = structlog.get_logger(__name__)

ISSUER = "mailer"
ALGORITHM = "HS256"
# Seconds of clock difference tolerated between processes that share one secret.
LEEWAY_S = 30
PROTECTED_PREFIX = "/api/"
LOGIN_PERIOD_S = 60.0


@dataclass
class TokenIssuer:
    """Issues and checks the API's own HS256 access tokens for the one administrator account."""

    secret: str
    username: str
    password: str
    lifetime_s: int
    login_limiter: SlidingWindowLimiter

    def issue(self, subject: str) -> str:
        now = int(time.time())
        claims = {"sub": subject, "iat": now, "exp": now + self.lifetime_s, "iss": ISSUER}
        return jwt.encode(claims, self.secret, algorithm=ALGORITHM)

    def verify(self, token: str) -> dict[str, Any]:
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self.secret,
                algorithms=[ALGORITHM],
                issuer=ISSUER,
                leeway=LEEWAY_S,
                options={"require": ["sub", "iat", "exp"]},
            )
        except jwt.PyJWTError as exc:
            raise AuthenticationError(f"invalid access token: {exc}") from None
        return claims

    def check_password(self, username: str, password: str) -> bool:
        # compare_digest on both, always: neither a wrong name nor a wrong password answers faster.
        name_ok = hmac.compare_digest(username.encode(), self.username.encode())
        password_ok = hmac.compare_digest(password.encode(), self.password.encode())
        return name_ok and password_ok


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


def unauthorized(detail: str) -> web.Response:
    return problem(401, detail, headers={"WWW-Authenticate": 'Bearer realm="mailer"'})
