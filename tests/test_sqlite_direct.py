"""SQLite's hot statements on aiosqlite's thread (`mailer/store/direct.py`): the same statements, arguments,
rows and transactions as SQLAlchemy's execute, errors as SQLAlchemy raises them, one round trip each, and
never a transaction left open on the one shared connection."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sqlite3
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import bindparam, event, insert, select
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.util import greenlet_spawn

from mailer.domain.sending import AttemptRow, MessageOutcome
from mailer.domain.statuses import MessageStatus
from mailer.store import claims, customers, mailouts, outcomes
from mailer.store.db import create_engine
from mailer.store.direct import DirectStatement, execute_in_one_transaction, fetch_all, fetch_one
from mailer.store.dispatch import DispatchStore
from mailer.store.outage import is_disconnect
from mailer.store.tables import customers as customers_table
from mailer.store.tables import mailouts as mailouts_table
from mailer.store.tables import message_attempts
from mailer.store.tables import messages as messages_table
from tests.polling import eventually
from tests.test_outcome_write import NOW, add_mailout, raw_rows, seed

# Due, oldest first, except the last two: (minutes before NOW it fell due, attempts); None is not due yet.
PENDING: list[tuple[int | None, int]] = [(30, 0), (20, 2), (20, 1), (5, 0), (1, 3), (None, 0), (None, 1)]

_NEW_CUSTOMER = DirectStatement(
    insert(customers_table)
    .values(
        phone=bindparam("new_phone"),
        operator_code="900",
        timezone="UTC",
        created_at=bindparam("new_at"),
        updated_at=bindparam("new_at"),
    )
    .returning(customers_table.c.id)
)


@pytest.fixture
def path(sqlite_template: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "mailer.db"
    shutil.copyfile(sqlite_template, copy)
    return copy


@pytest.fixture
async def db(path: Path) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(f"sqlite:///{path}")
    yield engine
    await engine.dispose()


async def driver_of(db: AsyncEngine) -> Any:
    """The aiosqlite connection behind the pool's one connection, given back to the pool."""
    pooled = await db.raw_connection()
    try:
        return pooled.driver_connection
    finally:
        await greenlet_spawn(pooled.close)


async def on_thread[T](driver: Any, call: Callable[[sqlite3.Connection], T]) -> T:
    """`call` with the sqlite3 connection, on aiosqlite's thread (sqlite3 refuses other threads)."""
    result: T = await driver._execute(lambda: call(driver._conn))
    return result


async def traced(db: AsyncEngine) -> list[str]:
    """What SQLite runs on the pool's connection from now on, as its trace callback reports it."""
    seen: list[str] = []
    await on_thread(await driver_of(db), lambda connection: connection.set_trace_callback(seen.append))
    return seen


def statements(seen: list[str]) -> list[str]:
    """The traced statements, each once (the trace repeats a statement for each trigger it fires), by their
    first word."""
    ran: list[str] = []
    for sql in seen:
        if not ran or sql != ran[-1]:
            ran.append(sql)
    return [sql.split()[0] for sql in ran]


def count_round_trips(driver: Any) -> list[int]:
    """Counts every call queued for aiosqlite's thread on `driver` (its own methods all go through it)."""
    trips = [0]
    queue: Callable[..., Awaitable[Any]] = driver._execute

    async def counted(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        trips[0] += 1
        return await queue(fn, *args, **kwargs)

    driver._execute = counted
    return trips


async def add_customer(db: AsyncEngine, phone: str) -> int:
    rows = await fetch_all(db, _NEW_CUSTOMER, {"new_phone": phone, "new_at": NOW})
    return int(rows[0]["id"])


async def add_pending(db: AsyncEngine, mailout_id: int, customer_id: int) -> list[int]:
    ids = []
    async with db.begin() as conn:
        for n, (due_minutes_ago, attempts) in enumerate(PENDING):
            due = (
                NOW + timedelta(minutes=5)
                if due_minutes_ago is None
                else NOW - timedelta(minutes=due_minutes_ago)
            )
            result = await conn.execute(
                insert(messages_table).values(
                    mailout_id=mailout_id,
                    customer_id=customer_id if n == 1 else None,  # one message per customer and mailout
                    phone=f"7911{n:07d}",
                    timezone="Asia/Kathmandu" if n % 3 else "UTC",
                    status=MessageStatus.PENDING,
                    attempts=attempts,
                    next_attempt_at=due,
                    last_error="HTTP 503" if attempts else None,
                    created_at=NOW - timedelta(hours=1),
                    updated_at=NOW - timedelta(hours=1),
                )
            )
            key = result.inserted_primary_key
            assert key is not None
            ids.append(int(key[0]))
    return ids


def claim_params(mailout_id: int, limit: int) -> dict[str, Any]:
    return {
        "claim_mailout_id": mailout_id,
        "claim_now": NOW,
        "claim_limit": limit,
        "claim_lease_until": NOW + timedelta(seconds=60),
    }


async def test_reads_by_id_are_what_sqlalchemys_execute_returns(db: AsyncEngine) -> None:
    customer_id = await add_customer(db, "79001234567")
    mailout_id = await add_mailout(db)
    async with db.begin() as conn:
        # Every kind of value: JSON lists, a window, set and unset datetimes.
        await conn.execute(
            mailouts_table.update()
            .where(mailouts_table.c.id == mailout_id)
            .values(operator_codes=["900", "916"], tags=["vip"], window_start_s=32400, window_end_s=75600)
        )
    for read, params in (
        (customers._GET, {"customer_id": customer_id}),
        (mailouts._GET, {"mailout_id": mailout_id}),
    ):
        async with db.connect() as conn:
            reference = dict((await conn.execute(read.statement, params)).mappings().one())
        row = await fetch_one(db, read, params)
        assert row is not None
        assert dict(row) == reference
        # Equal values of the same types: aware datetimes in UTC, decoded JSON.
        assert {k: (type(v), getattr(v, "tzinfo", None)) for k, v in row.items()} == {
            k: (type(v), getattr(v, "tzinfo", None)) for k, v in reference.items()
        }
    async with db.connect() as conn:
        through_sqlalchemy = await mailouts.read(conn, mailout_id)
    assert await mailouts.get(db, mailout_id) == through_sqlalchemy
    assert await fetch_one(db, customers._GET, {"customer_id": customer_id + 1}) is None


async def test_the_statements_and_arguments_are_sqlalchemys_own(db: AsyncEngine) -> None:
    mailout_id = await add_mailout(db)
    ids = await seed(db, mailout_id)
    outcome = MessageOutcome(
        ids["sent"], mailout_id, MessageStatus.SENT, None, NOW, None, AttemptRow(NOW, 1.5, "sent", 200, None)
    )
    cases: list[tuple[DirectStatement, dict[str, Any]]] = [
        (claims._SQLITE_CLAIM, claim_params(mailout_id, 64)),
        (customers._GET, {"customer_id": 1}),
        (mailouts._GET, {"mailout_id": mailout_id}),
        (
            outcomes._SQLITE_RECORD,
            {
                "rows": outcomes._sqlite_json(
                    [{"b_id": outcome.message_id, "b_status": "sent", "b_sent": NOW}]
                ),
                "now": NOW,
            },
        ),
        (outcomes._SQLITE_ATTEMPTS, {"rows": outcomes._sqlite_json([{"message_id": outcome.message_id}])}),
    ]
    sent: list[tuple[str, Any]] = []

    def statement(_conn: Any, _cursor: Any, sql: str, params: Any, _context: Any, _many: bool) -> None:
        sent.append((sql, params))

    event.listen(db.sync_engine, "before_cursor_execute", statement)
    try:
        for direct, params in cases:
            async with db.connect() as conn:
                # A row with nulls breaks NOT NULL: what was sent is what counts here.
                with contextlib.suppress(IntegrityError):
                    await conn.execute(direct.statement, params)
                await conn.rollback()
    finally:
        event.remove(db.sync_engine, "before_cursor_execute", statement)
    assert [(sql, list(args)) for sql, args in sent] == [
        direct.sqlite_step(params) for direct, params in cases
    ]


async def test_a_claim_returns_and_writes_what_sqlalchemys_execute_did(path: Path, tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{path}")
    mailout_id = await add_mailout(engine)
    await add_pending(engine, mailout_id, await add_customer(engine, "79001234567"))
    await engine.dispose()  # the last connection closing checkpoints the WAL into the file
    old_path, new_path = tmp_path / "old.db", tmp_path / "new.db"
    shutil.copyfile(path, old_path)
    shutil.copyfile(path, new_path)

    old, new = create_engine(f"sqlite:///{old_path}"), create_engine(f"sqlite:///{new_path}")
    try:
        # Three, then the other two that are due, then none.
        for limit, taken in ((3, 3), (64, 2), (64, 0)):
            params = claim_params(mailout_id, limit)
            async with old.begin() as conn:
                result = await conn.execute(claims._SQLITE_CLAIM.statement, params)
                reference = [dict(row) for row in result.mappings()]
            rows = await fetch_all(new, claims._SQLITE_CLAIM, params)
            assert [dict(row) for row in rows] == reference
            assert len(rows) == taken
    finally:
        await old.dispose()
        await new.dispose()
    assert raw_rows(new_path) == raw_rows(old_path)
    statuses = [row[10] for row in raw_rows(new_path)["messages"]]
    assert statuses == ["sending"] * 5 + ["pending"] * 2


async def test_a_claim_is_one_transaction_in_one_round_trip(db: AsyncEngine) -> None:
    mailout_id = await add_mailout(db)
    await add_pending(db, mailout_id, await add_customer(db, "79001234567"))
    seen = await traced(db)
    driver = await driver_of(db)
    trips = count_round_trips(driver)

    claimed = await DispatchStore(db).claim(mailout_id, NOW, 64, 60)

    assert [m.attempts for m in claimed] == [0, 2, 1, 0, 3]
    # As SQLAlchemy's path: sqlite3 began a deferred transaction before the UPDATE, then COMMIT.
    assert statements(seen) == ["BEGIN", "UPDATE", "COMMIT"]
    # No round trip for the cursor, the fetch, the commit or the pool's rollback on return.
    assert trips[0] == 1
    assert not await on_thread(driver, lambda connection: connection.in_transaction)


async def test_a_read_runs_outside_any_transaction_in_one_round_trip(db: AsyncEngine) -> None:
    customer_id = await add_customer(db, "79001234567")
    seen = await traced(db)
    trips = count_round_trips(await driver_of(db))

    assert (await customers.get(db, customer_id))["phone"] == "79001234567"

    assert statements(seen) == ["SELECT"]
    assert trips[0] == 1


async def test_a_failing_insert_rolls_the_update_back_and_leaves_no_transaction_open(
    db: AsyncEngine, path: Path
) -> None:
    mailout_id = await add_mailout(db)
    ids = await seed(db, mailout_id)
    attempt = AttemptRow(NOW, 8.5, "sent", 200, None)
    sent = [
        MessageOutcome(ids[name], mailout_id, MessageStatus.SENT, None, NOW, None, attempt)
        for name in ("sent", "failed")
    ]
    # The UPDATE of both messages succeeds; the second attempt names a mailout that does not exist, so the
    # INSERT fails its foreign key.
    orphan = MessageOutcome(ids["failed"], mailout_id + 1, MessageStatus.SENT, None, NOW, None, attempt)
    batch = [sent[0], orphan]
    before = raw_rows(path)
    seen = await traced(db)
    driver = await driver_of(db)

    with pytest.raises(IntegrityError) as raised:
        await DispatchStore(db).record(batch, NOW)

    assert isinstance(raised.value.orig, sqlite3.IntegrityError)
    assert statements(seen) == ["BEGIN", "UPDATE", "INSERT", "ROLLBACK"]
    assert raw_rows(path) == before
    assert not await on_thread(driver, lambda connection: connection.in_transaction)
    # The same connection is kept (the error was the statement's, not the connection's), and it works.
    assert await driver_of(db) is driver
    await DispatchStore(db).record(sent, NOW)
    async with db.connect() as conn:
        written = (
            (
                await conn.execute(
                    select(messages_table.c.status).where(
                        messages_table.c.id.in_([ids["sent"], ids["failed"]])
                    )
                )
            )
            .scalars()
            .all()
        )
        attempts = (await conn.execute(select(message_attempts.c.message_id))).scalars().all()
    assert (written, attempts) == (["sent", "sent"], [ids["sent"], ids["failed"]])


async def test_an_integrity_error_arrives_as_sqlalchemys(db: AsyncEngine) -> None:
    await add_customer(db, "79001234567")
    again = {"new_phone": "79001234567", "new_at": NOW}
    for attempt in (
        lambda: fetch_all(db, _NEW_CUSTOMER, again),
        lambda: execute_in_one_transaction(db, [(_NEW_CUSTOMER, again)]),
    ):
        with pytest.raises(IntegrityError) as raised:
            await attempt()
        assert isinstance(raised.value.orig, sqlite3.IntegrityError)
        assert isinstance(raised.value.__cause__, sqlite3.IntegrityError)
        assert "UNIQUE constraint failed: customers.phone" in str(raised.value)
        assert not raised.value.connection_invalidated
        assert not is_disconnect(raised.value)


async def test_a_closed_connection_is_a_disconnect_and_is_replaced(db: AsyncEngine) -> None:
    customer_id = await add_customer(db, "79001234567")
    pooled = await db.raw_connection()
    driver = pooled.driver_connection
    assert driver is not None
    await on_thread(driver, lambda connection: connection.close())
    # Back to the pool as it is: the pool's own rollback would find the closed connection first.
    await greenlet_spawn(pooled._close_special, True)

    with pytest.raises(DBAPIError) as raised:
        await customers.get(db, customer_id)

    # What the outage handling rides out, and the API answers 503 with Retry-After.
    assert raised.value.connection_invalidated
    assert is_disconnect(raised.value)
    assert (await customers.get(db, customer_id))["id"] == customer_id
    assert await driver_of(db) is not driver


async def test_a_cancelled_claim_runs_to_its_end_and_leaves_no_transaction_open(db: AsyncEngine) -> None:
    mailout_id = await add_mailout(db)
    pending = await add_pending(db, mailout_id, await add_customer(db, "79001234567"))
    driver = await driver_of(db)
    # aiosqlite's thread busy with something else, so that the claim is cancelled while it waits its turn.
    gate = threading.Event()
    busy = asyncio.ensure_future(driver._execute(gate.wait, 10))
    claim = asyncio.create_task(DispatchStore(db).claim(mailout_id, NOW, 64, 60))

    async def claim_waiting() -> bool:
        return bool(driver._tx.qsize() == 1)

    await eventually(claim_waiting, what="the claim queued for aiosqlite's thread")
    claim.cancel()
    gate.set()
    with pytest.raises(asyncio.CancelledError):
        await claim
    assert await busy

    # The claim ran whole (its leases expire like any other's), nothing is left open, and the connection
    # serves on.
    assert not await on_thread(driver, lambda connection: connection.in_transaction)
    assert await driver_of(db) is driver
    async with db.connect() as conn:
        statuses = (
            (await conn.execute(select(messages_table.c.status).where(messages_table.c.id.in_(pending))))
            .scalars()
            .all()
        )
    assert sorted(statuses) == ["pending"] * 2 + ["sending"] * 5
    assert len(await DispatchStore(db).claim(mailout_id, NOW + timedelta(minutes=10), 64, 60)) == 2
