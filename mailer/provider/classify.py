"""Turn a provider's HTTP answer into an `Outcome` (pure, no I/O); the rules are in docs/provider.md."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import orjson

from mailer.domain.statuses import Outcome

# Details end up in the database and in logs: keep them short enough to read in one line.
DETAIL_MAX_CHARS = 200
# How much of a body to quote; a UTF-8 character takes at most 4 bytes.
EXCERPT_MAX_CHARS = 120
_EXCERPT_MAX_BYTES = EXCERPT_MAX_CHARS * 4

# A hostile or buggy Retry-After must not push a retry past any plausible mailout, nor overflow
# the datetime arithmetic of the caller; a day is far beyond the breaker's and backoff's horizons.
RETRY_AFTER_MAX_S = 24 * 3600.0
# A delta-seconds value is 1*DIGIT; a sign is tolerated so that "-5" means "now", as the brief asks.
_DELTA_SECONDS = re.compile(r"[+-]?[0-9]{1,18}")
# An HTTP-date is 29 characters; anything much longer is garbage, and not worth parsing.
_HEADER_MAX_CHARS = 64

_TRANSIENT_4XX = frozenset({408, 429})
_UNAUTHORIZED = frozenset({401, 403})


@dataclass(frozen=True, slots=True)
class Classified:
    """The outcome of one answer and a short, log-safe detail (None when all went well)."""

    outcome: Outcome
    detail: str | None


_SENT = Classified(Outcome.SENT, None)


def classify_response(status: int, body: bytes) -> Classified:
    """Classify an HTTP status and body; never raises."""
    if status == 200:
        if _is_accepted(body):
            return _SENT
        return Classified(Outcome.TRANSIENT, _limit(f"bad body: {excerpt(body)}"))
    if status in _UNAUTHORIZED:
        outcome = Outcome.UNAUTHORIZED
    elif status in _TRANSIENT_4XX or 500 <= status <= 599:
        outcome = Outcome.TRANSIENT
    elif 400 <= status <= 499:
        outcome = Outcome.REJECTED
    else:
        # 1xx, 3xx and 2xx other than 200 are not in the API: treat them as a passing glitch.
        outcome = Outcome.TRANSIENT
    return Classified(outcome, _limit(f"HTTP {status}: {excerpt(body)}"))


def _is_accepted(body: bytes) -> bool:
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        # Bad JSON, bad UTF-8, integers beyond 64 bits, NaN and nesting deeper than 1024 all land here.
        return False
    if not isinstance(parsed, dict):
        return False
    code = parsed.get("code")
    # `type(...) is int` because True == 1 and 0.0 == 0 would otherwise pass.
    return type(code) is int and code == 0


def excerpt(body: bytes) -> str:
    """A short, printable quote of a body: control characters become spaces."""
    if not body:
        return "<empty>"
    text = body[:_EXCERPT_MAX_BYTES].decode("utf-8", errors="replace")
    cut = text[:EXCERPT_MAX_CHARS]
    clean = "".join(ch if ch.isprintable() else " " for ch in cut).strip()
    if len(body) > _EXCERPT_MAX_BYTES or len(text) > EXCERPT_MAX_CHARS:
        clean += "…"
    return clean or "<blank>"


def _limit(detail: str) -> str:
    return detail if len(detail) <= DETAIL_MAX_CHARS else detail[: DETAIL_MAX_CHARS - 1] + "…"


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date); None when absent or garbage.

    A date in the past or a negative delay gives 0; the result is capped at RETRY_AFTER_MAX_S.
    """
    if value is None:
        return None
    value = value.strip()
    if not value or len(value) > _HEADER_MAX_CHARS:
        return None
    if _DELTA_SECONDS.fullmatch(value):
        return _clamp(float(int(value)))
    try:
        when = parsedate_to_datetime(value)
    except (ValueError, TypeError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        # RFC 5322 "-0000" means "UTC, source zone unknown" and comes back naive.
        when = when.replace(tzinfo=UTC)
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    return _clamp((when - now).total_seconds())


def _clamp(delay_s: float) -> float:
    return min(max(delay_s, 0.0), RETRY_AFTER_MAX_S)
