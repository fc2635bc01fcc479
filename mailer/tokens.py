"""The administrator's sign-in: HS256 access tokens for the API, and the login check the admin UI uses."""

from __future__ import annotations

import hmac
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import jwt

from mailer.domain.errors import AuthenticationError, RateLimitedError
from mailer.domain.ratelimit import LoginThrottle

ISSUER = "mailer"
ALGORITHM = "HS256"
# Seconds of clock difference tolerated between processes that share one secret.
LEEWAY_S = 30
# Tokens whose verified claims are remembered. A client sends the same token on every request for its
# lifetime, and checking its HS256 signature and claims each time was ~10 % of a read's CPU; a handful of
# clients is the usual case, and the bound keeps a flood of distinct (valid) tokens from growing memory.
VERIFIED_CACHE_SIZE = 256
# One detail for every refused token: the library's reasons ("Signature has expired", "Invalid issuer") would
# tell a forger which part of a crafted token to change next.
INVALID_TOKEN = "invalid or expired access token; get a new one at POST /auth/token"
# The one reason worth saying: a token from before a restart (random secret) or from another deployment.
FOREIGN_TOKEN = (
    "the access token was signed by another secret or process (the service restarted with a random "
    "MAILER_JWT_SECRET, or it is another deployment's token); sign in again at POST /auth/token"
)


@dataclass
class TokenIssuer:
    """Issues and checks the API's own HS256 access tokens for the one administrator account."""

    secret: str
    username: str
    password: str
    lifetime_s: int
    login_throttle: LoginThrottle
    # token -> its claims, least recently used first; only tokens that passed every check of `_decode`.
    _verified: OrderedDict[str, dict[str, Any]] = field(default_factory=OrderedDict, init=False, repr=False)

    def issue(self, subject: str) -> str:
        now = int(time.time())
        claims = {"sub": subject, "iat": now, "exp": now + self.lifetime_s, "iss": ISSUER}
        return jwt.encode(claims, self.secret, algorithm=ALGORITHM)

    def verify(self, token: str) -> dict[str, Any]:
        """The claims of a token this service issued to its administrator, else AuthenticationError.

        A token verified before is not decoded again, only its expiry re-checked: nothing else about a
        token's validity changes with time, and the secret and the account are fixed for the process.
        """
        claims = self._verified.get(token)
        if claims is None:
            claims = self._decode(token)
            self._verified[token] = claims
            if len(self._verified) > VERIFIED_CACHE_SIZE:
                self._verified.popitem(last=False)
        elif claims["exp"] <= time.time() - LEEWAY_S:  # PyJWT's own expiry test
            del self._verified[token]
            raise AuthenticationError(INVALID_TOKEN)
        else:
            self._verified.move_to_end(token)
        return dict(claims)  # a copy: a caller's change must not reach the next request

    def _decode(self, token: str) -> dict[str, Any]:
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self.secret,
                algorithms=[ALGORITHM],
                issuer=ISSUER,
                leeway=LEEWAY_S,
                options={"require": ["sub", "iat", "exp"]},
            )
        except jwt.InvalidSignatureError:
            raise AuthenticationError(FOREIGN_TOKEN) from None
        except jwt.PyJWTError:
            raise AuthenticationError(INVALID_TOKEN) from None
        if not self._acceptable(claims):
            raise AuthenticationError(INVALID_TOKEN)
        return claims

    def _acceptable(self, claims: dict[str, Any]) -> bool:
        """Claims the signature cannot vouch for by itself: whom it names, and for how long."""
        subject, issued_at, expires_at = claims["sub"], claims["iat"], claims["exp"]
        if not isinstance(subject, str) or not hmac.compare_digest(subject.encode(), self.username.encode()):
            return False
        # PyJWT checks that both are numbers; a token living longer than the ones issued was not made here.
        return bool(expires_at - issued_at <= self.lifetime_s)

    def check_password(self, username: str, password: str) -> bool:
        # compare_digest on both, always: neither a wrong name nor a wrong password answers faster.
        name_ok = hmac.compare_digest(username.encode(), self.username.encode())
        password_ok = hmac.compare_digest(password.encode(), self.password.encode())
        return name_ok and password_ok

    def check_login(self, username: str, password: str, address: str) -> None:
        """The one sign-in rule, for POST /auth/token and the admin UI's local login alike.

        The per-address limit, the per-username backoff (no guess is tested while it runs), then the
        password, recorded. Raises RateLimitedError or AuthenticationError.
        """
        wait_s = self.login_throttle.address_wait_s(address)
        if wait_s is None:
            wait_s = self.login_throttle.username_wait_s(username, address)
        if wait_s is not None:
            raise RateLimitedError(wait_s)
        ok = self.check_password(username, password)
        self.login_throttle.record(username, address, ok=ok)
        if not ok:
            raise AuthenticationError("wrong username or password")
