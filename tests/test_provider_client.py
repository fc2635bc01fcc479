"""Tests of mailer.provider.client against the sandbox (and a few hostile servers) over real loopback HTTP."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from mailer.domain.statuses import Outcome
from mailer.provider.classify import classify_response
from mailer.provider.client import BODY_LIMIT_BYTES, ProviderClient, SendResult, provider_session
from sandbox.app import create_sandbox_app
from sandbox.faults import SandboxFaults
from sandbox.state import SANDBOX_STATE, SandboxState

PHONE = "79001234567"
TOKEN = "header.payload.signature-SECRET"
# Slack on top of a deadline for a loaded CI machine; small enough that a deadline ignored would show.
DEADLINE_SLACK_S = 0.5
# A deadline long enough never to fire in a test that is about something else.
LONG_TIMEOUT_S = 10.0

AiohttpServer = Callable[..., Awaitable[TestServer]]


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


class Sandbox:
    """A sandbox served on loopback, with a client pointed at it."""

    def __init__(self, server: TestServer, client: ProviderClient) -> None:
        self.server = server
        self.client = client

    @property
    def state(self) -> SandboxState:
        return self.server.app[SANDBOX_STATE]

    @property
    def base_url(self) -> str:
        return str(self.server.make_url("")).rstrip("/")


SandboxFactory = Callable[..., Awaitable[Sandbox]]


@pytest.fixture
def sandbox_factory(aiohttp_server: AiohttpServer, session: aiohttp.ClientSession) -> SandboxFactory:
    async def make(
        faults: SandboxFaults | None = None, token: str | None = None, client_token: str | None = None
    ) -> Sandbox:
        server = await aiohttp_server(create_sandbox_app(faults, token=token))
        base_url = str(server.make_url("")).rstrip("/")
        return Sandbox(server, ProviderClient(session, base_url, client_token))

    return make


@pytest.fixture
def serve(aiohttp_server: AiohttpServer) -> Callable[[web.Application], Awaitable[str]]:
    """Serve any app on loopback and return its base URL."""

    async def start(app: web.Application) -> str:
        server = await aiohttp_server(app)
        return str(server.make_url("")).rstrip("/")

    return start


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def assert_secret_free(result: SendResult) -> None:
    assert TOKEN not in repr(result)


async def test_success(sandbox_factory: SandboxFactory) -> None:
    sandbox = await sandbox_factory()
    result = await sandbox.client.send(42, PHONE, "Hello, world", LONG_TIMEOUT_S)
    assert result.outcome is Outcome.SENT
    assert result.http_status == 200
    assert result.error is None
    assert result.retry_after_s is None
    assert 0 <= result.duration_s < LONG_TIMEOUT_S
    assert sandbox.state.counts == {42: 1}
    (entry,) = sandbox.state.journal
    assert (entry.id, entry.phone, entry.text) == (42, int(PHONE), "Hello, world")


async def test_success_with_token(sandbox_factory: SandboxFactory) -> None:
    sandbox = await sandbox_factory(token=TOKEN, client_token=TOKEN)
    result = await sandbox.client.send(1, PHONE, "hi", LONG_TIMEOUT_S)
    assert result.outcome is Outcome.SENT


@pytest.mark.parametrize("client_token", [None, "wrong-token"])
async def test_bad_token_is_unauthorized(sandbox_factory: SandboxFactory, client_token: str | None) -> None:
    sandbox = await sandbox_factory(token=TOKEN, client_token=client_token)
    result = await sandbox.client.send(1, PHONE, "hi", LONG_TIMEOUT_S)
    assert result.outcome is Outcome.UNAUTHORIZED
    assert result.http_status == 401
    assert sandbox.state.counts == {}


async def test_server_error_is_transient(sandbox_factory: SandboxFactory) -> None:
    sandbox = await sandbox_factory(SandboxFaults(error_rate=1.0, seed=1))
    for msg_id in range(5):
        result = await sandbox.client.send(msg_id, PHONE, "hi", LONG_TIMEOUT_S)
        assert result.outcome is Outcome.TRANSIENT
        assert result.http_status in (500, 502, 503)
        assert result.error is not None
    assert sandbox.state.counts == {}


async def test_throttle_is_transient_with_retry_after(sandbox_factory: SandboxFactory) -> None:
    sandbox = await sandbox_factory(SandboxFaults(throttle_rate=1.0))
    result = await sandbox.client.send(1, PHONE, "hi", LONG_TIMEOUT_S)
    assert result.outcome is Outcome.TRANSIENT
    assert result.http_status == 429
    assert result.retry_after_s == 1.0


async def test_every_garbage_200_is_transient(sandbox_factory: SandboxFactory) -> None:
    sandbox = await sandbox_factory(SandboxFaults(garbage_rate=1.0))
    details = set()
    for msg_id in range(4):  # the sandbox rotates through its four kinds of bad body
        result = await sandbox.client.send(msg_id, PHONE, "hi", LONG_TIMEOUT_S)
        assert result.outcome is Outcome.TRANSIENT
        assert result.http_status == 200
        assert result.error is not None
        assert result.error.startswith("bad body: ")
        details.add(result.error)
    assert len(details) == 4
    assert sandbox.state.counts == {}


async def test_id_mismatch_is_rejected(
    sandbox_factory: SandboxFactory, session: aiohttp.ClientSession
) -> None:
    sandbox = await sandbox_factory()
    # The client always sends a matching id, so craft the request by hand.
    body = {"id": 6, "phone": int(PHONE), "text": "hi"}
    async with session.post(sandbox.client.url_for(5), json=body) as response:
        status, raw = response.status, await response.read()
    assert status == 400
    assert classify_response(status, raw).outcome is Outcome.REJECTED
    assert sandbox.state.counts == {}


async def test_invalid_phone_is_rejected_by_the_provider(sandbox_factory: SandboxFactory) -> None:
    sandbox = await sandbox_factory()
    result = await sandbox.client.send(1, "89001234567", "hi", LONG_TIMEOUT_S)  # 8..., not 7...
    assert result.outcome is Outcome.REJECTED
    assert result.http_status == 400


async def test_injected_rejection(sandbox_factory: SandboxFactory) -> None:
    sandbox = await sandbox_factory(SandboxFaults(reject_rate=1.0))
    result = await sandbox.client.send(1, PHONE, "hi", LONG_TIMEOUT_S)
    assert (result.outcome, result.http_status) == (Outcome.REJECTED, 400)


async def test_non_digit_phone_is_rejected_without_a_request(sandbox_factory: SandboxFactory) -> None:
    sandbox = await sandbox_factory()
    for phone in ("+79001234567", "7900 123 4567", "7_900_123_45_67", "\u06679001234567", ""):
        result = await sandbox.client.send(1, phone, "hi", LONG_TIMEOUT_S)
        assert (result.outcome, result.http_status) == (Outcome.REJECTED, None)
    assert sandbox.state.requests == 0


async def test_hang_times_out_within_the_deadline(sandbox_factory: SandboxFactory) -> None:
    sandbox = await sandbox_factory(SandboxFaults(hang_rate=1.0))
    timeout_s = 0.3
    loop = asyncio.get_running_loop()
    started_s = loop.time()
    result = await sandbox.client.send(1, PHONE, "hi", timeout_s)
    elapsed_s = loop.time() - started_s
    assert result.outcome is Outcome.TIMEOUT
    assert result.http_status is None
    assert elapsed_s < timeout_s + DEADLINE_SLACK_S
    assert result.duration_s < timeout_s + DEADLINE_SLACK_S
    assert sandbox.state.hung == 1
    assert sandbox.state.counts == {}


async def test_a_stalled_body_times_out_within_the_deadline(
    serve: Callable[[web.Application], Awaitable[str]], session: aiohttp.ClientSession
) -> None:
    release = asyncio.Event()

    async def stall(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(status=200, headers={"Content-Length": "100"})
        await response.prepare(request)
        await response.write(b'{"code": 0,')
        await release.wait()
        return response

    async def release_on_shutdown(app: web.Application) -> None:
        release.set()

    app = web.Application()
    app.router.add_post("/send/{msgId}", stall)
    app.on_shutdown.append(release_on_shutdown)
    client = ProviderClient(session, await serve(app), None)
    timeout_s = 0.3
    result = await client.send(1, PHONE, "hi", timeout_s)
    assert result.outcome is Outcome.TIMEOUT
    assert result.http_status == 200  # the headers came, the body never finished
    assert result.duration_s < timeout_s + DEADLINE_SLACK_S


@pytest.mark.parametrize("timeout_s", [0.0, -1.0, float("nan")])
async def test_no_time_left_sends_nothing(sandbox_factory: SandboxFactory, timeout_s: float) -> None:
    sandbox = await sandbox_factory()
    result = await sandbox.client.send(1, PHONE, "hi", timeout_s)
    assert result.outcome is Outcome.TIMEOUT
    assert sandbox.state.requests == 0


async def test_refused_connection(session: aiohttp.ClientSession) -> None:
    client = ProviderClient(session, f"http://127.0.0.1:{unused_port()}", TOKEN)
    result = await client.send(1, PHONE, "hi", LONG_TIMEOUT_S)
    assert result.outcome is Outcome.CONNECTION
    assert result.http_status is None
    assert result.error is not None
    assert_secret_free(result)


async def test_reset_connection(
    serve: Callable[[web.Application], Awaitable[str]], session: aiohttp.ClientSession
) -> None:
    async def drop(request: web.Request) -> web.Response:
        assert request.transport is not None
        request.transport.abort()  # what a crashing provider does to a connection
        return web.Response()

    app = web.Application()
    app.router.add_post("/send/{msgId}", drop)
    client = ProviderClient(session, await serve(app), None)
    result = await client.send(1, PHONE, "hi", LONG_TIMEOUT_S)
    assert result.outcome is Outcome.CONNECTION


def body_app(status: int, body: bytes, *, chunked: bool) -> web.Application:
    async def answer(request: web.Request) -> web.StreamResponse:
        if not chunked:
            return web.Response(status=status, body=body, content_type="application/json")
        response = web.StreamResponse(status=status)
        response.enable_chunked_encoding()
        await response.prepare(request)
        for start in range(0, len(body), 8192):
            await response.write(body[start : start + 8192])
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_post("/send/{msgId}", answer)
    return app


def padded_ok(size: int) -> bytes:
    head = b'{"code": 0, "pad": "'
    tail = b'"}'
    return head + b"x" * (size - len(head) - len(tail)) + tail


@pytest.mark.parametrize("chunked", [False, True])
async def test_body_over_the_cap_is_a_bad_body(
    serve: Callable[[web.Application], Awaitable[str]], session: aiohttp.ClientSession, chunked: bool
) -> None:
    # A valid "OK" body, one byte too long: the size alone makes it garbage.
    client = ProviderClient(
        session, await serve(body_app(200, padded_ok(BODY_LIMIT_BYTES + 1), chunked=chunked)), None
    )
    result = await client.send(1, PHONE, "hi", LONG_TIMEOUT_S)
    assert (result.outcome, result.http_status) == (Outcome.TRANSIENT, 200)
    assert result.error is not None
    assert "larger than" in result.error


@pytest.mark.parametrize("chunked", [False, True])
async def test_body_at_the_cap_is_read(
    serve: Callable[[web.Application], Awaitable[str]], session: aiohttp.ClientSession, chunked: bool
) -> None:
    client = ProviderClient(
        session, await serve(body_app(200, padded_ok(BODY_LIMIT_BYTES), chunked=chunked)), None
    )
    result = await client.send(1, PHONE, "hi", LONG_TIMEOUT_S)
    assert result.outcome is Outcome.SENT


async def test_huge_error_body_keeps_the_status_outcome(
    serve: Callable[[web.Application], Awaitable[str]], session: aiohttp.ClientSession
) -> None:
    client = ProviderClient(
        session, await serve(body_app(400, b"e" * (BODY_LIMIT_BYTES * 4), chunked=True)), None
    )
    result = await client.send(1, PHONE, "hi", LONG_TIMEOUT_S)
    assert (result.outcome, result.http_status) == (Outcome.REJECTED, 400)


async def test_redirect_is_not_followed(
    serve: Callable[[web.Application], Awaitable[str]], session: aiohttp.ClientSession
) -> None:
    async def redirect(request: web.Request) -> web.Response:
        return web.Response(status=307, headers={"Location": "http://example.invalid/steal"})

    app = web.Application()
    app.router.add_post("/send/{msgId}", redirect)
    client = ProviderClient(session, await serve(app), TOKEN)
    result = await client.send(1, PHONE, "hi", LONG_TIMEOUT_S)
    assert (result.outcome, result.http_status) == (Outcome.TRANSIENT, 307)


async def test_the_senders_session_keeps_no_cookie_a_provider_sets(
    serve: Callable[[web.Application], Awaitable[str]],
) -> None:
    # A provider setting a new cookie on every answer: a jar would grow by one per request and send them all
    # back. By host name, not IP: aiohttp's default jar ignores cookies of IP addresses.
    cookies_seen: list[str] = []

    async def send(request: web.Request) -> web.Response:
        cookies_seen.append(request.headers.get("Cookie", ""))
        response = web.json_response({"code": 0, "message": "OK"})
        response.set_cookie(f"c{len(cookies_seen)}", "x" * 100)
        return response

    app = web.Application()
    app.router.add_post("/send/{msgId}", send)
    base_url = (await serve(app)).replace("127.0.0.1", "localhost")
    async with provider_session(concurrency=3) as session:
        client = ProviderClient(session, base_url, None)
        for msg_id in range(1, 6):
            assert (await client.send(msg_id, PHONE, "hi", LONG_TIMEOUT_S)).outcome is Outcome.SENT
        assert len(session.cookie_jar) == 0
        assert isinstance(session.connector, aiohttp.TCPConnector)
        assert session.connector.limit == 3
    assert cookies_seen == [""] * 5


async def test_a_raising_session_still_gives_outcomes(aiohttp_server: AiohttpServer) -> None:
    server = await aiohttp_server(create_sandbox_app(SandboxFaults(error_rate=1.0)))
    async with aiohttp.ClientSession(raise_for_status=True) as session:
        client = ProviderClient(session, str(server.make_url("")), None)
        result = await client.send(1, PHONE, "hi", LONG_TIMEOUT_S)
    assert result.outcome is Outcome.TRANSIENT


async def test_cancellation_propagates(
    serve: Callable[[web.Application], Awaitable[str]], session: aiohttp.ClientSession
) -> None:
    arrived = asyncio.Event()
    release = asyncio.Event()

    async def wait(request: web.Request) -> web.Response:
        arrived.set()
        await release.wait()
        return web.Response(body=b'{"code": 0}')

    async def release_on_shutdown(app: web.Application) -> None:
        release.set()

    app = web.Application()
    app.router.add_post("/send/{msgId}", wait)
    app.on_shutdown.append(release_on_shutdown)
    client = ProviderClient(session, await serve(app), None)
    sending = asyncio.create_task(client.send(1, PHONE, "hi", LONG_TIMEOUT_S))
    async with asyncio.timeout(LONG_TIMEOUT_S):
        await arrived.wait()
    sending.cancel()
    with pytest.raises(asyncio.CancelledError):
        await sending


async def test_the_token_never_shows(
    session: aiohttp.ClientSession, serve: Callable[[web.Application], Awaitable[str]]
) -> None:
    async def echo(request: web.Request) -> web.Response:
        # A provider that quotes the request's headers back in its error.
        return web.Response(status=500, text=json.dumps(dict(request.headers)))

    app = web.Application()
    app.router.add_post("/send/{msgId}", echo)
    base_url = await serve(app)
    client = ProviderClient(session, base_url + "/", TOKEN)
    assert TOKEN not in repr(client)
    assert client.url_for(7) == f"{base_url}/send/7"
    result = await client.send(1, PHONE, "hi", LONG_TIMEOUT_S)
    assert result.outcome is Outcome.TRANSIENT
    assert result.error is not None
    assert "<redacted>" in result.error
    assert_secret_free(result)


@pytest.mark.parametrize("token", ["", "has space", "line\nbreak"])
def test_unusable_token_fails_loudly_without_echoing_it(token: str) -> None:
    session: Any = object()  # never used: the constructor refuses first
    with pytest.raises(ValueError, match="provider token") as caught:
        ProviderClient(session, "http://127.0.0.1", token)
    assert token not in str(caught.value) or not token
