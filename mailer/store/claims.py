"""The mailout actor's claims: due messages leased to this process, the next due time, window reschedules."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import and_, bindparam, exists, func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from mailer.domain.sending import ClaimedMessage
from mailer.domain.statuses import MailoutStatus, MessageStatus
from mailer.domain.windows import SendWindow, next_open_by_zone
from mailer.store.coltypes import UTCDateTime
from mailer.store.direct import DirectStatement, fetch_all
from mailer.store.instants import as_instant, by_zone
from mailer.store.tables import mailouts, messages


class ClaimQueries:
    """Claims and the due times of pending messages."""

    _db: AsyncEngine
    is_postgres: bool

    async def claim(self, mailout_id: int, now: datetime, limit: int, lease_s: float) -> list[ClaimedMessage]:
        """Move up to `limit` due pending messages of a running mailout to `sending`, leased, oldest first."""
        statement = _PG_CLAIM if self.is_postgres else _SQLITE_CLAIM
        # Not named after columns: SQLAlchemy keeps those names for an UPDATE's own SET values.
        params = {
            "claim_mailout_id": mailout_id,
            "claim_now": now,
            "claim_limit": limit,
            "claim_lease_until": now + timedelta(seconds=lease_s),
        }
        rows = await fetch_all(self._db, statement, params)
        claimed = [
            ClaimedMessage(r["id"], mailout_id, r["phone"], r["timezone"], r["attempts"], r["customer_id"])
            for r in rows
        ]
        claimed.sort(key=lambda m: m.id)
        return claimed

    async def next_due(self, mailout_id: int) -> datetime | None:
        """The earliest next_attempt_at of the mailout's pending messages."""
        async with self._db.connect() as conn:
            value = (
                await conn.execute(
                    select(func.min(messages.c.next_attempt_at)).where(
                        messages.c.mailout_id == mailout_id, messages.c.status == MessageStatus.PENDING
                    )
                )
            ).scalar_one_or_none()
        return as_instant(value)

    async def reschedule_chunk(
        self, mailout_id: int, window: SendWindow | None, now: datetime, after_id: int, limit: int
    ) -> tuple[int, int] | None:
        """After a window change: the next `limit` pending messages (by id, after `after_id`) wait for their
        zone's next opening. The last id looked at and how many moved, or None when none is left."""
        pending = and_(messages.c.mailout_id == mailout_id, messages.c.status == MessageStatus.PENDING)
        ids = (
            select(messages.c.id)
            .where(pending, messages.c.id > after_id)
            .order_by(messages.c.id)
            .limit(limit)
        )
        async with self._db.begin() as conn:
            last_id = await conn.scalar(select(func.max(ids.subquery().c.id)))
            if last_id is None:
                return None
            chunk = and_(pending, messages.c.id > after_id, messages.c.id <= last_id)
            zones = (await conn.execute(select(messages.c.timezone).where(chunk).distinct())).scalars()
            opens = next_open_by_zone(now, window, zones)
            result = await conn.execute(
                update(messages)
                .where(chunk)
                .values(next_attempt_at=by_zone(messages.c.timezone, opens, now), updated_at=now)
            )
            return int(last_id), max(result.rowcount, 0)


def _claim_statement(*, skip_locked: bool) -> DirectStatement:
    """The claim, built once: an UPDATE of the due ids (oldest first) returning what a send needs."""
    running = exists().where(
        mailouts.c.id == bindparam("claim_mailout_id"), mailouts.c.status == MailoutStatus.RUNNING
    )
    due = (
        select(messages.c.id)
        .where(
            messages.c.mailout_id == bindparam("claim_mailout_id"),
            messages.c.status == MessageStatus.PENDING,
            messages.c.next_attempt_at <= bindparam("claim_now", type_=UTCDateTime),
            running,
        )
        .order_by(messages.c.next_attempt_at, messages.c.id)
        .limit(bindparam("claim_limit"))
    )
    if skip_locked:
        # Several processes may claim from one mailout: each skips the rows another is taking.
        due = due.with_for_update(skip_locked=True, of=messages)
    return DirectStatement(
        update(messages)
        .where(messages.c.id.in_(due.scalar_subquery()))
        .values(
            status=MessageStatus.SENDING,
            lease_until=bindparam("claim_lease_until", type_=UTCDateTime),
            updated_at=bindparam("claim_now", type_=UTCDateTime),
        )
        .returning(
            messages.c.id,
            messages.c.phone,
            messages.c.timezone,
            messages.c.attempts,
            messages.c.customer_id,
        )
    )


_PG_CLAIM = _claim_statement(skip_locked=True)
_SQLITE_CLAIM = _claim_statement(skip_locked=False)
