"""The recorder's batch write of send outcomes: messages updated and attempts inserted together."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, func, text, update
from sqlalchemy.ext.asyncio import AsyncEngine

from mailer.domain.sending import MessageOutcome
from mailer.domain.statuses import MessageStatus
from mailer.store.coltypes import UTCDateTime
from mailer.store.tables import message_attempts, messages


class OutcomeQueries:
    """Outcome recording, on the record engine (PostgreSQL) or the main one (SQLite)."""

    _db: AsyncEngine
    is_postgres: bool
    _record_db: AsyncEngine

    async def record(self, outcomes: Sequence[MessageOutcome], now: datetime) -> None:
        """Write a batch of outcomes: on PostgreSQL one statement (UPDATE of messages, INSERT of attempts); on
        SQLite an executemany UPDATE and one INSERT in a transaction.

        Only rows still in `sending` change: a message cancelled or recovered meanwhile keeps its new state.
        """
        if not outcomes:
            return
        message_params = [
            {
                "b_id": o.message_id,
                "b_status": o.status.value,
                "b_inc": 1 if o.attempt is not None else 0,
                # A pending row without a due time would never be claimed again.
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
        if self.is_postgres:
            # One set-based statement: the counter triggers fire once per batch instead of once per row, and
            # rows are locked in id order, so two processes' batches cannot deadlock on them.
            ordered = sorted(message_params, key=_message_id)
            arrays = {name: [p[key] for p in ordered] for name, key in _PG_RECORD_ARRAYS.items()}
            attempts = {name: [p[key] for p in attempt_params] for name, key in _PG_ATTEMPT_ARRAYS.items()}
            # Autocommit: the statement is its own transaction, and the UPDATE and the attempts' INSERT commit
            # together. On the record engine the commit is asynchronous (`create_record_engine`).
            async with self._record_db.connect() as conn:
                await conn.execute(_PG_RECORD_STATEMENT, arrays | attempts | {"now": now})
            return
        async with self._db.begin() as conn:
            await conn.execute(_RECORD_STATEMENT, message_params)
            if attempt_params:
                # An executemany INSERT is sent as multi-row VALUES by SQLAlchemy ("insertmanyvalues").
                await conn.execute(message_attempts.insert(), attempt_params)


# The PostgreSQL statement's array parameters and the executemany parameter each is built from.
_PG_RECORD_ARRAYS = {
    "ids": "b_id",
    "statuses": "b_status",
    "incs": "b_inc",
    "nexts": "b_next",
    "sents": "b_sent",
    "errors": "b_error",
}


# The attempts' array parameters of the one-statement record and the attempt row key each is built from.
_PG_ATTEMPT_ARRAYS = {
    "a_message_ids": "message_id",
    "a_mailout_ids": "mailout_id",
    "a_started": "started_at",
    "a_durations": "duration_ms",
    "a_outcomes": "outcome",
    "a_statuses": "http_status",
    "a_errors": "error",
}


def _message_id(params: dict[str, Any]) -> int:
    return int(params["b_id"])


# The outcomes' UPDATE and the attempts' INSERT as data-modifying CTEs of one statement, run in autocommit:
# one round trip per batch instead of BEGIN, SET, UPDATE, INSERT, COMMIT.
_PG_RECORD_STATEMENT = text(
    """
    WITH updated AS (
        UPDATE messages AS m SET
            status = v.status,
            attempts = m.attempts + v.inc,
            next_attempt_at = v.next_at,
            sent_at = COALESCE(v.sent_at, m.sent_at),
            last_error = COALESCE(v.error, m.last_error),
            lease_until = NULL,
            updated_at = :now
        FROM unnest(
            CAST(:ids AS bigint[]), CAST(:statuses AS text[]), CAST(:incs AS integer[]),
            CAST(:nexts AS timestamptz[]), CAST(:sents AS timestamptz[]), CAST(:errors AS text[])
        ) AS v(id, status, inc, next_at, sent_at, error)
        WHERE m.id = v.id AND m.status = 'sending'
        RETURNING m.id
    ), inserted AS (
        INSERT INTO message_attempts
            (message_id, mailout_id, started_at, duration_ms, outcome, http_status, error)
        SELECT * FROM unnest(
            CAST(:a_message_ids AS bigint[]), CAST(:a_mailout_ids AS bigint[]),
            CAST(:a_started AS timestamptz[]), CAST(:a_durations AS double precision[]),
            CAST(:a_outcomes AS text[]), CAST(:a_statuses AS integer[]), CAST(:a_errors AS text[])
        )
        RETURNING id
    )
    SELECT (SELECT count(*) FROM updated), (SELECT count(*) FROM inserted)
    """
)

_RECORD_STATEMENT = (
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
