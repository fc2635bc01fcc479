"""Tests of the sandbox package: the send API, the control API, faults, and the standalone server."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from mailer.domain.customers import PHONE_INT_MAX, PHONE_INT_MIN
from sandbox.app import create_sandbox_app
from sandbox.control import control_token_guard
from sandbox.faults import SandboxFaults
from sandbox.standalone import run_standalone
from sandbox.state import SANDBOX_STATE
from tests.polling import eventually

PHONE = 79001234567
TOKEN = "sandbox-token"
# Upper bound for anything that should take milliseconds, generous for a loaded CI machine.
DEADLINE_S = 10.0

AiohttpClient = Callable[[web.Application], Awaitable[TestClient[Any, Any]]]


def message(msg_id: int, phone: Any = PHONE, text: Any = "hello") -> dict[str, Any]:
    return {"id": msg_id, "phone": phone, "text": text}


async def send(client: TestClient[Any, Any], msg_id: int, **headers: str) -> aiohttp.ClientResponse:
    return await client.post(f"/send/{msg_id}", json=message(msg_id), headers=headers)


async def statuses(client: TestClient[Any, Any], count: int) -> list[int]:
    result = []
    for msg_id in range(count):
        response = await send(client, msg_id)
        await response.read()
        result.append(response.status)
    return result


# --- the send API -------------------------------------------------------------------------------------------


async def test_accepts_a_valid_message(aiohttp_client: AiohttpClient) -> None:
    client = await aiohttp_client(create_sandbox_app())
    response = await send(client, 5)
    assert response.status == 200
    assert await response.json() == {"code": 0, "message": "OK"}
    assert response.content_type == "application/json"


async def test_token_is_checked(aiohttp_client: AiohttpClient) -> None:
    client = await aiohttp_client(create_sandbox_app(token=TOKEN))
    for headers in (
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": TOKEN},
        {"Authorization": "bearer " + TOKEN},
    ):
        response = await send(client, 1, **headers)
        assert response.status == 401
        assert response.headers["WWW-Authenticate"] == "Bearer"
        assert (await response.json())["code"] == 401
    response = await send(client, 1, Authorization=f"Bearer {TOKEN}")
    assert response.status == 200


@pytest.mark.parametrize(
    ("path_id", "body"),
    [
        ("abc", message(1)),
        ("9223372036854775808", message(1)),  # one past int64
        ("1.0", message(1)),
        ("1", [message(1)]),
        ("1", "not an object"),
        ("1", message(2)),
        ("1", message(True)),
        ("1", {"id": "1", "phone": PHONE, "text": "x"}),
        ("1", message(1, phone=str(PHONE))),
        ("1", message(1, phone=7900123456)),  # 10 digits
        ("1", message(1, phone=89001234567)),  # starts with 8
        ("1", message(1, phone=True)),
        ("1", message(1, phone=7.9001234567e10)),
        ("1", message(1, text=5)),
        ("1", message(1, text=None)),
        ("1", {"id": 1, "phone": PHONE}),
    ],
)
async def test_invalid_requests_are_rejected(aiohttp_client: AiohttpClient, path_id: str, body: Any) -> None:
    app = create_sandbox_app()
    client = await aiohttp_client(app)
    response = await client.post(f"/send/{path_id}", json=body)
    assert response.status == 400
    assert (await response.json())["code"] == 400
    assert app[SANDBOX_STATE].counts == {}


@pytest.mark.parametrize(
    ("body", "named"),
    [
        (message(1, phone=PHONE_INT_MAX + 1), "phone"),
        (message(1, phone=PHONE_INT_MIN - 1), "phone"),
        (message(1, text=5), "text"),
        (message(2), "id"),
        ({"phone": PHONE, "text": "x"}, "id"),
    ],
)
async def test_a_rejection_names_the_field(aiohttp_client: AiohttpClient, body: Any, named: str) -> None:
    client = await aiohttp_client(create_sandbox_app())
    response = await client.post("/send/1", json=body)
    assert response.status == 400
    assert (await response.json())["message"].startswith(named)


async def test_the_phone_range_is_the_customers_one(aiohttp_client: AiohttpClient) -> None:
    client = await aiohttp_client(create_sandbox_app())
    for msg_id, phone in enumerate((PHONE_INT_MIN, PHONE_INT_MAX), start=1):
        response = await client.post(f"/send/{msg_id}", json=message(msg_id, phone=phone))
        assert response.status == 200


async def test_non_json_body_is_rejected(aiohttp_client: AiohttpClient) -> None:
    client = await aiohttp_client(create_sandbox_app())
    response = await client.post("/send/1", data=b"{not json", headers={"Content-Type": "application/json"})
    assert response.status == 400


async def test_largest_int64_id_is_valid(aiohttp_client: AiohttpClient) -> None:
    client = await aiohttp_client(create_sandbox_app())
    largest = 2**63 - 1
    assert (await send(client, largest)).status == 200


async def test_works_mounted_under_a_prefix(aiohttp_client: AiohttpClient) -> None:
    parent = web.Application()
    sandbox = create_sandbox_app(SandboxFaults(hang_rate=1.0))
    parent.add_subapp("/sandbox/v1", sandbox)
    client = await aiohttp_client(parent)
    request = asyncio.create_task(client.post("/sandbox/v1/send/1", json=message(1)))
    await parent.shutdown()  # the parent's shutdown reaches the sandbox and releases its hangs
    async with asyncio.timeout(DEADLINE_S):
        response = await request
    assert response.status == 503
    stats = await (await client.get("/sandbox/v1/_control/stats")).json()
    assert stats["hung"] == 1


async def test_a_control_guard_protects_only_the_control_api(aiohttp_client: AiohttpClient) -> None:
    parent = web.Application()
    parent.add_subapp("/sandbox/v1", create_sandbox_app(control_guard=control_token_guard("ctl")))
    client = await aiohttp_client(parent)
    assert (await client.post("/sandbox/v1/send/1", json=message(1))).status == 200
    for method, path in (
        ("GET", "/_control/received"),
        ("PUT", "/_control/faults"),
        ("POST", "/_control/reset"),
    ):
        response = await client.request(method, "/sandbox/v1" + path, json={})
        assert response.status == 401, path
        assert response.headers["WWW-Authenticate"] == "Bearer"
        wrong = await client.request(method, "/sandbox/v1" + path, headers={"Authorization": "Bearer nope"})
        assert wrong.status == 401, path
    response = await client.get("/sandbox/v1/_control/received", headers={"Authorization": "Bearer ctl"})
    assert response.status == 200
    assert [item["id"] for item in (await response.json())["items"]] == [1]


async def test_standalone_control_token(capsys: pytest.CaptureFixture[str]) -> None:
    port = unused_port()
    base_url = f"http://127.0.0.1:{port}"
    serving = asyncio.create_task(run_standalone("127.0.0.1", port, SandboxFaults(), None, "ctl"))
    try:
        async with aiohttp.ClientSession() as session:
            await poll_until(session, base_url, 200)
            async with session.get(f"{base_url}/_control/stats") as response:
                assert response.status == 401
            headers = {"Authorization": "Bearer ctl"}
            async with session.get(f"{base_url}/_control/stats", headers=headers) as response:
                assert response.status == 200
    finally:
        serving.cancel()
        with pytest.raises(asyncio.CancelledError):
            await serving


# --- counting and the control API ---------------------------------------------------------------------------


async def test_counts_stats_and_duplicates(aiohttp_client: AiohttpClient) -> None:
    client = await aiohttp_client(create_sandbox_app(token=TOKEN))
    auth = {"Authorization": f"Bearer {TOKEN}"}
    for msg_id in (1, 2, 2, 3, 3, 3):
        assert (await send(client, msg_id, **auth)).status == 200
    assert (await send(client, 9)).status == 401
    assert (await client.post("/send/4", json=message(5), headers=auth)).status == 400

    counts = await (await client.get("/_control/counts")).json()
    assert counts == {"1": 1, "2": 2, "3": 3}
    stats = await (await client.get("/_control/stats")).json()
    assert stats["requests"] == 8
    assert stats["accepted"] == 6
    assert stats["unique"] == 3
    assert stats["duplicates"] == 3
    assert stats["by_status"] == {"200": 6, "400": 1, "401": 1}


async def test_reset_clears_counts_and_journal(aiohttp_client: AiohttpClient) -> None:
    app = create_sandbox_app()
    client = await aiohttp_client(app)
    await send(client, 1)
    response = await client.post("/_control/reset")
    assert response.status == 200
    stats = await response.json()
    assert (stats["requests"], stats["accepted"], stats["unique"], stats["by_status"]) == (0, 0, 0, {})
    assert await (await client.get("/_control/counts")).json() == {}
    assert (await (await client.get("/_control/received")).json())["items"] == []
    assert not app[SANDBOX_STATE].journal


async def test_received_journal_has_utc_times_and_counts(aiohttp_client: AiohttpClient) -> None:
    client = await aiohttp_client(create_sandbox_app())
    before = datetime.now(UTC)
    for msg_id in (3, 1, 3):
        await send(client, msg_id)
    after = datetime.now(UTC)
    body = await (await client.get("/_control/received")).json()
    items = body["items"]
    assert [item["id"] for item in items] == [1, 3, 3]
    assert body["next_after"] is None
    for item in items:
        assert item["phone"] == str(PHONE)
        assert item["text"] == "hello"
        assert item["received_at"].endswith("Z")
        received_at = datetime.fromisoformat(item["received_at"])
        assert before <= received_at <= after
    assert [item["count"] for item in items] == [1, 2, 2]


async def test_received_pages_without_splitting_an_id(aiohttp_client: AiohttpClient) -> None:
    client = await aiohttp_client(create_sandbox_app())
    for msg_id in (1, 2, 2, 3, 4):
        await send(client, msg_id)
    page = await (await client.get("/_control/received", params={"limit": "2"})).json()
    # Both repeats of id 2 come together, or paging on id would skip the second one.
    assert [item["id"] for item in page["items"]] == [1, 2, 2]
    assert page["next_after"] == 2
    page = await (await client.get("/_control/received", params={"after_id": "2", "limit": "2"})).json()
    assert [item["id"] for item in page["items"]] == [3, 4]
    assert page["next_after"] is None


@pytest.mark.parametrize(
    "params", [{"limit": "0"}, {"limit": "x"}, {"limit": "1000001"}, {"after_id": "1.5"}]
)
async def test_received_rejects_bad_query(aiohttp_client: AiohttpClient, params: dict[str, str]) -> None:
    client = await aiohttp_client(create_sandbox_app())
    response = await client.get("/_control/received", params=params)
    assert response.status == 400
    assert (await response.json())["code"] == 400


async def test_journal_is_bounded_but_counts_are_not(aiohttp_client: AiohttpClient) -> None:
    app = create_sandbox_app(journal_size=3)
    client = await aiohttp_client(app)
    for msg_id in range(1, 6):
        await send(client, msg_id)
    items = (await (await client.get("/_control/received")).json())["items"]
    assert [item["id"] for item in items] == [3, 4, 5]  # the last three accepted
    assert len(app[SANDBOX_STATE].journal) == 3
    assert len(await (await client.get("/_control/counts")).json()) == 5


# --- faults ------------------------------------------------------------------------------------------------


async def test_put_faults_is_a_partial_update(aiohttp_client: AiohttpClient) -> None:
    faults = SandboxFaults(latency_ms=0.0)
    client = await aiohttp_client(create_sandbox_app(faults))
    response = await client.put("/_control/faults", json={"error_rate": 0.25, "seed": 7})
    assert response.status == 200
    body = await response.json()
    assert body["error_rate"] == 0.25
    assert body["seed"] == 7
    assert body["throttle_rate"] == 0.0
    assert faults.error_rate == 0.25  # the caller's object sees the change
    response = await client.put("/_control/faults", json={"throttle_rate": 0.5})
    assert (await response.json())["error_rate"] == 0.25


@pytest.mark.parametrize(
    "body",
    [
        {"error_rate": 1.5},
        {"error_rate": -0.1},
        {"error_rate": 0.6, "hang_rate": 0.6},
        {"error_rate": "0.5"},
        {"error_rate": True},
        {"latency_ms": -1},
        {"seed": 1.5},
        {"unknown": 1},
        [1, 2],
    ],
)
async def test_put_faults_rejects_bad_values_and_changes_nothing(
    aiohttp_client: AiohttpClient, body: Any
) -> None:
    faults = SandboxFaults(error_rate=0.1)
    client = await aiohttp_client(create_sandbox_app(faults))
    response = await client.put("/_control/faults", json=body)
    assert response.status == 400
    assert faults == SandboxFaults(error_rate=0.1)


async def test_refuse_needs_the_standalone_server(aiohttp_client: AiohttpClient) -> None:
    faults = SandboxFaults()
    client = await aiohttp_client(create_sandbox_app(faults))
    assert (await client.post("/_control/refuse", params={"seconds": "1"})).status == 409
    assert (await client.put("/_control/faults", json={"refuse_for_s": 1})).status == 409
    assert faults.refuse_for_s == 0
    assert (await client.post("/_control/refuse", params={"seconds": "nope"})).status == 400


def test_invalid_faults_fail_at_creation() -> None:
    with pytest.raises(ValueError, match="rates"):
        create_sandbox_app(SandboxFaults(error_rate=0.7, garbage_rate=0.7))


async def test_rates_are_deterministic_for_a_seed(aiohttp_client: AiohttpClient) -> None:
    def faults() -> SandboxFaults:
        return SandboxFaults(error_rate=0.3, throttle_rate=0.2, reject_rate=0.1, garbage_rate=0.1, seed=1234)

    first = await statuses(await aiohttp_client(create_sandbox_app(faults())), 200)
    second = await statuses(await aiohttp_client(create_sandbox_app(faults())), 200)
    assert first == second
    ok = first.count(200)  # garbage answers are 200 too
    errors = sum(first.count(status) for status in (500, 502, 503))
    # Loose bounds: with a fixed seed these are exact, the bounds only document the expected shares.
    assert 40 <= errors <= 80
    assert 20 <= first.count(429) <= 60
    assert 5 <= first.count(400) <= 40
    assert 40 <= ok <= 120


async def test_faults_are_not_counted(aiohttp_client: AiohttpClient) -> None:
    app = create_sandbox_app(SandboxFaults(error_rate=0.5, seed=3))
    client = await aiohttp_client(app)
    codes = await statuses(client, 50)
    state = app[SANDBOX_STATE]
    assert state.accepted == codes.count(200)
    assert set(state.counts) == {msg_id for msg_id, code in enumerate(codes) if code == 200}


async def test_latency_is_capped(aiohttp_client: AiohttpClient) -> None:
    client = await aiohttp_client(
        create_sandbox_app(SandboxFaults(latency_ms=1e9, latency_max_ms=50, seed=1))
    )
    loop = asyncio.get_running_loop()
    started_s = loop.time()
    assert (await send(client, 1)).status == 200
    assert 0.05 <= loop.time() - started_s < DEADLINE_S


async def test_hanging_requests_are_released_at_shutdown(aiohttp_client: AiohttpClient) -> None:
    app = create_sandbox_app(SandboxFaults(hang_rate=1.0))
    client = await aiohttp_client(app)
    state = app[SANDBOX_STATE]
    # A client that gives up leaves its handler parked on the shutdown event.
    with pytest.raises(TimeoutError):
        await client.post("/send/1", json=message(1), timeout=aiohttp.ClientTimeout(total=0.2))
    assert state.hung == 1
    request = asyncio.create_task(send(client, 2))
    await app.shutdown()  # what the runner does first when the server stops
    async with asyncio.timeout(DEADLINE_S):
        response = await request
    assert response.status == 503
    assert state.hung == 2


# --- standalone ---------------------------------------------------------------------------------------------


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def try_send(session: aiohttp.ClientSession, base_url: str, msg_id: int) -> int | None:
    """The status of one send, or None when the connection is refused."""
    try:
        async with session.post(f"{base_url}/send/{msg_id}", json=message(msg_id)) as response:
            await response.read()
            return response.status
    except aiohttp.ClientConnectionError:
        return None


async def poll_until(session: aiohttp.ClientSession, base_url: str, wanted: int | None) -> None:
    """Send until the answer is `wanted` (None: refused), within DEADLINE_S."""

    # A listening socket offers no event to wait on: polling, bounded by a deadline, is the way.
    async def answered() -> bool:
        return await try_send(session, base_url, 1) == wanted

    await eventually(answered, DEADLINE_S, f"a send answered {wanted}")


async def test_standalone_refuses_then_recovers(capsys: pytest.CaptureFixture[str]) -> None:
    port = unused_port()
    base_url = f"http://127.0.0.1:{port}"
    serving = asyncio.create_task(run_standalone("127.0.0.1", port, SandboxFaults(), None))
    try:
        # Without keep-alive every attempt opens a new connection, so a refusal is seen at once.
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
            await poll_until(session, base_url, 200)
            assert f"sandbox listening on {base_url}" in capsys.readouterr().out

            async with session.post(f"{base_url}/_control/refuse", params={"seconds": "0.5"}) as response:
                assert response.status == 200
                assert await response.json() == {"refusing_for_s": 0.5}
            assert await try_send(session, base_url, 2) is None  # refused, not hanging
            await poll_until(session, base_url, 200)
            async with session.get(f"{base_url}/_control/stats") as response:
                stats = await response.json()
            assert stats["accepted"] >= 2
    finally:
        serving.cancel()
        with pytest.raises(asyncio.CancelledError):
            await serving


async def test_standalone_refuse_closes_keep_alive_connections() -> None:
    port = unused_port()
    base_url = f"http://127.0.0.1:{port}"
    serving = asyncio.create_task(run_standalone("127.0.0.1", port, SandboxFaults(), None))
    try:
        async with aiohttp.ClientSession() as session:
            await poll_until(session, base_url, 200)
            async with session.put(f"{base_url}/_control/faults", json={"refuse_for_s": 30}) as response:
                assert response.status == 200
            # The pooled connection was closed after that answer, and no new one is accepted.
            assert await try_send(session, base_url, 2) is None
    finally:
        serving.cancel()
        with pytest.raises(asyncio.CancelledError):
            await serving


async def test_main_runs_until_a_signal() -> None:
    code = "import sys; from sandbox.standalone import main; sys.exit(main(sys.argv[1:]))"
    for signum in (signal.SIGTERM, signal.SIGINT):
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            code,
            "--port",
            "0",
            "--error-rate",
            "0.1",
            "--seed",
            "1",
            stdout=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        assert process.stdout is not None
        try:
            async with asyncio.timeout(DEADLINE_S):
                line = (await process.stdout.readline()).decode()
            assert line.startswith("sandbox listening on http://127.0.0.1:")
            port = int(line.rsplit(":", 1)[1])
            assert port > 0
            process.send_signal(signum)
            async with asyncio.timeout(DEADLINE_S):
                assert await process.wait() == 0
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()


def test_main_rejects_bad_faults(capsys: pytest.CaptureFixture[str]) -> None:
    from sandbox.standalone import main

    with pytest.raises(SystemExit) as exited:
        main(["--error-rate", "2"])
    assert exited.value.code == 2
    assert "error_rate" in capsys.readouterr().err
