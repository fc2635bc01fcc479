"""The recorder's batch write of send outcomes: messages updated and attempts inserted together."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import bindparam, text
from sqlalchemy.ext.asyncio import AsyncEngine

from mailer.domain.sending import MessageOutcome
from mailer.domain.statuses import MessageStatus
from mailer.store.coltypes import UTCDateTime
from mailer.store.direct import DirectStatement, execute_in_one_transaction, fetch_one


class OutcomeQueries:
    """Outcome recording, on the record engine (PostgreSQL) or the main one (SQLite)."""

    _db: AsyncEngine
    is_postgres: bool
    _record_db: AsyncEngine

    async def record(self, outcomes: Sequence[MessageOutcome], now: datetime) -> None:
        """Write a batch of outcomes: on PostgreSQL one statement (UPDATE of messages, INSERT of attempts); on
        SQLite one UPDATE … FROM and one INSERT … SELECT over the batch as JSON, in a transaction.

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
            # The batch goes in as two JSON texts: asyncpg encoding a dozen arrays checked every element (two
            # thirds of the write's CPU); orjson writes aware datetimes as RFC 3339, which timestamptz reads.
            rows = orjson.dumps(sorted(message_params, key=_message_id)).decode()
            params = {"rows": rows, "attempts": orjson.dumps(attempt_params).decode(), "now": now}
            # Autocommit: the statement is its own transaction, and the UPDATE and the attempts' INSERT commit
            # together. On the record engine the commit is asynchronous (`create_record_engine`).
            await fetch_one(self._record_db, _PG_RECORD, params)
            return
        # The batch goes in as one JSON text: two statements whatever its size, no statement per row, and one
        # text each, so that they are compiled once (a multi-row VALUES would have a text per batch size).
        # Both in one transaction and one round trip to aiosqlite's thread (BEGIN, UPDATE, INSERT, COMMIT),
        # rolled back whole on an error: the recorder then writes the batch one by one.
        statements: list[tuple[DirectStatement, dict[str, Any]]] = [
            (_SQLITE_RECORD, {"rows": _sqlite_json(message_params), "now": now})
        ]
        if attempt_params:
            statements.append((_SQLITE_ATTEMPTS, {"rows": _sqlite_json(attempt_params)}))
        await execute_in_one_transaction(self._db, statements)


def _message_id(params: dict[str, Any]) -> int:
    return int(params["b_id"])


# The outcomes' UPDATE and the attempts' INSERT as data-modifying CTEs of one statement, run in autocommit:
# one round trip per batch instead of BEGIN, SET, UPDATE, INSERT, COMMIT.
_PG_RECORD = DirectStatement(
    text(
        """
    WITH updated AS (
        UPDATE messages AS m SET
            status = v.b_status,
            attempts = m.attempts + v.b_inc,
            next_attempt_at = v.b_next,
            sent_at = COALESCE(v.b_sent, m.sent_at),
            last_error = COALESCE(v.b_error, m.last_error),
            lease_until = NULL,
            updated_at = :now
        FROM json_to_recordset(CAST(:rows AS json)) AS v(
            b_id bigint, b_status text, b_inc integer, b_next timestamptz, b_sent timestamptz, b_error text
        )
        WHERE m.id = v.b_id AND m.status = 'sending'
        RETURNING m.id
    ), inserted AS (
        INSERT INTO message_attempts
            (message_id, mailout_id, started_at, duration_ms, outcome, http_status, error)
        SELECT * FROM json_to_recordset(CAST(:attempts AS json)) AS a(
            message_id bigint, mailout_id bigint, started_at timestamptz, duration_ms double precision,
            outcome text, http_status integer, error text
        )
        RETURNING id
    )
    SELECT (SELECT count(*) FROM updated), (SELECT count(*) FROM inserted)
    """
    ).bindparams(bindparam("now", type_=UTCDateTime))
)


def _stored_text(value: datetime) -> str:
    """A datetime as UTCDateTime stores it on SQLite: naive UTC in SQLAlchemy's SQLite DATETIME format
    ("2030-01-15 12:00:00.000000", microseconds always), so that text order stays time order. Written out
    here because going through the type's own processor doubled the cost of the batch's JSON;
    tests/test_outcome_write.py compares the stored rows with the type's, byte for byte."""
    if value.tzinfo is None:
        raise ValueError("naive datetime given to a UTC column")
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


def _json_default(value: object) -> object:
    if isinstance(value, datetime):
        return _stored_text(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _sqlite_json(rows: list[dict[str, Any]]) -> str:
    """The rows as one JSON array of objects, datetimes as stored text. Text, not bytes: SQLite's JSON
    functions refuse a BLOB."""
    return orjson.dumps(rows, default=_json_default, option=orjson.OPT_PASSTHROUGH_DATETIME).decode()


# The outcomes' UPDATE over the batch (SQLite 3.33+ for UPDATE … FROM, 3.38+ for ->>): json_each is the outer
# loop and each row is found by its id (rowid), as with one UPDATE per row, without a statement per row. The
# counter triggers stay row-level on SQLite, so they count exactly what they counted before.
_SQLITE_RECORD = DirectStatement(
    text(
        """
    UPDATE messages AS m SET
        status = v.status,
        attempts = m.attempts + v.inc,
        next_attempt_at = v.next_at,
        sent_at = COALESCE(v.sent_at, m.sent_at),
        last_error = COALESCE(v.error, m.last_error),
        lease_until = NULL,
        updated_at = :now
    FROM (
        SELECT value ->> 'b_id' AS id, value ->> 'b_status' AS status, value ->> 'b_inc' AS inc,
               value ->> 'b_next' AS next_at, value ->> 'b_sent' AS sent_at, value ->> 'b_error' AS error
        FROM json_each(:rows)
    ) AS v
    WHERE m.id = v.id AND m.status = 'sending'
    """
    ).bindparams(bindparam("now", type_=UTCDateTime))
)

# The attempts, in the batch's order (json_each walks the array in order). A message deleted meanwhile fails
# its attempt's foreign key and so the whole transaction: the recorder then writes the batch one by one.
_SQLITE_ATTEMPTS = DirectStatement(
    text(
        """
    INSERT INTO message_attempts
        (message_id, mailout_id, started_at, duration_ms, outcome, http_status, error)
    SELECT value ->> 'message_id', value ->> 'mailout_id', value ->> 'started_at', value ->> 'duration_ms',
           value ->> 'outcome', value ->> 'http_status', value ->> 'error'
    FROM json_each(:rows)
    """
    )
)
