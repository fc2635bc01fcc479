"""The built-in sandbox mounted in the service: its send API wants the token the service's own engine sends (a
random per-process one unless configured), so a stranger cannot send through it, the service still delivers
through it, and what it records per message id stays under its cap."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer, unused_port

from mailer import keys
from mailer.app import create_app
from mailer.settings import Settings
from sandbox.app import create_sandbox_app
from sandbox.state import SANDBOX_STATE
from tests.conftest import ADMIN_PASSWORD, AiohttpClient, Api
from tests.engine_support import FAST_ENGINE
from tests.polling import eventually

SEND = "/sandbox/v1/send/1"
BODY = {"id": 1, "phone": 79001234567, "text": "forged"}
CUSTOMERS = 3


async def admin(client: TestClient[Any, Any]) -> Api:
    resp = await client.post("/auth/token", data={"username": "admin", "password": ADMIN_PASSWORD})
    assert resp.status == 200, await resp.text()
    return Api(client, (await resp.json())["access_token"])


async def control(api: Api, path: str) -> Any:
    resp = await api.get(f"/sandbox/v1/_control/{path}")
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def test_a_stranger_s_send_is_refused_and_recorded_nowhere(
    aiohttp_client: AiohttpClient, settings_factory: Callable[..., Settings]
) -> None:
    client = await aiohttp_client(create_app(settings_factory(), with_engine=False))
    token = client.app[keys.PROVIDER_TOKEN]
    assert token, "a token is generated when none is configured"
    for headers in ({}, {"Authorization": "Bearer guessed"}):
        resp = await client.post(SEND, json=BODY, headers=headers)
        assert resp.status == 401
    api = await admin(client)
    assert await control(api, "counts") == {}
    assert (await control(api, "received"))["items"] == []
    assert (await control(api, "stats"))["accepted"] == 0


async def test_each_process_generates_its_own_token(settings_factory: Callable[..., Settings]) -> None:
    first = create_app(settings_factory(), with_engine=False)[keys.PROVIDER_TOKEN]
    second = create_app(settings_factory(), with_engine=False)[keys.PROVIDER_TOKEN]
    assert first
    assert second
    assert first != second


async def test_a_configured_sandbox_token_is_the_one_both_sides_use(
    aiohttp_client: AiohttpClient, settings_factory: Callable[..., Settings]
) -> None:
    client = await aiohttp_client(
        create_app(settings_factory(sandbox_token="chosen-token"), with_engine=False)
    )
    assert client.app[keys.PROVIDER_TOKEN] == "chosen-token"
    resp = await client.post(SEND, json=BODY, headers={"Authorization": "Bearer chosen-token"})
    assert resp.status == 200, await resp.text()


async def test_the_service_delivers_a_mailout_through_its_embedded_sandbox(
    settings_factory: Callable[..., Settings],
) -> None:
    port = unused_port()
    # The engine reaches the embedded sandbox at MAILER_HOST:MAILER_PORT: the test server must listen there.
    engine_settings = {k: v for k, v in FAST_ENGINE.items() if k != "provider_token"}
    settings = settings_factory(host="127.0.0.1", port=port, **engine_settings)
    async with TestClient(TestServer(create_app(settings, with_engine=True), port=port)) as client:
        await deliver_a_mailout(await admin(client))


async def deliver_a_mailout(api: Api) -> None:
    for n in range(CUSTOMERS):
        resp = await api.post("/api/customers/", json={"phone": f"7900555000{n}", "timezone": "UTC"})
        assert resp.status == 201, await resp.text()
    now = datetime.now(UTC)
    body = {
        "start_at": (now - timedelta(seconds=1)).isoformat(),
        "end_at": (now + timedelta(minutes=10)).isoformat(),
        "text": "hello",
        "filter": {"operator_codes": [], "tags": []},
    }
    resp = await api.post("/api/mailouts/", json=body)
    assert resp.status == 201, await resp.text()
    mailout_id = (await resp.json())["id"]

    async def all_sent() -> dict[str, Any] | None:
        resp = await api.get(f"/api/mailouts/{mailout_id}/stats")
        stats: dict[str, Any] = await resp.json()
        return stats if stats["by_status"].get("sent") == CUSTOMERS else None

    await eventually(all_sent, what="every message of the mailout sent")
    sandbox = await control(api, "stats")
    assert (sandbox["accepted"], sandbox["unique"]) == (CUSTOMERS, CUSTOMERS)
    assert "401" not in sandbox["by_status"], "the engine sends the token the sandbox checks"


async def test_the_sandbox_counts_at_most_its_cap_of_message_ids(aiohttp_client: AiohttpClient) -> None:
    cap = 4
    root = web.Application()
    sandbox = create_sandbox_app(token="t", journal_size=cap, counts_size=cap)
    root.add_subapp("/v1", sandbox)
    client = await aiohttp_client(root)
    headers = {"Authorization": "Bearer t"}
    for msg_id in [*range(1, 11), 10, 9]:
        body = {"id": msg_id, "phone": 79001234567, "text": "x"}
        resp = await client.post(f"/v1/send/{msg_id}", json=body, headers=headers)
        assert resp.status == 200
    state = sandbox[SANDBOX_STATE]
    # The oldest ids are forgotten first; the newest are still counted, repeats included.
    assert state.counts == {7: 1, 8: 1, 9: 2, 10: 2}
    assert len(state.journal) == cap
    stats = state.stats()
    assert (stats["accepted"], stats["unique"], stats["duplicates"]) == (12, 10, 2)
