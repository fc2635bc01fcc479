"""The engine's SQL (mailer.store.dispatch) on both databases, with rows seeded directly."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from typing import Any

from sqlalchemy import insert, select, update

from mailer.domain.sending import AttemptRow, MessageOutcome
from mailer.domain.statuses import MailoutStatus, MessageStatus
from mailer.domain.windows import SendWindow, next_open_by_zone
from mailer.store import messages as message_store
from mailer.store.dispatch import DispatchStore
from mailer.store.tables import customers, mailouts, message_attempts, messages

NOW = datetime(2030, 1, 15, 12, 0, tzinfo=UTC)
LEASE_S = 60.0
ZONES = ("UTC", "Asia/Kathmandu", "America/New_York", "Asia/Tokyo")


async def add_customer(store: DispatchStore, n: int, *, zone: str = "UTC", tag: str | None = None) -> int:
    async with store._db.begin() as conn:
        result = await conn.execute(
            insert(customers).values(
                phone=f"7900{n:07d}",
                operator_code="900",
                tag=tag,
                timezone=zone,
                created_at=NOW,
                updated_at=NOW,
            )
        )
        key = result.inserted_primary_key
        assert key is not None
        return int(key[0])


async def add_mailout(
    store: DispatchStore,
    *,
    status: MailoutStatus = MailoutStatus.SCHEDULED,
    start_at: datetime = NOW - timedelta(minutes=1),
    end_at: datetime = NOW + timedelta(hours=1),
    window: SendWindow | None = None,
    tags: list[str] | None = None,
) -> int:
    values: dict[str, Any] = {
        "start_at": start_at,
        "end_at": end_at,
        "text": "hi",
        "operator_codes": [],
        "tags": tags or [],
        "window_start_s": _seconds(window.start) if window else None,
        "window_end_s": _seconds(window.end) if window else None,
        "status": status,
        "created_at": NOW,
        "updated_at": NOW,
        "activated_at": NOW if status is not MailoutStatus.SCHEDULED else None,
    }
    async with store._db.begin() as conn:
        result = await conn.execute(insert(mailouts).values(**values))
        key = result.inserted_primary_key
        assert key is not None
        return int(key[0])


def _seconds(value: time) -> int:
    return value.hour * 3600 + value.minute * 60 + value.second


async def rows_of(store: DispatchStore, mailout_id: int) -> list[Any]:
    async with store._db.connect() as conn:
        result = await conn.execute(
            select(messages).where(messages.c.mailout_id == mailout_id).order_by(messages.c.id)
        )
        return list(result.all())


async def activated(store: DispatchStore, mailout_id: int) -> int:
    plan = await store.load_mailout(mailout_id)
    assert plan is not None
    created = await store.activate(plan, NOW, list_max=1)
    assert created is not None
    if created.count:
        # Listed up to `list_max`, a range beyond: either way the ids are those of the new rows.
        ids = [row.id for row in await rows_of(store, mailout_id)]
        assert (created.first_id, created.last_id) == (ids[0], ids[-1])
        assert created.messages == ([] if created.count > 1 else [(ids[0], created.messages[0][1])])
    return created.count


async def test_activation_creates_the_audience_once_with_a_due_time_per_zone(store: DispatchStore) -> None:
    window = SendWindow(time(9), time(18))
    for n, zone in enumerate(ZONES * 3):
        await add_customer(store, n, zone=zone, tag="vip")
    await add_customer(store, 99, tag="other")
    mailout_id = await add_mailout(store, window=window, tags=["vip"])

    assert await activated(store, mailout_id) == len(ZONES) * 3
    plan = await store.load_mailout(mailout_id)
    assert plan is not None
    assert plan.status is MailoutStatus.RUNNING
    assert plan.window == window
    assert await store.activate(plan, NOW) is None  # only one activation wins

    expected = next_open_by_zone(NOW, window, ZONES)
    for row in await rows_of(store, mailout_id):
        assert row.status == MessageStatus.PENDING
        assert row.attempts == 0
        assert row.next_attempt_at == expected[row.timezone]
        assert row.phone.startswith("7900")
    assert await store.next_due(mailout_id) == min(expected.values())


async def test_activation_keeps_a_message_added_before_the_start(store: DispatchStore) -> None:
    """The one case where a customer may already have a message (added through the API before the start):
    activation creates the others and leaves that one as it was, with no duplicate."""
    first, second, third = [await add_customer(store, n) for n in range(3)]
    mailout_id = await add_mailout(store)
    early = await message_store.add(store._db, mailout_id, second, NOW - timedelta(minutes=5))

    plan = await store.load_mailout(mailout_id)
    assert plan is not None
    created = await store.activate(plan, NOW, list_max=10)
    assert created is not None
    assert created.count == 2
    rows = await rows_of(store, mailout_id)
    assert [pair[1] for pair in created.messages] == [first, third]
    assert sorted(row.customer_id for row in rows) == [first, second, third]
    kept = next(row for row in rows if row.customer_id == second)
    assert kept.id == early["id"]
    assert max(row.id for row in rows if row.customer_id != second) > early["id"]


async def test_a_future_or_ended_mailout_does_not_activate(store: DispatchStore) -> None:
    await add_customer(store, 1)
    future = await add_mailout(store, start_at=NOW + timedelta(seconds=1))
    ended = await add_mailout(store, start_at=NOW - timedelta(hours=2), end_at=NOW - timedelta(hours=1))
    for mailout_id in (future, ended):
        plan = await store.load_mailout(mailout_id)
        assert plan is not None
        assert await store.activate(plan, NOW) is None
    assert not await store.finish_unstarted(future, NOW)
    assert await store.finish_unstarted(ended, NOW)
    plan = await store.load_mailout(ended)
    assert plan is not None
    assert plan.status is MailoutStatus.FINISHED
    assert await rows_of(store, ended) == []
    scan = await store.scan(NOW)
    assert scan.active_ids == []
    assert scan.next_start_at == NOW + timedelta(seconds=1)


async def test_claims_take_due_messages_of_a_running_mailout_in_order(store: DispatchStore) -> None:
    for n in range(5):
        await add_customer(store, n)
    mailout_id = await add_mailout(store)
    await activated(store, mailout_id)
    ids = [row.id for row in await rows_of(store, mailout_id)]
    async with store._db.begin() as conn:
        await conn.execute(
            update(messages).where(messages.c.id == ids[0]).values(next_attempt_at=NOW + timedelta(minutes=5))
        )

    first = await store.claim(mailout_id, NOW, 3, LEASE_S)
    assert [m.id for m in first] == ids[1:4]
    rest = await store.claim(mailout_id, NOW, 10, LEASE_S)
    assert [m.id for m in rest] == ids[4:]
    assert await store.claim(mailout_id, NOW, 10, LEASE_S) == []
    rows = {row.id: row for row in await rows_of(store, mailout_id)}
    assert rows[ids[1]].status == MessageStatus.SENDING
    assert rows[ids[1]].lease_until == NOW + timedelta(seconds=LEASE_S)
    assert rows[ids[0]].status == MessageStatus.PENDING

    async with store._db.begin() as conn:
        await conn.execute(update(mailouts).values(status=MailoutStatus.PAUSED))
    assert await store.claim(mailout_id, NOW + timedelta(hours=1), 10, LEASE_S) == []


async def test_outcomes_are_recorded_in_one_batch(store: DispatchStore) -> None:
    for n in range(3):
        await add_customer(store, n)
    mailout_id = await add_mailout(store)
    await activated(store, mailout_id)
    claimed = await store.claim(mailout_id, NOW, 2, LEASE_S)
    never_claimed = (await rows_of(store, mailout_id))[2].id
    attempt = AttemptRow(NOW, 12.5, "transient", 503, "HTTP 503")
    retry_at = NOW + timedelta(seconds=3)
    await store.record(
        [
            MessageOutcome(claimed[0].id, mailout_id, MessageStatus.SENT, None, NOW, None, attempt),
            MessageOutcome(
                claimed[1].id, mailout_id, MessageStatus.PENDING, retry_at, None, "HTTP 503", attempt
            ),
            # Not in `sending`: left alone (its attempt is still history).
            MessageOutcome(never_claimed, mailout_id, MessageStatus.FAILED, None, None, "x", None),
        ],
        NOW,
    )
    rows = {row.id: row for row in await rows_of(store, mailout_id)}
    assert (rows[claimed[0].id].status, rows[claimed[0].id].attempts) == ("sent", 1)
    assert rows[claimed[0].id].sent_at == NOW
    assert rows[claimed[0].id].lease_until is None
    assert (rows[claimed[1].id].status, rows[claimed[1].id].next_attempt_at) == ("pending", retry_at)
    assert rows[claimed[1].id].last_error == "HTTP 503"
    assert rows[never_claimed].status == "pending"
    async with store._db.connect() as conn:
        attempts = (await conn.execute(select(message_attempts))).all()
    assert len(attempts) == 2
    assert {a.outcome for a in attempts} == {"transient"}


async def test_lease_recovery_follows_the_mailout(store: DispatchStore) -> None:
    for n in range(6):
        await add_customer(store, n)
    live, cancelled = await add_mailout(store), await add_mailout(store)
    for mailout_id in (live, cancelled):
        await activated(store, mailout_id)
        await store.claim(mailout_id, NOW, 10, LEASE_S)
    async with store._db.begin() as conn:
        await conn.execute(
            update(mailouts).where(mailouts.c.id == cancelled).values(status=MailoutStatus.CANCELLED)
        )
    early = await store.recover_leases(NOW + timedelta(seconds=LEASE_S / 2))
    assert early.total == 0
    later = NOW + timedelta(seconds=LEASE_S * 2)
    recovered = await store.recover_leases(later)
    assert (recovered.pending, recovered.cancelled, recovered.expired) == (6, 6, 0)
    assert {r.status for r in await rows_of(store, live)} == {"pending"}
    assert {r.status for r in await rows_of(store, cancelled)} == {"cancelled"}


async def test_finishing_is_conditional_on_the_end(store: DispatchStore) -> None:
    await add_customer(store, 1)
    mailout_id = await add_mailout(store, end_at=NOW + timedelta(minutes=1))
    await activated(store, mailout_id)
    assert await store.expire_pending(mailout_id, NOW) == 0
    assert not await store.finish(mailout_id, NOW)
    after = NOW + timedelta(minutes=2)
    assert await store.expire_pending(mailout_id, after) == 1
    assert await store.finish(mailout_id, after)
    plan = await store.load_mailout(mailout_id)
    assert plan is not None
    assert plan.status is MailoutStatus.FINISHED
    assert {r.status for r in await rows_of(store, mailout_id)} == {"expired"}


async def test_a_window_change_reschedules_pending_messages_by_zone(store: DispatchStore) -> None:
    for n, zone in enumerate(ZONES):
        await add_customer(store, n, zone=zone)
    mailout_id = await add_mailout(store)
    await activated(store, mailout_id)
    window = SendWindow(time(22), time(6))
    ids = [row.id for row in await rows_of(store, mailout_id)]
    # In chunks of two ids: each call moves the next two, and says where it stopped.
    after, moved = 0, 0
    while (done := await store.reschedule_chunk(mailout_id, window, NOW, after, 2)) is not None:
        assert done[1] <= 2
        after, moved = done[0], moved + done[1]
    assert after == max(ids)
    assert moved == len(ZONES)
    expected = next_open_by_zone(NOW, window, ZONES)
    for row in await rows_of(store, mailout_id):
        assert row.next_attempt_at == expected[row.timezone]
