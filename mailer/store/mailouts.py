"""Mailout rows: create, read, list, change and delete, each in one short transaction.

Changes read the row `FOR UPDATE` (PostgreSQL; SQLite has one writer anyway), let `mailer.domain.mailouts`
decide, and write in the same transaction, so a concurrent activation by the engine (a conditional
`UPDATE … WHERE status = 'scheduled'`) and an API change never both win.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, bindparam, delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from mailer.domain.errors import NotFoundError
from mailer.domain.mailouts import (
    AudienceFilter,
    Mailout,
    MailoutSpec,
    SpecEdit,
    cancel_target,
    changed_fields,
    check_change,
    check_times,
    window_from_seconds,
    window_to_seconds,
)
from mailer.domain.statuses import MailoutStatus, MessageStatus
from mailer.store.direct import DirectStatement, fetch_one
from mailer.store.paging import Page, page_of
from mailer.store.tables import mailouts, messages

RESOURCE = "mailout"
# Messages deleted per transaction when a mailout goes: 15-30 ms of SQLite's write lock each, with their
# attempts and index entries (100,000 in 0.7 s), so no other writer waits long; see docs/benchmarks.md.
DELETE_CHUNK_ROWS = 2_000


def from_row(row: Mapping[Any, Any]) -> Mailout:
    return Mailout(
        id=row["id"],
        spec=MailoutSpec(
            start_at=row["start_at"],
            end_at=row["end_at"],
            text=row["text"],
            filter=AudienceFilter(tuple(row["operator_codes"]), tuple(row["tags"])),
            window=window_from_seconds(row["window_start_s"], row["window_end_s"]),
        ),
        status=MailoutStatus(row["status"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        activated_at=row["activated_at"],
    )


def _spec_values(spec: MailoutSpec) -> dict[str, Any]:
    window_start_s, window_end_s = window_to_seconds(spec.window)
    return {
        "start_at": spec.start_at,
        "end_at": spec.end_at,
        "text": spec.text,
        "operator_codes": list(spec.filter.operator_codes),
        "tags": list(spec.filter.tags),
        "window_start_s": window_start_s,
        "window_end_s": window_end_s,
    }


def _due_status(status: MailoutStatus, spec: MailoutSpec, now: datetime) -> MailoutStatus:
    """A scheduled mailout whose start has come is `running` (the engine activates it within milliseconds),
    so that a create or change answers the state the mailout is in; any other status stays."""
    if status is MailoutStatus.SCHEDULED and spec.start_at <= now < spec.end_at:
        return MailoutStatus.RUNNING
    return status


async def create(db: AsyncEngine, spec: MailoutSpec, now: datetime) -> Mailout:
    """A new mailout: `running` when its start has come (the engine activates it within milliseconds, and
    the create answers the state the mailout is in), else `scheduled`."""
    status = _due_status(MailoutStatus.SCHEDULED, spec, now)
    values = _spec_values(spec) | {"status": status, "created_at": now, "updated_at": now}
    async with db.begin() as conn:
        row = (await conn.execute(insert(mailouts).values(values).returning(*mailouts.c))).mappings().one()
    return from_row(row)


async def read(conn: AsyncConnection, mailout_id: int, *, lock: bool = False) -> Mailout:
    """The mailout, or NotFoundError; `lock` holds its row until the transaction ends (PostgreSQL)."""
    query = select(mailouts).where(mailouts.c.id == mailout_id)
    if lock:
        query = query.with_for_update()
    row = (await conn.execute(query)).mappings().one_or_none()
    if row is None:
        raise NotFoundError(RESOURCE, mailout_id)
    return from_row(row)


_GET = DirectStatement(
    select(mailouts).where(mailouts.c.id == bindparam("mailout_id")),
    json_columns=("operator_codes", "tags"),
)


async def get(db: AsyncEngine, mailout_id: int) -> Mailout:
    row = await fetch_one(db, _GET, {"mailout_id": mailout_id})
    if row is None:
        raise NotFoundError(RESOURCE, mailout_id)
    return from_row(row)


def listing(status: MailoutStatus | None, limit: int, after: int) -> Select[Any]:
    """Mailouts in id order after `after`, one more than `limit` (see `page_of`)."""
    query = select(mailouts).where(mailouts.c.id > after).order_by(mailouts.c.id).limit(limit + 1)
    if status is not None:
        query = query.where(mailouts.c.status == status)
    return query


async def list_page(db: AsyncEngine, status: MailoutStatus | None, limit: int, after: int) -> Page[Mailout]:
    async with db.connect() as conn:
        rows = (await conn.execute(listing(status, limit, after))).mappings().all()
    return page_of([from_row(r) for r in rows], limit, lambda m: m.id)


async def change(db: AsyncEngine, mailout_id: int, edit: SpecEdit, now: datetime) -> tuple[Mailout, bool]:
    """Apply `edit` to the stored spec if the status allows; the mailout after, and whether it changed."""
    async with db.begin() as conn:
        current = await read(conn, mailout_id, lock=True)
        new = edit(current.spec)
        changed = changed_fields(current.spec, new)
        if not changed:
            return current, False
        check_change(current.status, changed)
        check_times(new)
        status = _due_status(current.status, new, now)
        values = _spec_values(new) | {"status": status, "updated_at": now}
        return await _write(conn, mailout_id, values), True


async def transition(
    db: AsyncEngine, mailout_id: int, target: Callable[[Mailout], MailoutStatus], now: datetime
) -> tuple[Mailout, bool]:
    """Move the mailout to the status `target` picks (it raises for a refused move); whether it moved."""
    async with db.begin() as conn:
        current = await read(conn, mailout_id, lock=True)
        status = target(current)
        if status is current.status:
            return current, False
        return await _write(conn, mailout_id, {"status": status, "updated_at": now}), True


async def cancel(db: AsyncEngine, mailout_id: int, now: datetime) -> tuple[Mailout, int | None]:
    """Cancel the mailout and, in the same transaction, every message not yet handed to the provider.

    Returns the mailout and how many messages were cancelled, None when it was cancelled already. Messages
    in `sending` are in flight: the engine cuts them and records how each ended.
    """
    async with db.begin() as conn:
        current = await read(conn, mailout_id, lock=True)
        status = cancel_target(current.status)
        if status is current.status:
            return current, None
        cancelled = await conn.execute(
            update(messages)
            .where(messages.c.mailout_id == mailout_id, messages.c.status == MessageStatus.PENDING)
            .values(status=MessageStatus.CANCELLED, next_attempt_at=None, updated_at=now)
        )
        values = {"status": status, "updated_at": now, "finished_at": now}
        return await _write(conn, mailout_id, values), cancelled.rowcount


async def exists(db: AsyncEngine, mailout_id: int) -> bool:
    async with db.connect() as conn:
        found = await conn.scalar(select(mailouts.c.id).where(mailouts.c.id == mailout_id))
    return found is not None


async def delete_one(db: AsyncEngine, mailout_id: int) -> None:
    """Delete the mailout; its messages and attempts go with it, a chunk per transaction.

    One cascading DELETE of 100,000 messages holds SQLite's only write lock for seconds, and every other
    writer (the engine's recorder, other API calls) waits that long. In chunks, each transaction is short
    and the others get their turn in between; the mailout row goes last, with whatever was added meanwhile
    (ON DELETE CASCADE). The engine has stopped sending it before this is called.
    """
    of_mailout = select(messages.c.id).where(messages.c.mailout_id == mailout_id)
    chunk = of_mailout.limit(DELETE_CHUNK_ROWS).scalar_subquery()
    while True:
        async with db.begin() as conn:
            # Its attempts go by ON DELETE CASCADE, through their message_id index.
            deleted = await conn.execute(delete(messages).where(messages.c.id.in_(chunk)))
        if deleted.rowcount < DELETE_CHUNK_ROWS:
            break
    async with db.begin() as conn:
        result = await conn.execute(delete(mailouts).where(mailouts.c.id == mailout_id))
    if result.rowcount == 0:
        raise NotFoundError(RESOURCE, mailout_id)


async def _write(conn: AsyncConnection, mailout_id: int, values: dict[str, Any]) -> Mailout:
    query = update(mailouts).where(mailouts.c.id == mailout_id).values(values).returning(*mailouts.c)
    return from_row((await conn.execute(query)).mappings().one())


def contains(text: str) -> ColumnElement[bool]:
    """The mailout's text holds `text`, case-insensitive; mailouts are thousands, not millions: a scan."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return mailouts.c.text.ilike(f"%{escaped}%", escape="\\")
