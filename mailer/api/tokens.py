"""The API's own HS256 access tokens for the one administrator account."""

from __future__ import annotations

import hmac
import time
from dataclasses import dataclass
from typing import Any

import jwt

from mailer.domain.errors import AuthenticationError
from mailer.domain.ratelimit import SlidingWindowLimiter

ISSUER = "mailer"
ALGORITHM = "HS256"
# Seconds of clock difference tolerated between processes that share one secret.
LEEWAY_S = 30


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
