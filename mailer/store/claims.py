"""The mailout actor's claims: due messages leased to this process, the next due time, window reschedules."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import and_, exists, func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from mailer.domain.sending import ClaimedMessage
from mailer.domain.statuses import MailoutStatus, MessageStatus
from mailer.domain.windows import SendWindow, next_open_by_zone
from mailer.store.instants import as_instant, at, by_zone
from mailer.store.tables import mailouts, messages


class ClaimQueries:
    """Claims and the due times of pending messages."""

    _db: AsyncEngine
    is_postgres: bool

    async def claim(self, mailout_id: int, now: datetime, limit: int, lease_s: float) -> list[ClaimedMessage]:
        """Move up to `limit` due pending messages of a running mailout to `sending`, leased, oldest first."""
        running = exists().where(mailouts.c.id == mailout_id, mailouts.c.status == MailoutStatus.RUNNING)
        due = (
            select(messages.c.id)
            .where(
                messages.c.mailout_id == mailout_id,
                messages.c.status == MessageStatus.PENDING,
                messages.c.next_attempt_at <= at(now),
                running,
            )
            .order_by(messages.c.next_attempt_at, messages.c.id)
            .limit(limit)
        )
        if self.is_postgres:
            # Several processes may claim from one mailout: each skips the rows another is taking.
            due = due.with_for_update(skip_locked=True, of=messages)
        statement = (
            update(messages)
            .where(messages.c.id.in_(due.scalar_subquery()))
            .values(
                status=MessageStatus.SENDING,
                lease_until=now + timedelta(seconds=lease_s),
                updated_at=now,
            )
            .returning(
                messages.c.id,
                messages.c.phone,
                messages.c.timezone,
                messages.c.attempts,
                messages.c.customer_id,
            )
        )
        async with self._db.begin() as conn:
            rows = (await conn.execute(statement)).all()
        claimed = [
            ClaimedMessage(r.id, mailout_id, r.phone, r.timezone, r.attempts, r.customer_id) for r in rows
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
