"""A customer's whole story, read back from the service's JSON log lines by its id alone: created, replaced,
changed, updated by an import, its message's journey through the real engine, deleted."""

from __future__ import annotations

import json
from collections.abc import Callable

from mailer.settings import Settings
from tests.conftest import AiohttpClient
from tests.engine_support import FAST_ENGINE, start_sandbox, start_service
from tests.log_support import captured_logs
from tests.polling import eventually

PHONE = "79001234567"
OTHER_PHONE = "79007654321"


async def test_every_change_of_a_customer_and_its_message_are_found_by_its_id(
    aiohttp_client: AiohttpClient, settings_factory: Callable[..., Settings]
) -> None:
    sandbox = await start_sandbox()
    settings = settings_factory(provider_url=sandbox.url, log_level="INFO", **FAST_ENGINE)
    try:
        with captured_logs(settings) as logs:
            service = await start_service(aiohttp_client, settings)
            api = service.api
            customer_id = await service.customer(PHONE, tag="a")
            body = {"phone": PHONE, "tag": "b", "timezone": "UTC"}
            assert (await api.put(f"/api/customers/{customer_id}", json=body)).status == 200
            resp = await api.patch(f"/api/customers/{customer_id}", json={"tag": "c"})
            assert resp.status == 200
            lines = [{"phone": PHONE, "tag": "d"}, {"phone": OTHER_PHONE}]
            ndjson = "".join(json.dumps(line) + "\n" for line in lines)
            resp = await api.post(
                "/api/customers/import",
                data=ndjson.encode(),
                headers={"Content-Type": "application/x-ndjson"},
            )
            assert resp.status == 200, await resp.text()
            assert (await resp.json())["updated"] == 1
            mailout = await service.mailout(tags=["d"])

            async def sent() -> bool:
                return (await service.statuses(mailout["id"])).get("sent") == 1

            await eventually(sent, what="the customer's message sent")
            assert (await api.delete(f"/api/customers/{customer_id}")).status == 204
            await api.client.close()
    finally:
        await sandbox.server.close()

    story = [line for line in logs.lines if line.get("customer_id") == customer_id]
    events = [line["event"] for line in story]
    imported = [line for line in story if line["event"] == "customer.imported"]
    assert [line["action"] for line in imported] == ["updated"]
    assert imported[0]["level"] == "info"
    wanted = (
        "customer.created",
        "customer.replaced",
        "customer.changed",
        "customer.imported",
        "message.created",
        "message.sent",
        "customer.deleted",
    )
    position = 0
    for name in wanted:
        assert name in events[position:], f"{name!r} missing after {events[:position]} in {events}"
        position = events.index(name, position) + 1
    # The other customer of the import has its own line, not the first customer's.
    others = [line for line in logs.events("customer.imported") if line["customer_id"] != customer_id]
    assert [line["action"] for line in others] == ["created"]
