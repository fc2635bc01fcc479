"""A change answers the status the mailout is in once it is done, as a create does: a scheduled mailout whose
start is moved to now answers `running`, and the real engine then sends it."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest

from mailer.settings import Settings
from tests.conftest import AiohttpClient
from tests.engine_support import FAST_ENGINE, iso, now, start_sandbox, start_service
from tests.polling import eventually

CUSTOMERS = 2


@pytest.mark.parametrize("method", ["PATCH", "PUT"])
async def test_a_change_that_brings_the_start_answers_running_and_sends(
    aiohttp_client: AiohttpClient, settings_factory: Callable[..., Settings], method: str
) -> None:
    sandbox = await start_sandbox()
    try:
        service = await start_service(
            aiohttp_client, settings_factory(provider_url=sandbox.url, **FAST_ENGINE)
        )
        await service.customers(CUSTOMERS)
        later = await service.mailout(start_at=now() + timedelta(hours=1), end_at=now() + timedelta(hours=2))
        assert later["status"] == "scheduled"
        path = f"/api/mailouts/{later['id']}"
        start_at, end_at = iso(now() - timedelta(seconds=1)), iso(now() + timedelta(minutes=10))
        if method == "PATCH":
            resp = await service.api.patch(path, json={"start_at": start_at})
        else:
            body = {
                "start_at": start_at,
                "end_at": end_at,
                "text": later["text"],
                "filter": later["filter"],
                "send_window": None,
            }
            resp = await service.api.put(path, json=body)
        assert resp.status == 200, await resp.text()
        assert (await resp.json())["status"] == "running"
        assert (await service.get(path))["status"] == "running"

        async def all_sent() -> bool:
            return (await service.statuses(later["id"])).get("sent") == CUSTOMERS

        await eventually(all_sent, what="every message of the changed mailout sent")
        assert len(sandbox.counts()) == CUSTOMERS
    finally:
        await sandbox.server.close()


async def test_a_change_that_keeps_the_start_ahead_answers_scheduled(
    aiohttp_client: AiohttpClient, settings_factory: Callable[..., Settings]
) -> None:
    sandbox = await start_sandbox()
    try:
        service = await start_service(
            aiohttp_client, settings_factory(provider_url=sandbox.url, **FAST_ENGINE)
        )
        later = await service.mailout(start_at=now() + timedelta(hours=1), end_at=now() + timedelta(hours=2))
        resp = await service.api.patch(f"/api/mailouts/{later['id']}", json={"text": "changed"})
        assert resp.status == 200, await resp.text()
        assert (await resp.json())["status"] == "scheduled"
    finally:
        await sandbox.server.close()
