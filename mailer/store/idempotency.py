"""Idempotency keys in the database: which request owns a key, and the response it gave.

Every decision is one short transaction, with the row's primary key (user, key) as the only arbiter, so any
number of processes on one database agree: the first to insert a key runs the request; the others replay its
stored response, or learn that it is still running, or that their body differs. Expired rows are ignored
(and taken over) at once, and deleted in bulk by `purge`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from mailer.store.tables import idempotency_keys as keys_table

# The user column holds the token's `sub`; a longer one is stored as its hash (64 characters) so that two
# long names can never be clipped into one.
MAX_USER_CHARS = 255


class Verdict(StrEnum):
    """What to do with a request that carries an idempotency key."""

    RUN = "run"  # this request owns the key: run it and store its response
    REPLAY = "replay"  # the first request finished: answer its response
    MISMATCH = "mismatch"  # the key was used with another body (or route): 422
    IN_PROGRESS = "in_progress"  # the first request is still running: 409


@dataclass(frozen=True, slots=True)
class StoredResponse:
    status: int
    content_type: str
    body: bytes


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    response: StoredResponse | None = None


@dataclass(frozen=True, slots=True)
class Lifetimes:
    """How long a finished key answers (`ttl`), and how long a running one is presumed alive (`lease`)."""

    ttl: timedelta
    lease: timedelta


def user_column(user: str) -> str:
    if len(user) <= MAX_USER_CHARS:
        return user
    return hashlib.sha256(user.encode("utf-8", "surrogatepass")).hexdigest()


def _insert_if_absent(conn: AsyncConnection, values: dict[str, Any]) -> Any:
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    return dialect.insert(keys_table).values(**values).on_conflict_do_nothing()


def _is_key(user: str, key: str) -> Any:
    return (keys_table.c.user_name == user) & (keys_table.c.idem_key == key)


async def begin(
    db: AsyncEngine, user: str, key: str, fingerprint: str, now: datetime, lifetimes: Lifetimes
) -> Decision:
    """Claim `key` for a request whose body hashes to `fingerprint`, or say why not."""
    user = user_column(user)
    fresh = {
        "fingerprint": fingerprint,
        "status_code": None,
        "content_type": None,
        "body": None,
        "locked_until": now + lifetimes.lease,
        "expires_at": now + lifetimes.ttl,
        "created_at": now,
    }
    async with db.begin() as conn:
        inserted = await conn.execute(_insert_if_absent(conn, {"user_name": user, "idem_key": key, **fresh}))
        if inserted.rowcount == 1:
            return Decision(Verdict.RUN)
        row = (await conn.execute(select(keys_table).where(_is_key(user, key)))).one_or_none()
        if row is None:
            # Purged between the two statements: it had expired, so the key is free; insert it again.
            again = await conn.execute(_insert_if_absent(conn, {"user_name": user, "idem_key": key, **fresh}))
            return Decision(Verdict.RUN if again.rowcount == 1 else Verdict.IN_PROGRESS)
        if row.expires_at <= now:
            # An expired key is as good as absent: take it over, unless another request just did.
            taken = await conn.execute(
                update(keys_table)
                .where(_is_key(user, key), keys_table.c.expires_at == row.expires_at)
                .values(**fresh)
            )
            return Decision(Verdict.RUN if taken.rowcount == 1 else Verdict.IN_PROGRESS)
        if row.fingerprint != fingerprint:
            return Decision(Verdict.MISMATCH)
        if row.status_code is not None:
            return Decision(Verdict.REPLAY, StoredResponse(row.status_code, row.content_type, row.body))
        if row.locked_until is not None and row.locked_until > now:
            return Decision(Verdict.IN_PROGRESS)
        # The lease lapsed with no response stored: the process running the first request died. Retry it;
        # the conditional update lets one retry, of many at once, win.
        taken = await conn.execute(
            update(keys_table)
            .where(
                _is_key(user, key),
                keys_table.c.status_code.is_(None),
                keys_table.c.locked_until == row.locked_until,
            )
            .values(locked_until=now + lifetimes.lease)
        )
        return Decision(Verdict.RUN if taken.rowcount == 1 else Verdict.IN_PROGRESS)


async def finish(db: AsyncEngine, user: str, key: str, response: StoredResponse) -> None:
    """Store the response of the request that owns `key`; from now on retries replay it."""
    async with db.begin() as conn:
        await conn.execute(
            update(keys_table)
            .where(_is_key(user_column(user), key), keys_table.c.status_code.is_(None))
            .values(
                status_code=response.status,
                content_type=response.content_type,
                body=response.body,
                locked_until=None,
            )
        )


async def release(db: AsyncEngine, user: str, key: str) -> None:
    """Forget a running key whose request created nothing (it failed): a retry runs afresh."""
    async with db.begin() as conn:
        await conn.execute(
            delete(keys_table).where(_is_key(user_column(user), key), keys_table.c.status_code.is_(None))
        )


async def purge(db: AsyncEngine, now: datetime) -> int:
    """Delete every expired key; the number deleted."""
    async with db.begin() as conn:
        result = await conn.execute(delete(keys_table).where(keys_table.c.expires_at <= now))
        return int(result.rowcount)
