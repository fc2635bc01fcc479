"""Every SQL statement of the sending engine: activation, claims, outcomes, expiry, finishing, lease recovery.

Each method opens its own short transaction and returns plain data: on SQLite the pool has one connection,
so no connection is ever held across a wait for anything but the database.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    and_,
    bindparam,
    case,
    exists,
    func,
    literal,
    literal_column,
    or_,
    select,
    text,
    true,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from mailer.domain.sending import ClaimedMessage, MailoutPlan, MessageOutcome
from mailer.domain.statuses import MailoutStatus, MessageStatus
from mailer.domain.windows import SendWindow, next_open_by_zone
from mailer.store.coltypes import UTCDateTime
from mailer.store.tables import customers, mailouts, message_attempts, messages

# Mailouts whose messages may still change; the end applies to all of them.
_LIVE_MAILOUT = (MailoutStatus.SCHEDULED, MailoutStatus.RUNNING, MailoutStatus.PAUSED)
_SECONDS_PER_HOUR = 3600
_SECONDS_PER_MINUTE = 60
# Ids per lease-renewal UPDATE: far below SQLite's bound-parameter limit, and a process holds a few times
# its send concurrency at most, so one statement per round is the usual case.
RENEW_CHUNK = 1000


@dataclass(frozen=True, slots=True)
class ScanResult:
    """Mailouts that need an actor now, and the next start still to come."""

    active_ids: list[int]
    next_start_at: datetime | None


@dataclass(frozen=True, slots=True)
class Activation:
    """The messages an activation created: their (id, customer_id) pairs when at most `list_max` were
    created, else only their count and id range (`messages` empty; other mailouts' ids may lie between)."""

    count: int
    first_id: int | None
    last_id: int | None
    messages: list[tuple[int, int | None]]


@dataclass(frozen=True, slots=True)
class LeaseRecovery:
    """How many stuck `sending` messages went where."""

    pending: int
    expired: int
    cancelled: int

    @property
    def total(self) -> int:
        return self.pending + self.expired + self.cancelled


def window_of(start_s: int | None, end_s: int | None) -> SendWindow | None:
    """The window from its stored form (seconds since local midnight; both null = any time)."""
    if start_s is None or end_s is None:
        return None
    return SendWindow(_time_of(start_s), _time_of(end_s))


def _time_of(seconds: int) -> time:
    return time(
        seconds // _SECONDS_PER_HOUR,
        seconds % _SECONDS_PER_HOUR // _SECONDS_PER_MINUTE,
        seconds % _SECONDS_PER_MINUTE,
    )


def _at(value: datetime) -> ColumnElement[datetime]:
    """A bound instant, typed so that SQLite stores it as the same text as the column."""
    return literal(value, UTCDateTime)


class DispatchStore:
    """The engine's queries over one AsyncEngine (PostgreSQL or SQLite)."""

    def __init__(self, engine: AsyncEngine, record_engine: AsyncEngine | None = None) -> None:
        self._engine = engine
        self.is_postgres = engine.dialect.name == "postgresql"
        # PostgreSQL: outcomes are written in autocommit, by default on an engine whose sessions commit
        # asynchronously (`create_record_engine`); without one, on the main engine (durable commits).
        self._record_engine = record_engine or engine.execution_options(isolation_level="AUTOCOMMIT")

    # --- the scheduler -------------------------------------------------------------------------------------

    async def scan(self, now: datetime) -> ScanResult:
        """Mailouts an actor must look after (running, paused, or scheduled and due), and the next start."""
        due = or_(
            mailouts.c.status.in_((MailoutStatus.RUNNING, MailoutStatus.PAUSED)),
            and_(mailouts.c.status == MailoutStatus.SCHEDULED, mailouts.c.start_at <= _at(now)),
        )
        async with self._engine.connect() as conn:
            ids = (await conn.execute(select(mailouts.c.id).where(due).order_by(mailouts.c.id))).scalars()
            active = list(ids)
            next_start = (
                await conn.execute(
                    select(func.min(mailouts.c.start_at)).where(
                        mailouts.c.status == MailoutStatus.SCHEDULED, mailouts.c.start_at > _at(now)
                    )
                )
            ).scalar_one_or_none()
        return ScanResult(active, _as_instant(next_start))

    async def load_mailout(self, mailout_id: int) -> MailoutPlan | None:
        async with self._engine.connect() as conn:
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

    # --- activation ----------------------------------------------------------------------------------------

    async def activate(self, plan: MailoutPlan, now: datetime, list_max: int = 0) -> Activation | None:
        """Start a due mailout not yet activated and create its messages in the same transaction.

        Returns the messages created (listed when at most `list_max`), or None when another actor (or
        process) won, or the mailout is not due any more. `next_attempt_at` is computed once per distinct
        customer zone, not per customer.
        """
        async with self._engine.begin() as conn:
            won = await conn.execute(
                update(mailouts)
                .where(
                    mailouts.c.id == plan.id,
                    # Running and not activated: created with a start that had come.
                    mailouts.c.status.in_((MailoutStatus.SCHEDULED, MailoutStatus.RUNNING)),
                    mailouts.c.activated_at.is_(None),
                    mailouts.c.start_at <= _at(now),
                    mailouts.c.end_at > _at(now),
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
            audience = _audience(tuple(current.operator_codes or ()), tuple(current.tags or ()))
            window = window_of(current.window_start_s, current.window_end_s)
            next_at: ColumnElement[Any] = _at(now)
            if window is not None:
                zones = (
                    await conn.execute(select(customers.c.timezone).where(audience).distinct())
                ).scalars()
                opens = next_open_by_zone(now, window, zones)
                next_at = _by_zone(customers.c.timezone, opens, now)
            source = select(
                literal(plan.id).label("mailout_id"),
                customers.c.id,
                customers.c.phone,
                customers.c.timezone,
                literal(MessageStatus.PENDING.value).label("status"),
                literal(0).label("attempts"),
                next_at.label("next_attempt_at"),
                _at(now).label("created_at"),
                _at(now).label("updated_at"),
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
            statement = insert.from_select(columns, source).on_conflict_do_nothing(
                index_elements=["mailout_id", "customer_id"]
            )
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

    async def finish_unstarted(self, mailout_id: int, now: datetime) -> bool:
        """A scheduled mailout whose end came before it could start: finished, with no messages."""
        async with self._engine.begin() as conn:
            result = await conn.execute(
                update(mailouts)
                .where(
                    mailouts.c.id == mailout_id,
                    mailouts.c.status.in_(_LIVE_MAILOUT),
                    mailouts.c.activated_at.is_(None),
                    mailouts.c.end_at <= _at(now),
                )
                .values(status=MailoutStatus.FINISHED, finished_at=now, updated_at=now)
            )
            return result.rowcount == 1

    # --- the mailout actor ---------------------------------------------------------------------------------

    async def claim(self, mailout_id: int, now: datetime, limit: int, lease_s: float) -> list[ClaimedMessage]:
        """Move up to `limit` due pending messages of a running mailout to `sending`, leased, oldest first."""
        running = exists().where(mailouts.c.id == mailout_id, mailouts.c.status == MailoutStatus.RUNNING)
        due = (
            select(messages.c.id)
            .where(
                messages.c.mailout_id == mailout_id,
                messages.c.status == MessageStatus.PENDING,
                messages.c.next_attempt_at <= _at(now),
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
        async with self._engine.begin() as conn:
            rows = (await conn.execute(statement)).all()
        claimed = [
            ClaimedMessage(r.id, mailout_id, r.phone, r.timezone, r.attempts, r.customer_id) for r in rows
        ]
        claimed.sort(key=lambda m: m.id)
        return claimed

    async def next_due(self, mailout_id: int) -> datetime | None:
        """The earliest next_attempt_at of the mailout's pending messages."""
        async with self._engine.connect() as conn:
            value = (
                await conn.execute(
                    select(func.min(messages.c.next_attempt_at)).where(
                        messages.c.mailout_id == mailout_id, messages.c.status == MessageStatus.PENDING
                    )
                )
            ).scalar_one_or_none()
        return _as_instant(value)

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
        async with self._engine.begin() as conn:
            last_id = await conn.scalar(select(func.max(ids.subquery().c.id)))
            if last_id is None:
                return None
            chunk = and_(pending, messages.c.id > after_id, messages.c.id <= last_id)
            zones = (await conn.execute(select(messages.c.timezone).where(chunk).distinct())).scalars()
            opens = next_open_by_zone(now, window, zones)
            result = await conn.execute(
                update(messages)
                .where(chunk)
                .values(next_attempt_at=_by_zone(messages.c.timezone, opens, now), updated_at=now)
            )
            return int(last_id), max(result.rowcount, 0)

    async def expire_pending(self, mailout_id: int, now: datetime) -> int:
        """At the end: pending messages expire, if the end really came and the mailout is not final."""
        ended = exists().where(
            mailouts.c.id == mailout_id, mailouts.c.end_at <= _at(now), mailouts.c.status.in_(_LIVE_MAILOUT)
        )
        async with self._engine.begin() as conn:
            result = await conn.execute(
                update(messages)
                .where(messages.c.mailout_id == mailout_id, messages.c.status == MessageStatus.PENDING, ended)
                .values(status=MessageStatus.EXPIRED, next_attempt_at=None, updated_at=now)
            )
            return result.rowcount

    async def finish(self, mailout_id: int, now: datetime) -> bool:
        """Mark the mailout finished (conditional on its end having come); expire what is still pending."""
        async with self._engine.begin() as conn:
            result = await conn.execute(
                update(mailouts)
                .where(
                    mailouts.c.id == mailout_id,
                    mailouts.c.status.in_(_LIVE_MAILOUT),
                    mailouts.c.end_at <= _at(now),
                )
                .values(status=MailoutStatus.FINISHED, finished_at=now, updated_at=now)
            )
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
        async with self._engine.begin() as conn:
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

    # --- the recorder --------------------------------------------------------------------------------------

    async def record(self, outcomes: Sequence[MessageOutcome], now: datetime) -> None:
        """Write a batch of outcomes: on PostgreSQL one statement (UPDATE of messages, INSERT of attempts); on
        SQLite an executemany UPDATE and one INSERT in a transaction.

        Only rows still in `sending` change: a message cancelled or recovered meanwhile keeps its new state.
        """
        if not outcomes:
            return
        message_params = [
            {
                "b_id": o.message_id,
                "b_status": o.status.value,
                "b_inc": 1 if o.attempt is not None else 0,
                # A pending row without a due time would never be claimed again.
                "b_next": o.next_attempt_at or (now if o.status is MessageStatus.PENDING else None),
                "b_sent": o.sent_at,
                "b_error": o.error,
                "b_now": now,
            }
            for o in outcomes
        ]
        attempt_params = [
            {
                "message_id": o.message_id,
                "mailout_id": o.mailout_id,
                "started_at": o.attempt.started_at,
                "duration_ms": o.attempt.duration_ms,
                "outcome": o.attempt.outcome,
                "http_status": o.attempt.http_status,
                "error": o.attempt.error,
            }
            for o in outcomes
            if o.attempt is not None
        ]
        if self.is_postgres:
            # One set-based statement: the counter triggers fire once per batch instead of once per row, and
            # rows are locked in id order, so two processes' batches cannot deadlock on them.
            ordered = sorted(message_params, key=_message_id)
            arrays = {name: [p[key] for p in ordered] for name, key in _PG_RECORD_ARRAYS.items()}
            attempts = {name: [p[key] for p in attempt_params] for name, key in _PG_ATTEMPT_ARRAYS.items()}
            # Autocommit: the statement is its own transaction, and the UPDATE and the attempts' INSERT commit
            # together. On the record engine the commit is asynchronous (`create_record_engine`).
            async with self._record_engine.connect() as conn:
                await conn.execute(_PG_RECORD_STATEMENT, arrays | attempts | {"now": now})
            return
        async with self._engine.begin() as conn:
            await conn.execute(_RECORD_STATEMENT, message_params)
            if attempt_params:
                # An executemany INSERT is sent as multi-row VALUES by SQLAlchemy ("insertmanyvalues").
                await conn.execute(message_attempts.insert(), attempt_params)

    # --- leases --------------------------------------------------------------------------------------------

    async def recover_leases(self, now: datetime) -> LeaseRecovery:
        """`sending` messages whose lease ran out: back to pending, or cancelled/expired per their mailout."""
        stuck = and_(messages.c.status == MessageStatus.SENDING, messages.c.lease_until < _at(now))
        cancelled_ids = select(mailouts.c.id).where(mailouts.c.status == MailoutStatus.CANCELLED)
        ended_ids = select(mailouts.c.id).where(
            or_(mailouts.c.status == MailoutStatus.FINISHED, mailouts.c.end_at <= _at(now))
        )
        cleared = {"lease_until": None, "updated_at": now}
        async with self._engine.begin() as conn:
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

    # --- cross-process wake-ups (PostgreSQL) ---------------------------------------------------------------

    async def notify(self, channel: str, payload: str) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(
                text("SELECT pg_notify(:channel, :payload)"), {"channel": channel, "payload": payload}
            )

    # --- lease renewal -------------------------------------------------------------------------------------

    async def renew_leases(self, ids: Sequence[int], until: datetime) -> int:
        """Push `lease_until` to `until` for those of `ids` still in `sending`; how many were renewed.

        Rows that left `sending` meanwhile (recorded, cancelled, recovered) are left alone, and so (on
        PostgreSQL) are rows locked right now: a lock means the recorder is writing the row's outcome, which
        clears the lease anyway, and waiting for it while holding other rows' locks would deadlock with it.
        """
        renewed = 0
        async with self._engine.begin() as conn:
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


# The PostgreSQL statement's array parameters and the executemany parameter each is built from.
_PG_RECORD_ARRAYS = {
    "ids": "b_id",
    "statuses": "b_status",
    "incs": "b_inc",
    "nexts": "b_next",
    "sents": "b_sent",
    "errors": "b_error",
}


# The attempts' array parameters of the one-statement record and the attempt row key each is built from.
_PG_ATTEMPT_ARRAYS = {
    "a_message_ids": "message_id",
    "a_mailout_ids": "mailout_id",
    "a_started": "started_at",
    "a_durations": "duration_ms",
    "a_outcomes": "outcome",
    "a_statuses": "http_status",
    "a_errors": "error",
}


def _message_id(params: dict[str, Any]) -> int:
    return int(params["b_id"])


# The outcomes' UPDATE and the attempts' INSERT as data-modifying CTEs of one statement, run in autocommit:
# one round trip per batch instead of BEGIN, SET, UPDATE, INSERT, COMMIT.
_PG_RECORD_STATEMENT = text(
    """
    WITH updated AS (
        UPDATE messages AS m SET
            status = v.status,
            attempts = m.attempts + v.inc,
            next_attempt_at = v.next_at,
            sent_at = COALESCE(v.sent_at, m.sent_at),
            last_error = COALESCE(v.error, m.last_error),
            lease_until = NULL,
            updated_at = :now
        FROM unnest(
            CAST(:ids AS bigint[]), CAST(:statuses AS text[]), CAST(:incs AS integer[]),
            CAST(:nexts AS timestamptz[]), CAST(:sents AS timestamptz[]), CAST(:errors AS text[])
        ) AS v(id, status, inc, next_at, sent_at, error)
        WHERE m.id = v.id AND m.status = 'sending'
        RETURNING m.id
    ), inserted AS (
        INSERT INTO message_attempts
            (message_id, mailout_id, started_at, duration_ms, outcome, http_status, error)
        SELECT * FROM unnest(
            CAST(:a_message_ids AS bigint[]), CAST(:a_mailout_ids AS bigint[]),
            CAST(:a_started AS timestamptz[]), CAST(:a_durations AS double precision[]),
            CAST(:a_outcomes AS text[]), CAST(:a_statuses AS integer[]), CAST(:a_errors AS text[])
        )
        RETURNING id
    )
    SELECT (SELECT count(*) FROM updated), (SELECT count(*) FROM inserted)
    """
)

_RECORD_STATEMENT = (
    update(messages)
    .where(messages.c.id == bindparam("b_id"), messages.c.status == MessageStatus.SENDING)
    .values(
        status=bindparam("b_status"),
        attempts=messages.c.attempts + bindparam("b_inc"),
        next_attempt_at=bindparam("b_next", type_=UTCDateTime),
        sent_at=func.coalesce(bindparam("b_sent", type_=UTCDateTime), messages.c.sent_at),
        last_error=func.coalesce(bindparam("b_error"), messages.c.last_error),
        lease_until=None,
        updated_at=bindparam("b_now", type_=UTCDateTime),
    )
)


def _audience(operator_codes: tuple[str, ...], tags: tuple[str, ...]) -> ColumnElement[bool]:
    """The customers a mailout's filter matches (an empty list matches everyone)."""
    conditions: list[ColumnElement[bool]] = []
    if operator_codes:
        conditions.append(customers.c.operator_code.in_(operator_codes))
    if tags:
        conditions.append(customers.c.tag.in_(tags))
    # Always a WHERE: SQLite needs one between INSERT … SELECT and ON CONFLICT to parse them apart.
    return and_(true(), *conditions) if conditions else literal_column("1") == literal_column("1")


def _by_zone(column: Any, opens: dict[str, datetime], default: datetime) -> ColumnElement[Any]:
    """CASE column WHEN zone THEN its instant …: one branch per distinct zone, computed once each."""
    if not opens:
        return _at(default)
    return case({zone: _at(at) for zone, at in opens.items()}, value=column, else_=_at(default))


def _as_instant(value: Any) -> datetime | None:
    """Aggregates (MIN) lose the column type on SQLite and come back as text; normalise to aware UTC."""
    if value is None:
        return None
    return UTCDateTime().process_result_value(value, None)  # type: ignore[arg-type]
