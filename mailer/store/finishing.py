"""The end of a mailout: pending messages expire; the mailout finishes when its end came or all is done."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ColumnElement, Update, and_, exists, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from mailer.domain.statuses import MailoutStatus, MessageStatus
from mailer.store.instants import LIVE_MAILOUT, at
from mailer.store.tables import mailouts, messages


class FinishingQueries:
    """The mailout actor's end-of-mailout statements."""

    _db: AsyncEngine
    is_postgres: bool

    async def expire_pending(self, mailout_id: int, now: datetime) -> int:
        """At the end: pending messages expire, if the end really came and the mailout is not final."""
        ended = exists().where(
            mailouts.c.id == mailout_id, mailouts.c.end_at <= at(now), mailouts.c.status.in_(LIVE_MAILOUT)
        )
        async with self._db.begin() as conn:
            result = await conn.execute(
                update(messages)
                .where(messages.c.mailout_id == mailout_id, messages.c.status == MessageStatus.PENDING, ended)
                .values(status=MessageStatus.EXPIRED, next_attempt_at=None, updated_at=now)
            )
            return result.rowcount

    async def finish_unstarted(self, mailout_id: int, now: datetime) -> bool:
        """A scheduled mailout whose end came before it could start: finished, with no messages."""
        async with self._db.begin() as conn:
            result = await conn.execute(_finish_ended(mailout_id, now, mailouts.c.activated_at.is_(None)))
            return result.rowcount == 1

    async def finish(self, mailout_id: int, now: datetime) -> bool:
        """Mark the mailout finished (conditional on its end having come); expire what is still pending."""
        async with self._db.begin() as conn:
            result = await conn.execute(_finish_ended(mailout_id, now))
            if result.rowcount != 1:
                return False
            await conn.execute(
                update(messages)
                .where(messages.c.mailout_id == mailout_id, messages.c.status == MessageStatus.PENDING)
                .values(status=MessageStatus.EXPIRED, next_attempt_at=None, updated_at=now)
            )
            return True

    async def finish_done(self, mailout_id: int, now: datetime) -> bool:
        """A running mailout none of whose messages is pending or sending any more: finished now."""
        running = and_(
            mailouts.c.id == mailout_id,
            mailouts.c.status == MailoutStatus.RUNNING,
            mailouts.c.activated_at.is_not(None),
        )
        open_messages = select(messages.c.id).where(
            messages.c.mailout_id == mailout_id,
            messages.c.status.in_((MessageStatus.PENDING, MessageStatus.SENDING)),
        )
        async with self._db.begin() as conn:
            # The mailout row first (PostgreSQL: locked; SQLite: one writer anyway): a message being added
            # holds that lock, so the look for open messages below, a statement of its own, sees it.
            locked = select(mailouts.c.id).where(running)
            if self.is_postgres:
                locked = locked.with_for_update()
            if (await conn.execute(locked)).first() is None:
                return False
            if (await conn.execute(open_messages.limit(1))).first() is not None:
                return False
            await conn.execute(
                update(mailouts)
                .where(running)
                .values(status=MailoutStatus.FINISHED, finished_at=now, updated_at=now)
            )
            return True


def _finish_ended(mailout_id: int, now: datetime, *conditions: ColumnElement[bool]) -> Update:
    """Finish the mailout if it is not final and its end has come (and `conditions` hold)."""
    return (
        update(mailouts)
        .where(
            mailouts.c.id == mailout_id,
            mailouts.c.status.in_(LIVE_MAILOUT),
            mailouts.c.end_at <= at(now),
            *conditions,
        )
        .values(status=MailoutStatus.FINISHED, finished_at=now, updated_at=now)
    )
