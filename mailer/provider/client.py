"""The send-API client: one POST per attempt, a hard deadline, and the outcome as data, not exceptions."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import aiohttp
import orjson
from aiohttp import hdrs

from mailer.domain.clock import utc_now
from mailer.domain.statuses import Outcome
from mailer.provider.classify import DETAIL_MAX_CHARS, Classified, classify_response, parse_retry_after

# The real answer is ~30 bytes; a larger cap only lets a hostile provider spend our memory.
BODY_LIMIT_BYTES = 64 * 1024
_REDACTED = "<redacted>"
# The deadline is one `asyncio.timeout` around the whole request (see `send`): aiohttp sets no timer.
_NO_CLIENT_TIMEOUT = aiohttp.ClientTimeout(total=None, connect=None, sock_read=None, sock_connect=None)


@dataclass(frozen=True, slots=True)
class SendResult:
    """How one send attempt ended; `error` is short and never holds the token."""

    outcome: Outcome
    http_status: int | None
    duration_s: float
    error: str | None
    retry_after_s: float | None


def provider_session(concurrency: int) -> aiohttp.ClientSession:
    """The session the senders share: one connection per sender at most (the pool size is the concurrency
    limit toward the provider), and no cookie jar. The send API has no cookies, and a provider setting a new
    one on every answer would grow a jar without bound and have each one sent back on every request."""
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=0)
    return aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar())


class ProviderClient:
    """Sends messages over a shared `aiohttp.ClientSession`; never raises for provider trouble."""

    __slots__ = ("_base_url", "_headers", "_session", "_token")

    def __init__(self, session: aiohttp.ClientSession, base_url: str, token: str | None) -> None:
        if token is not None and (not token or not token.isprintable() or any(c.isspace() for c in token)):
            # Fail at start-up rather than on every request; never echo the token itself.
            raise ValueError("provider token must be a non-empty string without whitespace")
        self._session = session
        self._base_url = base_url.rstrip("/")
        self._token = token
        # The body is encoded by orjson (a few microseconds less per request than aiohttp's `json=`).
        self._headers = {hdrs.CONTENT_TYPE: "application/json"}
        if token:
            self._headers[hdrs.AUTHORIZATION] = f"Bearer {token}"

    def __repr__(self) -> str:
        token = "set" if self._token else "unset"
        return f"ProviderClient(base_url={self._base_url!r}, token={token})"

    def url_for(self, msg_id: int) -> str:
        """The URL a send for `msg_id` goes to; safe to log."""
        return f"{self._base_url}/send/{msg_id}"

    async def send(self, msg_id: int, phone: str, text: str, timeout_s: float) -> SendResult:
        """POST one message; `timeout_s` bounds the whole attempt, body included.

        asyncio.CancelledError propagates: the engine cuts requests at the end or window boundary.
        """
        started_s = time.monotonic()
        if not timeout_s > 0:  # also catches NaN (asyncio.timeout would take it)
            return SendResult(Outcome.TIMEOUT, None, 0.0, "no time left before the deadline", None)
        if not (phone.isascii() and phone.isdigit()):
            # The provider would answer 400 anyway; don't spend a request on it.
            return SendResult(Outcome.REJECTED, None, 0.0, "phone is not a string of digits", None)
        payload = orjson.dumps({"id": msg_id, "phone": int(phone), "text": text})
        status: int | None = None
        retry_after_s: float | None = None
        try:
            # One timer for the whole attempt, connection and body included; aiohttp's own would be a second
            # (and a third handle per request: a few percent of the CPU per message).
            async with (
                asyncio.timeout(timeout_s),
                self._session.post(
                    self.url_for(msg_id),
                    data=payload,
                    headers=self._headers,
                    timeout=_NO_CLIENT_TIMEOUT,
                    # A redirect is not part of the API, and following one could carry the token elsewhere.
                    allow_redirects=False,
                    # The caller's session may be configured to raise; outcomes are data here.
                    raise_for_status=False,
                ) as response,
            ):
                status = response.status
                retry_after = response.headers.get(hdrs.RETRY_AFTER)
                if retry_after is not None:
                    retry_after_s = parse_retry_after(retry_after, utc_now())
                body, complete = await _read_capped(response)
                classified = _classify(status, body, complete)
        except TimeoutError:
            # aiohttp's timeouts subclass both TimeoutError and ClientError: this branch comes first.
            return self._result(Outcome.TIMEOUT, status, started_s, f"no answer within {timeout_s:g} s", None)
        except (aiohttp.ClientError, OSError) as exc:
            return self._result(Outcome.CONNECTION, status, started_s, _describe(exc), retry_after_s)
        return self._result(classified.outcome, status, started_s, classified.detail, retry_after_s)

    def _result(
        self,
        outcome: Outcome,
        status: int | None,
        started_s: float,
        error: str | None,
        retry_after_s: float | None,
    ) -> SendResult:
        if error is not None and self._token and self._token in error:
            # Belt and braces: a provider echoing the header back must not get the token into our logs.
            error = error.replace(self._token, _REDACTED)
        return SendResult(outcome, status, time.monotonic() - started_s, error, retry_after_s)


async def _read_capped(response: aiohttp.ClientResponse) -> tuple[bytes, bool]:
    """Read at most BODY_LIMIT_BYTES; return (prefix, complete)."""
    if response.content_length is not None:
        if response.content_length > BODY_LIMIT_BYTES:
            return b"", False
        # The usual answer: a short body of a stated length, read in one call.
        return await response.read(), True
    body = bytearray()
    while True:
        chunk = await response.content.read(BODY_LIMIT_BYTES + 1 - len(body))
        if not chunk:
            return bytes(body), True
        body += chunk
        if len(body) > BODY_LIMIT_BYTES:
            # Leaving the rest unread makes aiohttp close this connection instead of reusing it.
            return bytes(body[:BODY_LIMIT_BYTES]), False


def _classify(status: int, body: bytes, complete: bool) -> Classified:
    if not complete and status == 200:
        return Classified(Outcome.TRANSIENT, f"bad body: larger than {BODY_LIMIT_BYTES} bytes")
    # For any other answer the status decides, and a prefix is enough for the detail.
    return classify_response(status, body)


def _describe(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".replace("\n", " ")
    return text if len(text) <= DETAIL_MAX_CHARS else text[: DETAIL_MAX_CHARS - 1] + "…"
