"""The counters kept by database triggers equal a fresh GROUP BY after any sequence of raw SQL writes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from mailer.domain.statuses import MessageStatus, Outcome
from mailer.store.db import MIGRATIONS_DIR, async_url, create_engine
from tests.conftest import PG_ADMIN_URL
from tests.harness import create_database, drop_database

STATUSES = [s.value for s in MessageStatus]
OUTCOMES = [o.value for o in Outcome]
CUSTOMERS = 6

# Every operation picks its targets by index into what exists, so any drawn sequence is valid.
index = st.integers(min_value=0, max_value=50)
status = st.sampled_from(STATUSES)
outcome = st.sampled_from(OUTCOMES)
operation = st.one_of(
    st.tuples(st.just("create_mailout")),
    st.tuples(st.just("insert_message"), index, index, status, st.booleans()),
    st.tuples(st.just("insert_messages_bulk"), index, status, status, st.booleans()),
    st.tuples(st.just("update_status"), index, status),
    st.tuples(st.just("update_statuses_bulk"), index, status, status),
    st.tuples(st.just("update_status_noop"), index),
    st.tuples(st.just("update_other_columns"), index),
    st.tuples(st.just("move_message"), index, index),
    st.tuples(st.just("delete_messages"), index, st.integers(min_value=1, max_value=3)),
    st.tuples(st.just("delete_customer"), index),
    st.tuples(st.just("delete_mailout"), index),
    st.tuples(st.just("insert_attempt"), index, outcome),
    st.tuples(st.just("insert_attempts_bulk"), index, outcome, outcome),
    st.tuples(st.just("update_attempt_outcomes"), index, outcome),
    st.tuples(st.just("delete_attempts"), st.integers(min_value=1, max_value=3)),
    st.tuples(st.just("rolled_back_insert"), index, status),
)

SETUP: list[tuple[Any, ...]] = [
    ("create_mailout",),
    ("create_mailout",),
    ("insert_messages_bulk", 0, "pending", "sending", True),
    ("insert_messages_bulk", 1, "sent", "pending", False),
    ("insert_attempts_bulk", 0, "sent", "timeout"),
]

_NEW_MESSAGE = """
    INSERT INTO messages (mailout_id, customer_id, phone, timezone, status, created_at, updated_at)
"""


async def _ids(conn: AsyncConnection, table: str) -> list[int]:
    return list((await conn.execute(text(f"SELECT id FROM {table} ORDER BY id"))).scalars())


def _pick(ids: list[int], i: int) -> int | None:
    return ids[i % len(ids)] if ids else None


async def apply(conn: AsyncConnection, op: tuple[Any, ...]) -> None:
    """Run one operation as raw SQL, the way a benchmark or psql would: only the triggers keep count."""
    kind, *args = op
    mailout_ids = await _ids(conn, "mailouts")
    message_ids = await _ids(conn, "messages")
    customer_ids = await _ids(conn, "customers")
    if kind == "create_mailout":
        await conn.execute(
            text(
                "INSERT INTO mailouts (start_at, end_at, text, operator_codes, tags, status, created_at,"
                " updated_at) VALUES (CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, 't', '[]', '[]', 'running',"
                " CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
            )
        )
        return
    mailout = _pick(mailout_ids, args[0]) if args else None
    if kind == "insert_message" and mailout is not None:
        i, new_status, with_customer = args[1:]
        customer = _pick(customer_ids, i) if with_customer else None
        await conn.execute(
            text(
                _NEW_MESSAGE + "SELECT CAST(:m AS BIGINT), CAST(:c AS BIGINT), '79990000000', 'UTC', :s,"
                " CURRENT_TIMESTAMP, CURRENT_TIMESTAMP"
                # Skip a duplicate (mailout, customer) rather than fail the whole sequence.
                " WHERE NOT EXISTS (SELECT 1 FROM messages WHERE mailout_id = :m AND customer_id = :c)"
            ),
            {"m": mailout, "c": customer, "s": new_status},
        )
    elif kind == "insert_messages_bulk" and mailout is not None:
        even, odd, with_customers = args[1:]
        # Statuses mixed within one statement: one trigger call must count several groups.
        customer_sql = "c.id" if with_customers else "NULL"
        await conn.execute(
            text(
                _NEW_MESSAGE + f"SELECT CAST(:m AS BIGINT), {customer_sql}, c.phone, 'UTC',"
                " CASE WHEN c.id % 2 = 0 THEN :even ELSE :odd END, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP"
                " FROM customers c"
                " WHERE NOT EXISTS"
                " (SELECT 1 FROM messages m WHERE m.mailout_id = :m AND m.customer_id = c.id)"
            ),
            {"m": mailout, "even": even, "odd": odd},
        )
    elif kind == "update_status" and message_ids:
        await conn.execute(
            text("UPDATE messages SET status = :s WHERE id = :id"),
            {"s": args[1], "id": _pick(message_ids, args[0])},
        )
    elif kind == "update_statuses_bulk" and mailout is not None:
        # Some rows may already hold their new status: no-ops mixed with changes in one statement.
        await conn.execute(
            text(
                "UPDATE messages SET status = CASE WHEN id % 2 = 0 THEN :a ELSE :b END WHERE mailout_id = :m"
            ),
            {"m": mailout, "a": args[1], "b": args[2]},
        )
    elif kind == "update_status_noop" and mailout is not None:
        await conn.execute(text("UPDATE messages SET status = status WHERE mailout_id = :m"), {"m": mailout})
    elif kind == "update_other_columns" and mailout is not None:
        await conn.execute(
            text("UPDATE messages SET attempts = attempts + 1, next_attempt_at = NULL WHERE mailout_id = :m"),
            {"m": mailout},
        )
    elif kind == "move_message" and message_ids and mailout is not None:
        # Only customer-less messages move, so the (mailout, customer) uniqueness always holds.
        await conn.execute(
            text("UPDATE messages SET mailout_id = :m WHERE id = :id AND customer_id IS NULL"),
            {"m": _pick(mailout_ids, args[1]), "id": _pick(message_ids, args[0])},
        )
    elif kind == "delete_messages" and mailout is not None:
        await conn.execute(
            text("DELETE FROM messages WHERE mailout_id = :m AND id % :k = 0"), {"m": mailout, "k": args[1]}
        )
    elif kind == "delete_customer" and customer_ids:
        await conn.execute(text("DELETE FROM customers WHERE id = :c"), {"c": _pick(customer_ids, args[0])})
    elif kind == "delete_mailout" and mailout is not None:
        await conn.execute(text("DELETE FROM mailouts WHERE id = :m"), {"m": mailout})
    elif kind == "insert_attempt" and message_ids:
        await conn.execute(
            text(
                "INSERT INTO message_attempts (message_id, mailout_id, started_at, duration_ms, outcome)"
                " SELECT id, mailout_id, CURRENT_TIMESTAMP, 1.5, :o FROM messages WHERE id = :id"
            ),
            {"o": args[1], "id": _pick(message_ids, args[0])},
        )
    elif kind == "insert_attempts_bulk" and mailout is not None:
        await conn.execute(
            text(
                "INSERT INTO message_attempts (message_id, mailout_id, started_at, duration_ms, outcome)"
                " SELECT id, mailout_id, CURRENT_TIMESTAMP, 1.5, CASE WHEN id % 2 = 0 THEN :a ELSE :b END"
                " FROM messages WHERE mailout_id = :m"
            ),
            {"m": mailout, "a": args[1], "b": args[2]},
        )
    elif kind == "update_attempt_outcomes" and mailout is not None:
        await conn.execute(
            text("UPDATE message_attempts SET outcome = :o WHERE mailout_id = :m AND id % 2 = 1"),
            {"m": mailout, "o": args[1]},
        )
    elif kind == "delete_attempts":
        await conn.execute(text("DELETE FROM message_attempts WHERE id % :k = 0"), {"k": args[0]})
    elif kind == "rolled_back_insert" and mailout is not None:
        savepoint = await conn.begin_nested()
        await conn.execute(
            text(_NEW_MESSAGE + "VALUES (:m, NULL, '7', 'UTC', :s, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"),
            {"m": mailout, "s": args[1]},
        )
        await savepoint.rollback()


async def assert_counters_exact(conn: AsyncConnection) -> None:
    for counts, table, column in (
        ("mailout_message_counts", "messages", "status"),
        ("mailout_attempt_counts", "message_attempts", "outcome"),
    ):
        kept = {
            (m, key): n
            for m, key, n in await conn.execute(text(f"SELECT mailout_id, {column}, n FROM {counts}"))
        }
        fresh = {
            (m, key): n
            for m, key, n in await conn.execute(
                text(f"SELECT mailout_id, {column}, count(*) FROM {table} GROUP BY mailout_id, {column}")
            )
        }
        # A counter that dropped to zero may stay as a zero row; nothing else may differ.
        assert {k: n for k, n in kept.items() if n != 0} == fresh, counts
        assert all(n >= 0 for n in kept.values()), kept
        # No counter outlives its mailout.
        orphans = await conn.scalar(
            text(f"SELECT count(*) FROM {counts} WHERE mailout_id NOT IN (SELECT id FROM mailouts)")
        )
        assert orphans == 0, counts


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(db_url, pool_size=1)
    yield engine
    await engine.dispose()


async def _reset(db: AsyncEngine) -> None:
    """Empty tables for each example; the deletes themselves go through the triggers."""
    async with db.begin() as conn:
        await conn.execute(text("DELETE FROM mailouts"))
        await conn.execute(text("DELETE FROM customers"))
        await assert_counters_exact(conn)
        await conn.execute(text("DELETE FROM mailout_message_counts"))
        await conn.execute(text("DELETE FROM mailout_attempt_counts"))
        for i in range(CUSTOMERS):
            await conn.execute(
                text(
                    "INSERT INTO customers (phone, operator_code, tag, timezone, created_at, updated_at)"
                    " VALUES (:p, '999', NULL, 'UTC', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
                ),
                {"p": str(79990000000 + i)},
            )


@settings(
    max_examples=30,
    deadline=None,
    # The database fixture is shared by the examples on purpose: each example starts by emptying it.
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    operations=st.lists(operation, min_size=1, max_size=30),
    per_transaction=st.integers(min_value=1, max_value=4),
)
async def test_counters_equal_a_fresh_count(
    db: AsyncEngine, operations: list[tuple[Any, ...]], per_transaction: int
) -> None:
    await _reset(db)
    # A start with rows in every table, so that the drawn operations have something to change.
    async with db.begin() as conn:
        for setup in SETUP:
            await apply(conn, setup)
    # Several operations per transaction as well: a statement's triggers must see the earlier ones' rows.
    for start in range(0, len(operations), per_transaction):
        async with db.begin() as conn:
            for op in operations[start : start + per_transaction]:
                await apply(conn, op)
            await assert_counters_exact(conn)


async def test_deleting_a_mailout_removes_its_counters_and_keeps_others(db: AsyncEngine) -> None:
    await _reset(db)
    async with db.begin() as conn:
        for _ in range(2):
            await apply(conn, ("create_mailout",))
        await apply(conn, ("insert_messages_bulk", 0, "sent", "pending", True))
        await apply(conn, ("insert_messages_bulk", 1, "failed", "sent", False))
        await apply(conn, ("insert_attempts_bulk", 0, "sent", "timeout"))
        await apply(conn, ("insert_attempts_bulk", 1, "cut", "rejected"))
        first, second = await _ids(conn, "mailouts")
        await conn.execute(text("DELETE FROM mailouts WHERE id = :m"), {"m": first})
        for counts in ("mailout_message_counts", "mailout_attempt_counts"):
            kept = set(await conn.scalars(text(f"SELECT DISTINCT mailout_id FROM {counts}")))
            assert kept == {second}, counts
        await assert_counters_exact(conn)


# --- the migration ------------------------------------------------------------------------------------------


def _alembic(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["url"] = async_url(url)
    return config


async def _seed_and_check(url: str, *, check: bool) -> None:
    engine = create_engine(url, pool_size=1)
    try:
        async with engine.begin() as conn:
            if check:
                await assert_counters_exact(conn)
                return
            await conn.execute(
                text(
                    "INSERT INTO customers (phone, operator_code, timezone, created_at, updated_at)"
                    " SELECT '79990000001', '999', 'UTC', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP"
                    " WHERE NOT EXISTS (SELECT 1 FROM customers)"
                )
            )
            for _ in range(2):
                await apply(conn, ("create_mailout",))
            await apply(conn, ("insert_messages_bulk", 0, "sent", "pending", True))
            await apply(conn, ("insert_messages_bulk", 1, "failed", "sent", False))
            await apply(conn, ("insert_attempts_bulk", 0, "sent", "timeout"))
    finally:
        await engine.dispose()


async def _tables(url: str) -> set[str]:
    engine = create_engine(url, pool_size=1)
    try:
        async with engine.connect() as conn:
            return set(await conn.run_sync(lambda c: c.dialect.get_table_names(c)))
    finally:
        await engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database with no schema, for stepping through migrations."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'migrate.db'}"
        return
    pg_url: str = request.getfixturevalue("pg_url")  # skips the test where PostgreSQL is absent
    name = pg_url.rsplit("/", 1)[1] + "_migrate"
    yield asyncio.run(create_database(PG_ADMIN_URL, name))
    asyncio.run(drop_database(PG_ADMIN_URL, name))


def test_the_migration_backfills_existing_rows_and_downgrades(empty_db_url: str) -> None:
    config = _alembic(empty_db_url)
    before = ScriptDirectory.from_config(config).get_revision("0003").down_revision
    assert isinstance(before, str)
    command.upgrade(config, before)
    asyncio.run(_seed_and_check(empty_db_url, check=False))
    command.upgrade(config, "0003")
    asyncio.run(_seed_and_check(empty_db_url, check=True))
    command.downgrade(config, before)
    assert not {"mailout_message_counts", "mailout_attempt_counts"} & asyncio.run(_tables(empty_db_url))
    # Writes after the downgrade must not hit a trigger that refers to a dropped table.
    asyncio.run(_seed_and_check(empty_db_url, check=False))
