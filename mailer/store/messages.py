"""Message rows as the API reads them, and adding one customer to a mailout by hand.

The engine creates messages in bulk at activation and records their sends; this module serves the API only.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, insert, select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from mailer.domain.errors import ConflictError, NotFoundError
from mailer.domain.mailouts import check_accepts_messages
from mailer.domain.statuses import MailoutStatus, MessageStatus
from mailer.domain.windows import load_zone, next_open
from mailer.store import mailouts as mailout_store
from mailer.store.paging import Page, page_of
from mailer.store.tables import customers, mailouts, message_attempts, messages

RESOURCE = "message"

# What the API shows of a message: the lease and the copied time zone are the engine's business.
MESSAGE_COLUMNS: tuple[ColumnElement[Any], ...] = (
    messages.c.id,
    messages.c.mailout_id,
    messages.c.customer_id,
    messages.c.phone,
    messages.c.status,
    messages.c.created_at,
    messages.c.updated_at,
    messages.c.sent_at,
    messages.c.attempts,
    messages.c.next_attempt_at,
    messages.c.last_error,
)
ATTEMPT_COLUMNS: tuple[ColumnElement[Any], ...] = (
    message_attempts.c.started_at,
    message_attempts.c.duration_ms,
    message_attempts.c.outcome,
    message_attempts.c.http_status,
    message_attempts.c.error,
)


@dataclass(frozen=True, slots=True)
class MessageWithAttempts:
    """A message row and its attempt rows, oldest first."""

    message: RowMapping
    attempts: list[RowMapping]


async def list_page(
    db: AsyncEngine, mailout_id: int, status: MessageStatus | None, limit: int, after: int
) -> Page[RowMapping]:
    """A mailout's messages in id order after `after`; NotFoundError when the mailout does not exist."""
    query = (
        select(*MESSAGE_COLUMNS)
        .where(messages.c.mailout_id == mailout_id, messages.c.id > after)
        .order_by(messages.c.id)
        .limit(limit + 1)
    )
    if status is not None:
        query = query.where(messages.c.status == status)
    async with db.connect() as conn:
        await mailout_store.read(conn, mailout_id)
        rows = (await conn.execute(query)).mappings().all()
    return page_of(rows, limit, lambda r: int(r["id"]))


async def get_with_attempts(db: AsyncEngine, message_id: int) -> MessageWithAttempts:
    async with db.connect() as conn:
        row = (
            (await conn.execute(select(*MESSAGE_COLUMNS).where(messages.c.id == message_id)))
            .mappings()
            .one_or_none()
        )
        if row is None:
            raise NotFoundError(RESOURCE, message_id)
        attempts = (
            (
                await conn.execute(
                    select(*ATTEMPT_COLUMNS)
                    .where(message_attempts.c.message_id == message_id)
                    .order_by(message_attempts.c.started_at, message_attempts.c.id)
                )
            )
            .mappings()
            .all()
        )
    return MessageWithAttempts(row, list(attempts))


async def add(db: AsyncEngine, mailout_id: int, customer_id: int, now: datetime) -> RowMapping:
    """A pending message for one customer, due when its window first opens after the later of now and start.

    A mailout that finished early (every message final) before its end is running again. NotFoundError for
    an unknown mailout or customer, ConflictError when the mailout will not send again or already has a
    message for that customer.
    """
    async with db.begin() as conn:
        # Locked so that a cancel running at the same time cannot miss the new pending message.
        mailout = await mailout_store.read(conn, mailout_id, lock=True)
        if mailout.status is MailoutStatus.FINISHED and mailout.activated_at and now < mailout.spec.end_at:
            # It finished early because every message was final; before its end a new message reopens it
            # (the customer is meant to get the text). After its end, or cancelled, it takes none (409).
            await conn.execute(
                update(mailouts)
                .where(mailouts.c.id == mailout_id)
                .values(status=MailoutStatus.RUNNING, finished_at=None, updated_at=now)
            )
        else:
            check_accepts_messages(mailout.status)
        customer = (
            (
                await conn.execute(
                    select(customers.c.phone, customers.c.timezone)
                    .where(customers.c.id == customer_id)
                    # Shared lock: the customer cannot be deleted before the message refers to it.
                    .with_for_update(read=True)
                )
            )
            .mappings()
            .one_or_none()
        )
        if customer is None:
            raise NotFoundError("customer", customer_id)
        duplicate = await conn.scalar(
            select(messages.c.id).where(
                messages.c.mailout_id == mailout_id, messages.c.customer_id == customer_id
            )
        )
        if duplicate is not None:
            raise ConflictError(
                f"mailout {mailout_id} already has message {duplicate} for customer {customer_id}"
            )
        spec = mailout.spec
        due = next_open(max(now, spec.start_at), spec.window, load_zone(customer["timezone"]))
        values = {
            "mailout_id": mailout_id,
            "customer_id": customer_id,
            "phone": customer["phone"],
            "timezone": customer["timezone"],
            "status": MessageStatus.PENDING,
            "attempts": 0,
            "next_attempt_at": due,
            "created_at": now,
            "updated_at": now,
        }
        try:
            result = await conn.execute(insert(messages).values(values).returning(*MESSAGE_COLUMNS))
        except IntegrityError as exc:
            # The engine's activation inserted the same pair between our check and this insert.
            raise ConflictError(
                f"mailout {mailout_id} already has a message for customer {customer_id}"
            ) from exc
        return result.mappings().one()
