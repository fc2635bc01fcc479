"""Seed one large mailout on PostgreSQL by SQL alone (generate_series), for statistics benchmarks.

The rows go in through plain INSERT … SELECT, so the counters are kept by the database triggers exactly as for
any other writer; nothing here touches the counter tables.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

# The counter triggers on messages, disabled by name in `time_activation` to measure the plain insert.
MESSAGE_COUNT_TRIGGERS = (
    "mailout_message_counts_on_insert",
    "mailout_message_counts_on_update",
    "mailout_message_counts_on_delete",
)

_NEW_MAILOUT = text(
    "INSERT INTO mailouts (start_at, end_at, text, operator_codes, tags, status, created_at, updated_at)"
    " VALUES (now() - interval '1 day', now() + interval '1 day', 'benchmark', '[]', '[]', 'running',"
    " now(), now()) RETURNING id"
)

# Every status present; one in three sent, with sent_at spread over the last day. customer_id stays NULL:
# the (mailout_id, customer_id) uniqueness allows any number of NULLs, so no customers need seeding.
_MESSAGES = text(
    """
    INSERT INTO messages (mailout_id, customer_id, phone, timezone, status, attempts, next_attempt_at,
                          sent_at, created_at, updated_at)
    SELECT CAST(:mailout_id AS bigint), NULL, '7' || lpad(i::text, 10, '0'), 'UTC',
           (ARRAY['sent', 'pending', 'sent', 'failed', 'sent', 'expired', 'sending', 'cancelled'])[i % 8 + 1],
           1, NULL,
           CASE WHEN i % 8 IN (0, 2, 4) THEN now() - (i % 86400) * interval '1 second' END,
           now(), now()
    FROM generate_series(1, :n) AS i
    """
)

# Attempts on the mailout's first messages, with every outcome present.
_ATTEMPTS = text(
    """
    INSERT INTO message_attempts (message_id, mailout_id, started_at, duration_ms, outcome, http_status)
    SELECT id, mailout_id, now(), 12.5,
           (ARRAY['sent', 'transient', 'timeout', 'connection', 'rejected', 'unauthorized', 'cut'])
               [id % 7 + 1],
           200
    FROM (SELECT id, mailout_id FROM messages WHERE mailout_id = :mailout_id ORDER BY id LIMIT :n) AS m
    """
)


async def create_mailout(conn: AsyncConnection) -> int:
    return int((await conn.execute(_NEW_MAILOUT)).scalar_one())


async def seed_mailout(conn: AsyncConnection, n_messages: int, n_attempts: int = 0) -> int:
    """A new running mailout with `n_messages` messages and `n_attempts` attempts; its id. PostgreSQL only."""
    mailout_id = await create_mailout(conn)
    await conn.execute(_MESSAGES, {"mailout_id": mailout_id, "n": n_messages})
    if n_attempts:
        await conn.execute(_ATTEMPTS, {"mailout_id": mailout_id, "n": n_attempts})
    # Fresh statistics, so that the planner sees the new rows before the benchmark starts.
    await conn.execute(text("ANALYZE messages"))
    await conn.execute(text("ANALYZE message_attempts"))
    return mailout_id


@dataclass(frozen=True, slots=True)
class ActivationTiming:
    with_triggers_s: float
    without_triggers_s: float


async def time_activation(conn: AsyncConnection, n_messages: int) -> ActivationTiming:
    """How long one INSERT … SELECT of `n_messages` messages takes with and without the counter triggers.

    Both inserts run inside savepoints that are rolled back, so the database is left as it was.
    """

    async def timed(disable_triggers: bool) -> float:
        savepoint = await conn.begin_nested()
        try:
            if disable_triggers:
                # DISABLE TRIGGER is transactional in PostgreSQL: the rollback below re-enables them.
                for name in MESSAGE_COUNT_TRIGGERS:
                    await conn.execute(text(f"ALTER TABLE messages DISABLE TRIGGER {name}"))
            mailout_id = await create_mailout(conn)
            start = time.perf_counter()
            await conn.execute(_MESSAGES, {"mailout_id": mailout_id, "n": n_messages})
            return time.perf_counter() - start
        finally:
            await savepoint.rollback()

    without = await timed(disable_triggers=True)
    with_triggers = await timed(disable_triggers=False)
    return ActivationTiming(with_triggers_s=with_triggers, without_triggers_s=without)
