"""What the admin UI's overview pages read of mailouts: counts, due work, send rates, messages, exports.

Few rows each, all by index; the rows and changes of one mailout are `mailer.store.mailouts`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, func, select
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from mailer.domain.mailouts import Mailout
from mailer.domain.statuses import MailoutStatus, MessageStatus, Outcome
from mailer.store import mailouts as mailout_store
from mailer.store.mailouts import contains, from_row, listing
from mailer.store.messages import MESSAGE_COLUMNS
from mailer.store.paging import Page, page_of
from mailer.store.tables import customers, mailouts, message_attempts, messages


async def count_by_status(db: AsyncEngine) -> dict[MailoutStatus, int]:
    """How many mailouts are in each status (every status present, zeros included)."""
    counts = dict.fromkeys(MailoutStatus, 0)
    query = select(mailouts.c.status, func.count()).group_by(mailouts.c.status)
    async with db.connect() as conn:
        for status, n in await conn.execute(query):
            if status in MailoutStatus:
                counts[MailoutStatus(status)] = n
    return counts


async def list_in_status(db: AsyncEngine, statuses: Sequence[MailoutStatus], limit: int) -> list[Mailout]:
    """Mailouts in any of `statuses`, soonest start first (the (status, start_at) index)."""
    query = (
        select(mailouts)
        .where(mailouts.c.status.in_(statuses))
        .order_by(mailouts.c.start_at, mailouts.c.id)
        .limit(limit)
    )
    async with db.connect() as conn:
        rows = (await conn.execute(query)).mappings().all()
    return [from_row(r) for r in rows]


def text_listing(status: MailoutStatus | None, text: str, limit: int, after: int) -> Select[Any]:
    """The mailout list narrowed to those whose text holds `text`."""
    return listing(status, limit, after).where(contains(text))


async def search_page(
    db: AsyncEngine, status: MailoutStatus | None, text: str, limit: int, after: int
) -> Page[Mailout]:
    query = text_listing(status, text, limit, after) if text else listing(status, limit, after)
    async with db.connect() as conn:
        rows = (await conn.execute(query)).mappings().all()
    return page_of([from_row(r) for r in rows], limit, lambda m: m.id)


async def with_due_work(db: AsyncEngine, mailout_ids: Sequence[int], now: datetime) -> set[int]:
    """Those of the mailouts that have a pending message due now: one claim-index probe per mailout."""
    if not mailout_ids:
        return set()
    due = (
        select(messages.c.id)
        .where(
            messages.c.mailout_id == mailouts.c.id,
            messages.c.status == MessageStatus.PENDING,
            messages.c.next_attempt_at <= now,
        )
        .limit(1)
        .exists()
    )
    query = select(mailouts.c.id).where(mailouts.c.id.in_(mailout_ids), due)
    async with db.connect() as conn:
        return set((await conn.scalars(query)).all())


def _minute(column: Any, dialect: str) -> Any:
    if dialect == "postgresql":
        return func.date_trunc("minute", column)
    # SQLite stores naive UTC text (see UTCDateTime); strftime cuts it to the minute.
    return func.strftime("%Y-%m-%d %H:%M:00", column)


def _as_minute(value: Any) -> datetime:
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    assert isinstance(moment, datetime)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


async def sends_per_minute(
    db: AsyncEngine, mailout_id: int, since: datetime
) -> tuple[dict[datetime, int], dict[datetime, int]]:
    """Sent messages and failed requests per UTC minute since `since`: ({minute: sent}, {minute: failed}).

    Sent ones are read off the partial (mailout_id, sent_at) index, failed requests off the (mailout_id,
    outcome) index: the cost grows with the sends of the period shown, so the page asks for a bounded one.
    """
    async with db.connect() as conn:
        dialect = conn.dialect.name
        sent_minute = _minute(messages.c.sent_at, dialect).label("minute")
        sent = await conn.execute(
            select(sent_minute, func.count())
            .where(
                messages.c.mailout_id == mailout_id,
                messages.c.sent_at.is_not(None),
                messages.c.sent_at >= since,
            )
            .group_by(sent_minute)
        )
        sent_counts = {_as_minute(minute): n for minute, n in sent}
        failed_minute = _minute(message_attempts.c.started_at, dialect).label("minute")
        failed = await conn.execute(
            select(failed_minute, func.count())
            .where(
                message_attempts.c.mailout_id == mailout_id,
                message_attempts.c.outcome != Outcome.SENT,
                message_attempts.c.started_at >= since,
            )
            .group_by(failed_minute)
        )
        failed_counts = {_as_minute(minute): n for minute, n in failed}
    return sent_counts, failed_counts


def _messages_of(
    mailout_id: int, status: MessageStatus | None, phone: str | None
) -> list[ColumnElement[bool]]:
    conditions = [messages.c.mailout_id == mailout_id]
    if status is not None:
        conditions.append(messages.c.status == status)
    if phone is not None:
        # Through the customer: the (mailout_id, customer_id) unique index finds it at once, where the
        # phone copied into messages has no index (messages of a deleted customer are not found this way).
        customer = select(customers.c.id).where(customers.c.phone == phone).scalar_subquery()
        conditions.append(messages.c.customer_id == customer)
    return conditions


async def message_page(
    db: AsyncEngine,
    mailout_id: int,
    *,
    status: MessageStatus | None,
    phone: str | None,
    limit: int,
    after: int,
) -> Page[RowMapping]:
    """A mailout's messages in id order after `after`, by status and customer phone."""
    query = (
        select(*MESSAGE_COLUMNS)
        .where(*_messages_of(mailout_id, status, phone), messages.c.id > after)
        .order_by(messages.c.id)
        .limit(limit + 1)
    )
    async with db.connect() as conn:
        await mailout_store.read(conn, mailout_id)
        rows = (await conn.execute(query)).mappings().all()
    return page_of(rows, limit, lambda r: int(r["id"]))


EXPORT_COLUMNS = ("id", "phone", "customer_id", "tag", "status", "attempts", "sent_at", "last_error")


async def export_batch(
    conn: AsyncConnection, mailout_id: int, status: MessageStatus | None, after: int, limit: int
) -> list[RowMapping]:
    """One keyset batch of a mailout's messages for the CSV export, with the customer's tag."""
    query = (
        select(
            messages.c.id,
            messages.c.phone,
            messages.c.customer_id,
            customers.c.tag,
            messages.c.status,
            messages.c.attempts,
            messages.c.sent_at,
            messages.c.last_error,
        )
        .select_from(messages.outerjoin(customers, customers.c.id == messages.c.customer_id))
        .where(*_messages_of(mailout_id, status, None), messages.c.id > after)
        .order_by(messages.c.id)
        .limit(limit)
    )
    return list((await conn.execute(query)).mappings().all())


async def active_since(conn: AsyncConnection, since: datetime) -> list[int]:
    """Mailouts that were sending at some moment since `since`: started, and not finished before it."""
    query = select(mailouts.c.id).where(
        mailouts.c.activated_at.is_not(None),
        (mailouts.c.finished_at.is_(None)) | (mailouts.c.finished_at >= since),
    )
    return list((await conn.scalars(query)).all())
