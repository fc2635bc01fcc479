"""A window change on a running mailout: pending due times are rewritten in chunks beside the sending, and the
messages the new window lets go are sent at once. Real engine, both databases."""

from __future__ import annotations

from datetime import timedelta

import pytest

from mailer.engine import rescheduler
from tests.engine_fixtures import sandbox_fixture, service_fixture  # noqa: F401 (fixtures)
from tests.engine_support import Sandbox, Service, now
from tests.polling import eventually

CUSTOMERS = 7
# Smaller than the audience, so that the rewrite takes several chunks.
CHUNK = 2


async def test_opening_the_window_sends_what_waited_for_it(
    service: Service, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rescheduler, "RESCHEDULE_CHUNK", CHUNK)
    await service.customers(CUSTOMERS)
    instant = now()
    # Closed now in UTC: a one-hour window starting two hours from now.
    start = (instant + timedelta(hours=2)).strftime("%H:00")
    end = (instant + timedelta(hours=3)).strftime("%H:00")
    mailout = await service.mailout(window=(start, end))

    async def waiting() -> bool:
        rows = await service.messages(mailout["id"])
        return len(rows) == CUSTOMERS and all(r.next_attempt_at > now() for r in rows)

    await eventually(waiting, what="every message waits for the window")
    assert sandbox.counts() == {}
    resp = await service.api.patch(f"/api/mailouts/{mailout['id']}", json={"send_window": None})
    assert resp.status == 200, await resp.text()

    async def all_sent() -> bool:
        return (await service.statuses(mailout["id"])).get("sent") == CUSTOMERS

    await eventually(all_sent, what="every message sent once the window opened")
    assert set(sandbox.counts().values()) == {1}
