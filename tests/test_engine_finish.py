"""A mailout whose every message is final is finished at once, not at its end; a message added to it before
its end reopens it; a create whose start has come answers `running`. On both databases, real engine."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from mailer.store.tables import mailouts
from tests.engine_fixtures import sandbox_fixture, service_fixture  # noqa: F401 (fixtures)
from tests.engine_support import Service, now
from tests.polling import eventually


async def status_of(service: Service, mailout_id: int) -> str:
    return str((await service.get(f"/api/mailouts/{mailout_id}"))["status"])


async def finished_at(service: Service, mailout_id: int) -> object:
    async with service.db.connect() as conn:
        return await conn.scalar(select(mailouts.c.finished_at).where(mailouts.c.id == mailout_id))


async def test_a_mailout_is_finished_as_soon_as_every_message_is_final(service: Service) -> None:
    await service.customers(5)
    started = now()
    mailout = await service.mailout(end_at=started + timedelta(hours=1))
    assert mailout["status"] == "running"

    async def done() -> bool:
        return await status_of(service, mailout["id"]) == "finished"

    await eventually(done, what="finished before its end")
    assert (await service.statuses(mailout["id"])) == {"sent": 5}
    at = await finished_at(service, mailout["id"])
    assert isinstance(at, type(started))
    assert started <= at < started + timedelta(minutes=1)


async def test_a_future_start_answers_scheduled(service: Service) -> None:
    mailout = await service.mailout(start_at=now() + timedelta(hours=1), end_at=now() + timedelta(hours=2))
    assert mailout["status"] == "scheduled"


async def test_a_message_added_to_a_finished_mailout_before_its_end_reopens_it(service: Service) -> None:
    await service.customers(2, tag="first")
    late = await service.customer("79005550000", tag="later")
    mailout = await service.mailout(end_at=now() + timedelta(hours=1), tags=["first"])

    async def done() -> bool:
        return await status_of(service, mailout["id"]) == "finished"

    await eventually(done, what="finished")
    resp = await service.api.post(f"/api/mailouts/{mailout['id']}/messages", json={"customer_id": late})
    assert resp.status == 201, await resp.text()

    async def late_sent() -> bool:
        rows = await service.messages(mailout["id"])
        return any(r.customer_id == late and r.status == "sent" for r in rows)

    await eventually(late_sent, what="the added message sent")
    await eventually(done, what="finished again")
    assert (await service.statuses(mailout["id"])) == {"sent": 3}


async def test_a_mailout_past_its_end_takes_no_message(service: Service) -> None:
    customer = await service.customer("79005550001")
    mailout = await service.mailout(start_at=now() - timedelta(hours=2), end_at=now() - timedelta(hours=1))

    async def done() -> bool:
        return await status_of(service, mailout["id"]) == "finished"

    await eventually(done, what="finished at its end")
    resp = await service.api.post(f"/api/mailouts/{mailout['id']}/messages", json={"customer_id": customer})
    assert resp.status == 409
    assert resp.content_type == "application/problem+json"
