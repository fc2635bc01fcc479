"""The issuer remembers tokens it verified: a repeated token is accepted without decoding it again, still
refused once expired, and the memory of verified tokens stays bounded. Pure logic, no database."""

from __future__ import annotations

import time
from typing import Any

import jwt
import pytest

from mailer.domain.errors import AuthenticationError
from mailer.domain.ratelimit import LoginThrottle, SlidingWindowLimiter, UsernameBackoff
from mailer.tokens import ALGORITHM, INVALID_TOKEN, ISSUER, LEEWAY_S, VERIFIED_CACHE_SIZE, TokenIssuer

SECRET = "s" * 48
LIFETIME_S = 600


def issuer() -> TokenIssuer:
    return TokenIssuer(
        secret=SECRET,
        username="admin",
        password="p" * 16,
        lifetime_s=LIFETIME_S,
        login_throttle=LoginThrottle(
            SlidingWindowLimiter(10, 60.0, time.monotonic), UsernameBackoff(time.monotonic), time.monotonic
        ),
    )


def token(**extra: Any) -> str:
    now = int(time.time())
    claims = {"sub": "admin", "iat": now, "exp": now + LIFETIME_S, "iss": ISSUER} | extra
    return jwt.encode(claims, SECRET, algorithm=ALGORITHM)


def test_a_repeated_token_is_not_decoded_again(monkeypatch: pytest.MonkeyPatch) -> None:
    checker = issuer()
    access = token()
    first = checker.verify(access)
    decodes: list[str] = []

    def counting_decode(t: str) -> dict[str, Any]:
        decodes.append(t)
        return {}

    monkeypatch.setattr(checker, "_decode", counting_decode)
    first["sub"] = "changed by a caller"
    again = checker.verify(access)
    assert decodes == []
    assert again["sub"] == "admin"  # the caller's change did not reach the cache


def test_a_remembered_token_is_refused_once_expired(monkeypatch: pytest.MonkeyPatch) -> None:
    checker = issuer()
    access = token()
    expires_at = checker.verify(access)["exp"]
    monkeypatch.setattr(time, "time", lambda: expires_at + LEEWAY_S - 1)
    assert checker.verify(access)["sub"] == "admin"  # within the leeway, as PyJWT allows
    monkeypatch.setattr(time, "time", lambda: expires_at + LEEWAY_S)
    with pytest.raises(AuthenticationError) as refused:
        checker.verify(access)
    assert str(refused.value) == INVALID_TOKEN
    # Forgotten: the next use decodes it again, and PyJWT refuses it just the same.
    assert access not in checker._verified


def test_a_refused_token_is_not_remembered() -> None:
    checker = issuer()
    forged = token(sub="root")
    for _ in range(2):
        with pytest.raises(AuthenticationError):
            checker.verify(forged)
    assert forged not in checker._verified


def test_the_memory_of_verified_tokens_is_bounded() -> None:
    checker = issuer()
    many = [token(n=n) for n in range(VERIFIED_CACHE_SIZE + 10)]
    for access in many:
        checker.verify(access)
    assert len(checker._verified) == VERIFIED_CACHE_SIZE
    assert many[0] not in checker._verified  # the least recently used went first
    assert checker.verify(many[0])["n"] == 0  # and is still accepted, by decoding it again
