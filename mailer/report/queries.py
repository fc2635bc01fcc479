"""The numbers of the daily report, read straight from the tables in three grouped queries."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from mailer.domain.statuses import MailoutStatus, MessageStatus, Outcome
from mailer.store.tables import mailouts, message_attempts, messages

# Failed requests, by kind; a successful request is no error.
ERROR_KINDS = tuple(outcome for outcome in Outcome if outcome is not Outcome.SENT)
_ACTIVE_STATUSES = (MailoutStatus.RUNNING.value, MailoutStatus.PAUSED.value)


@dataclass(frozen=True, slots=True)
class MailoutStats:
    """One mailout in the report: its message counts now, and the requests made for it in the window."""

    id: int
    status: str
    start_at: datetime
    end_at: datetime
    by_status: dict[MessageStatus, int]
    errors_by_kind: dict[Outcome, int]
    attempts: int

    @property
    def total(self) -> int:
        return sum(self.by_status.values())


def _within(column: ColumnElement[datetime], since: datetime, until: datetime) -> ColumnElement[bool]:
    return and_(column >= since, column < until)


async def active_mailouts(conn: AsyncConnection, since: datetime, until: datetime) -> list[MailoutStats]:
    """Mailouts active in [since, until): running or paused now, or started, activated, finished or changed
    (a cancel is a change) within it; in id order, with every status and error kind present."""
    active = or_(
        mailouts.c.status.in_(_ACTIVE_STATUSES),
        _within(mailouts.c.start_at, since, until),
        _within(mailouts.c.activated_at, since, until),
        _within(mailouts.c.finished_at, since, until),
        _within(mailouts.c.updated_at, since, until),
    )
    rows = (
        await conn.execute(
            select(mailouts.c.id, mailouts.c.status, mailouts.c.start_at, mailouts.c.end_at)
            .where(active)
            .order_by(mailouts.c.id)
        )
    ).all()
    ids = [row.id for row in rows]
    by_status: dict[int, dict[MessageStatus, int]] = {i: dict.fromkeys(MessageStatus, 0) for i in ids}
    outcomes: dict[int, dict[str, int]] = {i: {} for i in ids}
    if ids:
        counts = (
            select(messages.c.mailout_id, messages.c.status, func.count())
            .where(messages.c.mailout_id.in_(ids))
            .group_by(messages.c.mailout_id, messages.c.status)
        )
        for mailout_id, status, count in await conn.execute(counts):
            # A status a newer version wrote must not break the report.
            if status in MessageStatus:
                by_status[mailout_id][MessageStatus(status)] = count
        attempts = (
            select(message_attempts.c.mailout_id, message_attempts.c.outcome, func.count())
            .where(
                message_attempts.c.mailout_id.in_(ids),
                message_attempts.c.started_at >= since,
                message_attempts.c.started_at < until,
            )
            .group_by(message_attempts.c.mailout_id, message_attempts.c.outcome)
        )
        for mailout_id, outcome, count in await conn.execute(attempts):
            outcomes[mailout_id][outcome] = count
    return [
        MailoutStats(
            id=row.id,
            status=row.status,
            start_at=row.start_at,
            end_at=row.end_at,
            by_status=by_status[row.id],
            errors_by_kind={kind: outcomes[row.id].get(kind.value, 0) for kind in ERROR_KINDS},
            attempts=sum(outcomes[row.id].values()),
        )
        for row in rows
    ]
