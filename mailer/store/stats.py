"""Mailout statistics: a few grouped queries on covering indexes, never one query per mailout or per message.

- counts: `GROUP BY mailout_id, status` on the (mailout_id, status, next_attempt_at) index;
- first and last send: min/max(sent_at) of the mailout's sent messages;
- errors: `GROUP BY outcome` on the (mailout_id, outcome) index of message_attempts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from mailer.domain.mailouts import Mailout
from mailer.domain.statuses import MailoutStatus, MessageStatus, Outcome
from mailer.store import mailouts as mailout_store
from mailer.store.mailouts import Page, from_row, listing, page_of
from mailer.store.tables import message_attempts, messages

# Every kind of failed request; the statistics show all of them, zeros included.
ERROR_KINDS = tuple(o for o in Outcome if o is not Outcome.SENT)


def zero_counts() -> dict[MessageStatus, int]:
    return dict.fromkeys(MessageStatus, 0)


@dataclass(frozen=True, slots=True)
class MailoutCounts:
    """A mailout with its message count per status."""

    mailout: Mailout
    by_status: dict[MessageStatus, int]

    @property
    def total(self) -> int:
        return sum(self.by_status.values())


@dataclass(frozen=True, slots=True)
class MailoutStatsData:
    """Everything `GET /api/mailouts/{id}/stats` shows."""

    counts: MailoutCounts
    first_sent_at: datetime | None
    last_sent_at: datetime | None
    attempts: int
    errors_by_kind: dict[Outcome, int]


async def counts_by_status(
    conn: AsyncConnection, mailout_ids: Sequence[int]
) -> dict[int, dict[MessageStatus, int]]:
    """Message counts per status for each of the mailouts, in one grouped query; all statuses present."""
    counts = {mailout_id: zero_counts() for mailout_id in mailout_ids}
    if not mailout_ids:
        return counts
    query = (
        select(messages.c.mailout_id, messages.c.status, func.count())
        .where(messages.c.mailout_id.in_(mailout_ids))
        .group_by(messages.c.mailout_id, messages.c.status)
    )
    for mailout_id, status, count in await conn.execute(query):
        # A status this version does not know (a newer process wrote it) must not break the statistics.
        if status in MessageStatus:
            counts[mailout_id][MessageStatus(status)] = count
    return counts


async def list_page(
    db: AsyncEngine, status: MailoutStatus | None, limit: int, after: int
) -> Page[MailoutCounts]:
    """A page of mailouts, as in the mailout list, each with its counts."""
    async with db.connect() as conn:
        rows = (await conn.execute(listing(status, limit, after))).mappings().all()
        page = page_of([from_row(r) for r in rows], limit, lambda m: m.id)
        counts = await counts_by_status(conn, [m.id for m in page.items])
    return Page([MailoutCounts(m, counts[m.id]) for m in page.items], page.next_after)


async def for_mailout(db: AsyncEngine, mailout_id: int) -> MailoutStatsData:
    """The statistics of one mailout; NotFoundError when it does not exist."""
    sent_range = select(func.min(messages.c.sent_at), func.max(messages.c.sent_at)).where(
        messages.c.mailout_id == mailout_id, messages.c.status == MessageStatus.SENT
    )
    outcomes = (
        select(message_attempts.c.outcome, func.count())
        .where(message_attempts.c.mailout_id == mailout_id)
        .group_by(message_attempts.c.outcome)
    )
    async with db.connect() as conn:
        mailout = await mailout_store.read(conn, mailout_id)
        counts = (await counts_by_status(conn, [mailout_id]))[mailout_id]
        first_sent_at, last_sent_at = (await conn.execute(sent_range)).one()
        by_outcome = {outcome: count for outcome, count in await conn.execute(outcomes)}
    return MailoutStatsData(
        counts=MailoutCounts(mailout, counts),
        first_sent_at=first_sent_at,
        last_sent_at=last_sent_at,
        attempts=sum(by_outcome.values()),
        errors_by_kind={kind: by_outcome.get(kind, 0) for kind in ERROR_KINDS},
    )
