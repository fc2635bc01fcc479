"""The recorder's batch write (`OutcomeQueries.record`) on both databases: every column of a mixed batch, the
counters, a message deleted between claim and record; on SQLite the rows equal, byte for byte, those of the
executemany write it replaced, and a batch is two statements whatever its size, in one transaction."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Table, bindparam, delete, func, insert, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.util import greenlet_spawn

from mailer.domain.sending import AttemptRow, MessageOutcome
from mailer.domain.statuses import MailoutStatus, MessageStatus
from mailer.engine.recorder import Recorder
from mailer.store import direct
from mailer.store.coltypes import UTCDateTime
from mailer.store.db import create_engine
from mailer.store.dispatch import DispatchStore
from mailer.store.tables import mailouts, message_attempts, messages

# Microseconds everywhere but in SENT_AT (stored as ".000000"), and one due time given in another zone: the
# stored text must be the UTC form UTCDateTime writes, whatever the datetime handed in.
NOW = datetime(2030, 1, 15, 12, 0, 0, 123456, tzinfo=UTC)
SEEDED = NOW - timedelta(minutes=5)
LEASE = NOW + timedelta(minutes=1)
SENT_AT = datetime(2030, 1, 15, 11, 59, 59, tzinfo=UTC)
RETRY_AT = datetime(2030, 1, 15, 17, 45, 30, 500, tzinfo=timezone(timedelta(hours=5, minutes=45)))
STARTED = NOW - timedelta(milliseconds=40)

SENT_ATTEMPT = AttemptRow(STARTED, 38.5, "sent", 200, None)
REJECTED_ATTEMPT = AttemptRow(STARTED, 12.25, "rejected", 400, "HTTP 400: bad phone")
TRANSIENT_ATTEMPT = AttemptRow(STARTED, 1000.0625, "transient", 503, "HTTP 503")
# The seeded rows: name -> (status, attempts, last_error, sent_at, lease_until).
SEEDS: dict[str, tuple[MessageStatus, int, str | None, datetime | None, datetime | None]] = {
    "sent": (MessageStatus.SENDING, 0, None, None, LEASE),
    "failed": (MessageStatus.SENDING, 2, "HTTP 503", None, LEASE),
    "retried": (MessageStatus.SENDING, 1, "timeout", None, LEASE),
    # Given back by the breaker: no request made, no due time in the outcome.
    "given_back": (MessageStatus.SENDING, 3, "kept", None, LEASE),
    # An earlier sent_at and error survive an outcome that carries neither (COALESCE).
    "cancelled": (MessageStatus.SENDING, 1, "earlier", SENT_AT - timedelta(hours=1), LEASE),
    # Recovered by lease expiry meanwhile: no longer in `sending`, so its row must not change.
    "recovered": (MessageStatus.PENDING, 1, "timeout", None, None),
}


async def add_mailout(db: AsyncEngine) -> int:
    async with db.begin() as conn:
        result = await conn.execute(
            insert(mailouts).values(
                start_at=SEEDED,
                end_at=NOW + timedelta(hours=1),
                text="hi",
                operator_codes=[],
                tags=[],
                status=MailoutStatus.RUNNING,
                created_at=SEEDED,
                updated_at=SEEDED,
                activated_at=SEEDED,
            )
        )
        key = result.inserted_primary_key
        assert key is not None
        return int(key[0])


async def seed(db: AsyncEngine, mailout_id: int) -> dict[str, int]:
    """One message per entry of SEEDS, in that order; their ids by name."""
    ids = {}
    async with db.begin() as conn:
        for n, (name, (status, attempts, last_error, sent_at, lease_until)) in enumerate(SEEDS.items()):
            result = await conn.execute(
                insert(messages).values(
                    mailout_id=mailout_id,
                    phone=f"7900{mailout_id:03d}{n:04d}",
                    timezone="UTC",
                    status=status,
                    attempts=attempts,
                    next_attempt_at=SEEDED if status is MessageStatus.PENDING else None,
                    lease_until=lease_until,
                    sent_at=sent_at,
                    last_error=last_error,
                    created_at=SEEDED,
                    updated_at=SEEDED,
                )
            )
            key = result.inserted_primary_key
            assert key is not None
            ids[name] = int(key[0])
    return ids


def mixed_batch(ids: dict[str, int], mailout_id: int) -> list[MessageOutcome]:
    def outcome(
        name: str,
        status: MessageStatus,
        next_at: datetime | None,
        sent_at: datetime | None,
        error: str | None,
        attempt: AttemptRow | None,
    ) -> MessageOutcome:
        return MessageOutcome(ids[name], mailout_id, status, next_at, sent_at, error, attempt)

    return [
        outcome("sent", MessageStatus.SENT, None, SENT_AT, None, SENT_ATTEMPT),
        outcome("failed", MessageStatus.FAILED, None, None, "HTTP 400: bad phone", REJECTED_ATTEMPT),
        outcome("retried", MessageStatus.PENDING, RETRY_AT, None, "HTTP 503", TRANSIENT_ATTEMPT),
        outcome("given_back", MessageStatus.PENDING, None, None, None, None),
        outcome("cancelled", MessageStatus.CANCELLED, None, None, None, None),
        # Its attempt is still history and is kept, as before; the row itself stays as the recovery left it.
        outcome("recovered", MessageStatus.SENT, None, SENT_AT, None, SENT_ATTEMPT),
    ]


async def rows(db: AsyncEngine, table: Table) -> list[dict[str, Any]]:
    async with db.connect() as conn:
        result = await conn.execute(select(table).order_by(table.c.id))
        return [dict(row._mapping) for row in result]


async def counters(db: AsyncEngine) -> dict[str, dict[tuple[int, str], int]]:
    """Each counter table beside a fresh GROUP BY of what it counts (rows at zero left out)."""
    found = {}
    async with db.connect() as conn:
        for counts, table, column in (
            ("mailout_message_counts", "messages", "status"),
            ("mailout_attempt_counts", "message_attempts", "outcome"),
        ):
            kept = await conn.execute(text(f"SELECT mailout_id, {column}, n FROM {counts} WHERE n <> 0"))
            found[counts] = {(int(m), str(key)): int(n) for m, key, n in kept}
            fresh = await conn.execute(
                text(f"SELECT mailout_id, {column}, count(*) FROM {table} GROUP BY mailout_id, {column}")
            )
            found[f"{counts} by GROUP BY"] = {(int(m), str(key)): int(n) for m, key, n in fresh}
    return found


async def test_a_mixed_batch_writes_every_column_and_the_counters(store: DispatchStore) -> None:
    db = store._db
    mailout_id = await add_mailout(db)
    ids = await seed(db, mailout_id)
    before = {row["id"]: row for row in await rows(db, messages)}

    await store.record(mixed_batch(ids, mailout_id), NOW)

    after = {row["id"]: row for row in await rows(db, messages)}
    changed: dict[str, Any] = {"lease_until": None, "updated_at": NOW}
    expected: dict[int, dict[str, Any]] = {
        ids["sent"]: changed | {"status": "sent", "attempts": 1, "sent_at": SENT_AT},
        ids["failed"]: changed | {"status": "failed", "attempts": 3, "last_error": "HTTP 400: bad phone"},
        ids["retried"]: changed
        | {"status": "pending", "attempts": 2, "next_attempt_at": RETRY_AT, "last_error": "HTTP 503"},
        # A pending row without a due time would never be claimed again: it is due now.
        ids["given_back"]: changed | {"status": "pending", "next_attempt_at": NOW},
        ids["cancelled"]: changed | {"status": "cancelled"},
        ids["recovered"]: {},
    }
    assert after == {i: before[i] | columns for i, columns in expected.items()}

    attempts = await rows(db, message_attempts)
    assert [{k: v for k, v in a.items() if k != "id"} for a in attempts] == [
        {
            "message_id": ids[name],
            "mailout_id": mailout_id,
            "started_at": STARTED,
            "duration_ms": attempt.duration_ms,
            "outcome": attempt.outcome,
            "http_status": attempt.http_status,
            "error": attempt.error,
        }
        for name, attempt in (
            ("sent", SENT_ATTEMPT),
            ("failed", REJECTED_ATTEMPT),
            ("retried", TRANSIENT_ATTEMPT),
            ("recovered", SENT_ATTEMPT),
        )
    ]
    # Ids follow the batch's order.
    assert [a["id"] for a in attempts] == sorted(a["id"] for a in attempts)

    counted = await counters(db)
    assert counted["mailout_message_counts"] == {
        (mailout_id, "sent"): 1,
        (mailout_id, "failed"): 1,
        (mailout_id, "pending"): 3,
        (mailout_id, "cancelled"): 1,
    }
    assert counted["mailout_attempt_counts"] == {
        (mailout_id, "sent"): 2,
        (mailout_id, "rejected"): 1,
        (mailout_id, "transient"): 1,
    }
    for counts in ("mailout_message_counts", "mailout_attempt_counts"):
        assert counted[counts] == counted[f"{counts} by GROUP BY"]


async def test_a_batch_with_a_message_deleted_meanwhile_fails_whole_and_the_recorder_saves_the_rest(
    store: DispatchStore,
) -> None:
    db = store._db
    kept_mailout, deleted_mailout = await add_mailout(db), await add_mailout(db)
    kept_ids = await seed(db, kept_mailout)
    deleted_ids = await seed(db, deleted_mailout)
    async with db.begin() as conn:
        await conn.execute(delete(mailouts).where(mailouts.c.id == deleted_mailout))
    # Interleaved, as outcomes of two mailouts arrive at the one recorder.
    batch = [
        o
        for pair in zip(
            mixed_batch(kept_ids, kept_mailout), mixed_batch(deleted_ids, deleted_mailout), strict=True
        )
        for o in pair
    ]

    # The attempt of a deleted message breaks its foreign key: nothing of the batch is written.
    with pytest.raises(IntegrityError):
        await store.record(batch, NOW)
    assert {row["status"] for row in await rows(db, messages)} == {"sending", "pending"}
    assert await rows(db, message_attempts) == []

    recorder = Recorder(store.record, lambda: NOW)
    task = asyncio.create_task(recorder.run())
    try:
        for o in batch:
            await recorder.submit(o)
        async with asyncio.timeout(30):
            await recorder.flush()
    finally:
        task.cancel()
        await asyncio.wait([task])

    statuses = {row["id"]: row["status"] for row in await rows(db, messages)}
    assert statuses == {
        kept_ids["sent"]: "sent",
        kept_ids["failed"]: "failed",
        kept_ids["retried"]: "pending",
        kept_ids["given_back"]: "pending",
        kept_ids["cancelled"]: "cancelled",
        kept_ids["recovered"]: "pending",
    }
    attempts = await rows(db, message_attempts)
    assert [(a["message_id"], a["outcome"]) for a in attempts] == [
        (kept_ids["sent"], "sent"),
        (kept_ids["failed"], "rejected"),
        (kept_ids["retried"], "transient"),
        (kept_ids["recovered"], "sent"),
    ]
    counted = await counters(db)
    for counts in ("mailout_message_counts", "mailout_attempt_counts"):
        assert counted[counts] == counted[f"{counts} by GROUP BY"]
        assert {m for m, _ in counted[counts]} == {kept_mailout}


# --- SQLite only: the write this one replaced, as the reference ---------------------------------------------

_BEFORE_UPDATE = (
    update(messages)
    .where(messages.c.id == bindparam("b_id"), messages.c.status == MessageStatus.SENDING)
    .values(
        status=bindparam("b_status"),
        attempts=messages.c.attempts + bindparam("b_inc"),
        next_attempt_at=bindparam("b_next", type_=UTCDateTime),
        sent_at=func.coalesce(bindparam("b_sent", type_=UTCDateTime), messages.c.sent_at),
        last_error=func.coalesce(bindparam("b_error"), messages.c.last_error),
        lease_until=None,
        updated_at=bindparam("b_now", type_=UTCDateTime),
    )
)


async def record_as_before(db: AsyncEngine, outcomes: Sequence[MessageOutcome], now: datetime) -> None:
    """The SQLite write up to this change: an executemany UPDATE, then the attempts as multi-row VALUES."""
    message_params = [
        {
            "b_id": o.message_id,
            "b_status": o.status.value,
            "b_inc": 1 if o.attempt is not None else 0,
            "b_next": o.next_attempt_at or (now if o.status is MessageStatus.PENDING else None),
            "b_sent": o.sent_at,
            "b_error": o.error,
            "b_now": now,
        }
        for o in outcomes
    ]
    attempt_params = [
        {
            "message_id": o.message_id,
            "mailout_id": o.mailout_id,
            "started_at": o.attempt.started_at,
            "duration_ms": o.attempt.duration_ms,
            "outcome": o.attempt.outcome,
            "http_status": o.attempt.http_status,
            "error": o.attempt.error,
        }
        for o in outcomes
        if o.attempt is not None
    ]
    async with db.begin() as conn:
        await conn.execute(_BEFORE_UPDATE, message_params)
        await conn.execute(message_attempts.insert(), attempt_params)


def raw_rows(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the written tables as SQLite holds it: each value with its storage class."""
    tables = {
        "messages": [c.name for c in messages.columns],
        "message_attempts": [c.name for c in message_attempts.columns],
        "mailout_message_counts": ["mailout_id", "status", "n"],
        "mailout_attempt_counts": ["mailout_id", "outcome", "n"],
    }
    with sqlite3.connect(path) as conn:
        return {
            table: conn.execute(
                f"SELECT {', '.join(f'{c}, typeof({c})' for c in columns)} FROM {table} ORDER BY 1, 3"
            ).fetchall()
            for table, columns in tables.items()
        }


async def test_sqlite_rows_equal_those_of_the_executemany_write_byte_for_byte(
    sqlite_template: Path, tmp_path: Path
) -> None:
    seeded, new, old = tmp_path / "seeded.db", tmp_path / "new.db", tmp_path / "old.db"
    shutil.copyfile(sqlite_template, seeded)
    engine = create_engine(f"sqlite:///{seeded}")
    mailout_id = await add_mailout(engine)
    ids = await seed(engine, mailout_id)
    await engine.dispose()  # the last connection closing checkpoints the WAL into the file
    shutil.copyfile(seeded, new)
    shutil.copyfile(seeded, old)
    batch = mixed_batch(ids, mailout_id)

    new_engine, old_engine = create_engine(f"sqlite:///{new}"), create_engine(f"sqlite:///{old}")
    try:
        await DispatchStore(new_engine).record(batch, NOW)
        await record_as_before(old_engine, batch, NOW)
    finally:
        await new_engine.dispose()
        await old_engine.dispose()

    written, reference = raw_rows(new), raw_rows(old)
    assert written == reference
    # Not equal by being both empty or both untouched: the batch did write.
    statuses = [row[10] for row in written["messages"]]
    assert statuses == ["sent", "failed", "pending", "pending", "cancelled", "pending"]
    assert len(written["message_attempts"]) == 4
    assert written["messages"][0][-2:] == ("2030-01-15 12:00:00.123456", "text")


async def test_sqlite_a_batch_is_two_statements_whatever_its_size(
    sqlite_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "mailer.db"
    shutil.copyfile(sqlite_template, path)
    engine = create_engine(f"sqlite:///{path}")
    store = DispatchStore(engine)
    # The statements handed to aiosqlite's thread, one list per transaction, before their values are bound.
    transactions: list[list[str]] = []
    in_one_transaction = direct._sqlite_transaction

    def recorded(connection: sqlite3.Connection, steps: list[direct.SQLiteStep]) -> list[Any]:
        transactions.append([sql for sql, _ in steps])
        return in_one_transaction(connection, steps)

    monkeypatch.setattr(direct, "_sqlite_transaction", recorded)
    # And what SQLite itself ran (the trace repeats a statement for each trigger it fires).
    ran: list[str] = []
    pooled = await engine.raw_connection()
    driver = pooled.driver_connection
    assert driver is not None
    await driver._execute(lambda: driver._conn.set_trace_callback(ran.append))
    await greenlet_spawn(pooled.close)

    batches: list[list[str]] = []
    try:
        mailout_id = await add_mailout(engine)
        # A batch of one, of two, of all six: the statements must not depend on the size.
        for size in (1, 2, len(SEEDS)):
            ids = await seed(engine, mailout_id)
            transactions.clear()
            ran.clear()
            await store.record(mixed_batch(ids, mailout_id)[:size], NOW)
            assert len(transactions) == 1
            batches.append(transactions[0])
            statements = [sql for n, sql in enumerate(ran) if n == 0 or sql != ran[n - 1]]
            assert [sql.split()[0] for sql in statements] == ["BEGIN", "UPDATE", "INSERT", "COMMIT"]
    finally:
        await engine.dispose()
    assert len(batches[0]) == 2
    assert batches[0] == batches[1] == batches[2]
