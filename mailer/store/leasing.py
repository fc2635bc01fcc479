"""Leases of `sending` messages: renewal by the process that holds them, recovery when they ran out."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from mailer.domain.statuses import MailoutStatus, MessageStatus
from mailer.store.instants import at
from mailer.store.tables import mailouts, messages

# Ids per lease-renewal UPDATE: far below SQLite's bound-parameter limit, and a process holds a few times
# its send concurrency at most, so one statement per round is the usual case.
RENEW_CHUNK = 1000


@dataclass(frozen=True, slots=True)
class LeaseRecovery:
    """How many stuck `sending` messages went where."""

    pending: int
    expired: int
    cancelled: int

    @property
    def total(self) -> int:
        return self.pending + self.expired + self.cancelled


class LeaseQueries:
    """Lease recovery (at start-up and on a timer) and renewal (the lease keeper)."""

    _db: AsyncEngine
    is_postgres: bool

    async def recover_leases(self, now: datetime) -> LeaseRecovery:
        """`sending` messages whose lease ran out: back to pending, or cancelled/expired per their mailout."""
        stuck = and_(messages.c.status == MessageStatus.SENDING, messages.c.lease_until < at(now))
        cancelled_ids = select(mailouts.c.id).where(mailouts.c.status == MailoutStatus.CANCELLED)
        ended_ids = select(mailouts.c.id).where(
            or_(mailouts.c.status == MailoutStatus.FINISHED, mailouts.c.end_at <= at(now))
        )
        cleared = {"lease_until": None, "updated_at": now}
        async with self._db.begin() as conn:
            cancelled = await conn.execute(
                update(messages)
                .where(stuck, messages.c.mailout_id.in_(cancelled_ids))
                .values(status=MessageStatus.CANCELLED, next_attempt_at=None, **cleared)
            )
            expired = await conn.execute(
                update(messages)
                .where(stuck, messages.c.mailout_id.in_(ended_ids))
                .values(status=MessageStatus.EXPIRED, next_attempt_at=None, **cleared)
            )
            pending = await conn.execute(
                update(messages)
                .where(stuck)
                .values(status=MessageStatus.PENDING, next_attempt_at=now, **cleared)
            )
            # A retry recorded by another process just after its mailout was cancelled or ended can leave a
            # `pending` row that no actor will claim: it takes the mailout's final state here.
            stray = messages.c.status == MessageStatus.PENDING
            stray_cancelled = await conn.execute(
                update(messages)
                .where(stray, messages.c.mailout_id.in_(cancelled_ids))
                .values(status=MessageStatus.CANCELLED, next_attempt_at=None, updated_at=now)
            )
            stray_expired = await conn.execute(
                update(messages)
                .where(stray, messages.c.mailout_id.in_(ended_ids))
                .values(status=MessageStatus.EXPIRED, next_attempt_at=None, updated_at=now)
            )
        return LeaseRecovery(
            pending.rowcount,
            expired.rowcount + stray_expired.rowcount,
            cancelled.rowcount + stray_cancelled.rowcount,
        )

    async def renew_leases(self, ids: Sequence[int], until: datetime) -> int:
        """Push `lease_until` to `until` for those of `ids` still in `sending`; how many were renewed.

        Rows that left `sending` meanwhile (recorded, cancelled, recovered) are left alone, and so (on
        PostgreSQL) are rows locked right now: a lock means the recorder is writing the row's outcome, which
        clears the lease anyway, and waiting for it while holding other rows' locks would deadlock with it.
        """
        renewed = 0
        async with self._db.begin() as conn:
            for start in range(0, len(ids), RENEW_CHUNK):
                chunk = list(ids[start : start + RENEW_CHUNK])
                held = select(messages.c.id).where(
                    messages.c.id.in_(chunk), messages.c.status == MessageStatus.SENDING
                )
                if self.is_postgres:
                    held = held.with_for_update(skip_locked=True)
                result = await conn.execute(
                    update(messages)
                    .where(messages.c.id.in_(held.scalar_subquery()))
                    .values(lease_until=until)
                )
                renewed += max(result.rowcount, 0)
        return renewed
