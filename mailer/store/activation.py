"""Activation: a due mailout starts and its messages are created in one transaction."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, func, literal, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from mailer.domain.mailouts import AudienceFilter
from mailer.domain.sending import MailoutPlan
from mailer.domain.statuses import MailoutStatus, MessageStatus
from mailer.domain.windows import next_open_by_zone
from mailer.store.audience import matches
from mailer.store.instants import at, by_zone, window_of
from mailer.store.tables import customers, mailouts, messages


@dataclass(frozen=True, slots=True)
class Activation:
    """The messages an activation created: their (id, customer_id) pairs when at most `list_max` were
    created, else only their count and id range (`messages` empty; other mailouts' ids may lie between)."""

    count: int
    first_id: int | None
    last_id: int | None
    messages: list[tuple[int, int | None]]


class ActivationQueries:
    """The mailout actor's activation statements."""

    _db: AsyncEngine
    is_postgres: bool

    async def activate(self, plan: MailoutPlan, now: datetime, list_max: int = 0) -> Activation | None:
        """Start a due mailout not yet activated and create its messages in the same transaction.

        Returns the messages created (listed when at most `list_max`), or None when another actor (or
        process) won, or the mailout is not due any more. `next_attempt_at` is computed once per distinct
        customer zone, not per customer.
        """
        async with self._db.begin() as conn:
            won = await conn.execute(
                update(mailouts)
                .where(
                    mailouts.c.id == plan.id,
                    # Running and not activated: created with a start that had come.
                    mailouts.c.status.in_((MailoutStatus.SCHEDULED, MailoutStatus.RUNNING)),
                    mailouts.c.activated_at.is_(None),
                    mailouts.c.start_at <= at(now),
                    mailouts.c.end_at > at(now),
                )
                .values(status=MailoutStatus.RUNNING, activated_at=now, updated_at=now)
            )
            if won.rowcount != 1:
                return None
            # Read the mailout again inside the transaction: the filter may have changed since `plan`.
            current = (
                await conn.execute(
                    select(
                        mailouts.c.operator_codes,
                        mailouts.c.tags,
                        mailouts.c.window_start_s,
                        mailouts.c.window_end_s,
                    ).where(mailouts.c.id == plan.id)
                )
            ).one()
            # Always a WHERE (`matches` gives at least a true): SQLite needs one between INSERT … SELECT
            # and ON CONFLICT to parse them apart.
            audience = matches(AudienceFilter(tuple(current.operator_codes or ()), tuple(current.tags or ())))
            window = window_of(current.window_start_s, current.window_end_s)
            next_at: ColumnElement[Any] = at(now)
            if window is not None:
                zones = (
                    await conn.execute(select(customers.c.timezone).where(audience).distinct())
                ).scalars()
                opens = next_open_by_zone(now, window, zones)
                next_at = by_zone(customers.c.timezone, opens, now)
            source = select(
                literal(plan.id).label("mailout_id"),
                customers.c.id,
                customers.c.phone,
                customers.c.timezone,
                literal(MessageStatus.PENDING.value).label("status"),
                literal(0).label("attempts"),
                next_at.label("next_attempt_at"),
                at(now).label("created_at"),
                at(now).label("updated_at"),
            ).where(audience)
            columns = [
                "mailout_id",
                "customer_id",
                "phone",
                "timezone",
                "status",
                "attempts",
                "next_attempt_at",
                "created_at",
                "updated_at",
            ]
            # Messages added through the API before the start already exist; those created here have higher
            # ids (the mailout row, locked by the UPDATE above, keeps other writers of its messages out).
            before = await conn.scalar(
                select(func.max(messages.c.id)).where(messages.c.mailout_id == plan.id)
            )
            insert = (postgresql.insert if self.is_postgres else sqlite.insert)(messages)
            statement = insert.from_select(columns, source)
            if before is not None:
                # Only then can a customer already have a message here. ON CONFLICT costs an index probe per
                # row (a fifth of a 1,000,000-message activation on PostgreSQL), so the usual case goes
                # without it; the unique constraint still stands guard.
                statement = statement.on_conflict_do_nothing(index_elements=["mailout_id", "customer_id"])
            count = max((await conn.execute(statement)).rowcount, 0)
            if count == 0:
                return Activation(0, None, None, [])
            new = and_(messages.c.mailout_id == plan.id, messages.c.id > (before or 0))
            # Ids are read back with a separate SELECT rather than RETURNING: a mailout to a million customers
            # then costs two numbers, not a million rows in memory.
            if count > list_max:
                first, last = (
                    await conn.execute(select(func.min(messages.c.id), func.max(messages.c.id)).where(new))
                ).one()
                return Activation(count, first, last, [])
            rows = (
                await conn.execute(
                    select(messages.c.id, messages.c.customer_id).where(new).order_by(messages.c.id)
                )
            ).all()
            pairs = [(row.id, row.customer_id) for row in rows]
            return Activation(count, pairs[0][0] if pairs else None, pairs[-1][0] if pairs else None, pairs)
