"""What the scheduler and the mailout actors read: which mailouts need an actor, and a mailout's plan."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncEngine

from mailer.domain.sending import MailoutPlan
from mailer.domain.statuses import MailoutStatus
from mailer.store.instants import as_instant, at, window_of
from mailer.store.tables import mailouts


@dataclass(frozen=True, slots=True)
class ScanResult:
    """Mailouts that need an actor now, and the next start still to come."""

    active_ids: list[int]
    next_start_at: datetime | None


class ScanQueries:
    """The scheduler's scan and the actors' plan loading."""

    _db: AsyncEngine
    is_postgres: bool

    async def scan(self, now: datetime) -> ScanResult:
        """Mailouts an actor must look after (running, paused, or scheduled and due), and the next start."""
        due = or_(
            mailouts.c.status.in_((MailoutStatus.RUNNING, MailoutStatus.PAUSED)),
            and_(mailouts.c.status == MailoutStatus.SCHEDULED, mailouts.c.start_at <= at(now)),
        )
        async with self._db.connect() as conn:
            ids = (await conn.execute(select(mailouts.c.id).where(due).order_by(mailouts.c.id))).scalars()
            active = list(ids)
            next_start = (
                await conn.execute(
                    select(func.min(mailouts.c.start_at)).where(
                        mailouts.c.status == MailoutStatus.SCHEDULED, mailouts.c.start_at > at(now)
                    )
                )
            ).scalar_one_or_none()
        return ScanResult(active, as_instant(next_start))

    async def load_mailout(self, mailout_id: int) -> MailoutPlan | None:
        async with self._db.connect() as conn:
            row = (await conn.execute(select(mailouts).where(mailouts.c.id == mailout_id))).first()
        if row is None:
            return None
        return MailoutPlan(
            id=row.id,
            status=MailoutStatus(row.status),
            start_at=row.start_at,
            end_at=row.end_at,
            text=row.text,
            window=window_of(row.window_start_s, row.window_end_s),
            operator_codes=tuple(row.operator_codes or ()),
            tags=tuple(row.tags or ()),
            activated_at=row.activated_at,
            created_at=row.created_at,
        )
