"""The lease keeper and `DispatchStore.renew_leases`; `is_disconnect` from the outage helpers."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import insert, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError

from mailer.domain.statuses import MailoutStatus, MessageStatus
from mailer.engine.leases import LeaseKeeper
from mailer.store.dispatch import RENEW_CHUNK, DispatchStore
from mailer.store.outage import is_disconnect
from mailer.store.tables import customers, mailouts, messages

NOW = datetime(2030, 1, 15, 12, 0, tzinfo=UTC)
LEASE_S = 3.0


async def _running_mailout(store: DispatchStore, size: int) -> int:
    """A running mailout with `size` pending messages, due now (rows written directly: no activation)."""
    async with store._db.begin() as conn:
        mailout_id = (
            await conn.execute(
                insert(mailouts)
                .values(
                    start_at=NOW - timedelta(minutes=1),
                    end_at=NOW + timedelta(hours=1),
                    text="hi",
                    operator_codes=[],
                    tags=[],
                    status=MailoutStatus.RUNNING,
                    created_at=NOW,
                    updated_at=NOW,
                    activated_at=NOW,
                )
                .returning(mailouts.c.id)
            )
        ).scalar_one()
        people = [
            {"phone": f"7900{n:07d}", "operator_code": "900", "timezone": "UTC", "created_at": NOW}
            for n in range(size)
        ]
        ids = (
            await conn.execute(
                insert(customers).returning(customers.c.id), [p | {"updated_at": NOW} for p in people]
            )
        ).scalars()
        await conn.execute(
            insert(messages),
            [
                {
                    "mailout_id": mailout_id,
                    "customer_id": customer_id,
                    "phone": "79000000000",
                    "timezone": "UTC",
                    "status": MessageStatus.PENDING,
                    "attempts": 0,
                    "next_attempt_at": NOW,
                    "created_at": NOW,
                    "updated_at": NOW,
                }
                for customer_id in ids
            ],
        )
    return int(mailout_id)


async def _leases(store: DispatchStore, mailout_id: int) -> dict[int, datetime | None]:
    async with store._db.connect() as conn:
        rows = await conn.execute(
            select(messages.c.id, messages.c.lease_until).where(messages.c.mailout_id == mailout_id)
        )
        return {row.id: row.lease_until for row in rows}


async def test_renewal_pushes_the_leases_of_sending_rows_only(store: DispatchStore) -> None:
    mailout_id = await _running_mailout(store, 5)
    claimed = await store.claim(mailout_id, NOW, 4, LEASE_S)
    ids = [m.id for m in claimed]
    # One of them has its outcome recorded meanwhile: it is no longer ours to renew.
    async with store._db.begin() as conn:
        await conn.execute(
            update(messages)
            .where(messages.c.id == ids[0])
            .values(status=MessageStatus.SENT, lease_until=None)
        )
    until = NOW + timedelta(seconds=30)

    assert await store.renew_leases(ids, until) == 3

    leases = await _leases(store, mailout_id)
    assert [leases[i] for i in ids] == [None, until, until, until]
    assert sum(1 for lease in leases.values() if lease is None) == 2  # the sent one and the unclaimed one


async def test_renewal_goes_in_chunks(store: DispatchStore) -> None:
    mailout_id = await _running_mailout(store, 3)
    claimed = await store.claim(mailout_id, NOW, 3, LEASE_S)
    # Ids nobody has are harmless; enough of them to need several statements.
    ids = [m.id for m in claimed] + list(range(10**9, 10**9 + RENEW_CHUNK + 5))
    assert await store.renew_leases(ids, NOW + timedelta(seconds=9)) == 3


class _FakeStore:
    def __init__(self) -> None:
        self.rounds: list[tuple[list[int], datetime]] = []
        self.renewed = asyncio.Event()
        self.failures: list[BaseException] = []

    async def renew_leases(self, ids: Sequence[int], until: datetime) -> int:
        if self.failures:
            raise self.failures.pop(0)
        self.rounds.append((list(ids), until))
        self.renewed.set()
        return len(ids)


async def test_the_keeper_renews_what_the_pool_holds_one_lease_ahead() -> None:
    fake = _FakeStore()
    held = [3, 1, 3, 2]
    keeper = LeaseKeeper(fake, lambda: held, lease_s=0.03, clock=lambda: NOW)
    assert await keeper.renew_once() == 3
    assert fake.rounds == [([1, 2, 3], NOW + timedelta(seconds=0.03))]
    held.clear()
    assert await keeper.renew_once() == 0
    assert len(fake.rounds) == 1  # nothing held, no query


async def test_the_keeper_rides_out_a_database_outage_but_not_a_bug() -> None:
    fake = _FakeStore()
    fake.failures.append(ConnectionResetError("gone"))
    keeper = LeaseKeeper(fake, lambda: [7], lease_s=0.03)
    task = asyncio.create_task(keeper.run())
    try:
        async with asyncio.timeout(5):
            await fake.renewed.wait()
    finally:
        task.cancel()
        await asyncio.wait({task})
    assert fake.rounds[0][0] == [7]

    fake.failures.append(ValueError("a bug"))
    with pytest.raises(ValueError, match="a bug"):
        await LeaseKeeper(fake, lambda: [7], lease_s=0.03).run()


def test_is_disconnect_tells_an_outage_from_a_bad_statement() -> None:
    class Orig(Exception):
        def __init__(self, sqlstate: str | None) -> None:
            super().__init__("orig")
            self.sqlstate = sqlstate

    assert is_disconnect(ConnectionRefusedError())
    assert is_disconnect(TimeoutError())
    assert is_disconnect(DBAPIError("SELECT 1", None, Orig("57P01")))
    assert is_disconnect(DBAPIError("SELECT 1", None, Orig("08006")))
    assert is_disconnect(DBAPIError("SELECT 1", None, Orig(None), connection_invalidated=True))
    assert not is_disconnect(IntegrityError("INSERT", None, Orig("23505")))
    assert not is_disconnect(DBAPIError("UPDATE", None, Orig("40P01")))  # a deadlock is not an outage
    assert not is_disconnect(ValueError())
