"""Mailout operations: create, change, pause, resume, cancel, delete, add one customer.

Every change wakes the engine (`mailout_changed`); cancel and delete first cut the sends in flight
(`stop_mailout`), outside any transaction: that waits for the network, not for the database.
"""

from __future__ import annotations

import structlog
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncEngine

from mailer.domain import mailouts as domain
from mailer.domain.clock import utc_now
from mailer.domain.errors import NotFoundError
from mailer.domain.mailouts import Mailout, MailoutSpec, SpecEdit
from mailer.domain.statuses import MessageStatus
from mailer.observability import metrics
from mailer.operations.ports import EnginePort
from mailer.store import mailouts as store
from mailer.store import messages as message_store

log = structlog.get_logger(__name__)


async def create(db: AsyncEngine, engine: EnginePort, spec: MailoutSpec) -> Mailout:
    """A new mailout; the engine starts it at once when its start has come."""
    mailout = await store.create(db, spec, utc_now())
    # The id exists only now: the request's own log line (and any after this) carries it too.
    structlog.contextvars.bind_contextvars(mailout_id=mailout.id)
    log.info("mailout.created")
    engine.mailout_changed(mailout.id)
    return mailout


async def get(db: AsyncEngine, mailout_id: int) -> Mailout:
    return await store.get(db, mailout_id)


async def change(db: AsyncEngine, engine: EnginePort, mailout_id: int, edit: SpecEdit) -> Mailout:
    """Apply `edit` if the status allows it (else ConflictError; InvalidError for bad times)."""
    mailout, changed = await store.change(db, mailout_id, edit, utc_now())
    if changed:
        log.info("mailout.changed", mailout_id=mailout_id)
        engine.mailout_changed(mailout_id)
    return mailout


async def pause(db: AsyncEngine, engine: EnginePort, mailout_id: int) -> Mailout:
    mailout, changed = await store.transition(
        db, mailout_id, lambda m: domain.pause_target(m.status), utc_now()
    )
    if changed:
        log.info("mailout.paused", mailout_id=mailout_id)
        engine.mailout_changed(mailout_id)
    return mailout


async def resume(db: AsyncEngine, engine: EnginePort, mailout_id: int) -> Mailout:
    mailout, changed = await store.transition(
        db, mailout_id, lambda m: domain.resume_target(m.status, m.activated_at is not None), utc_now()
    )
    if changed:
        log.info("mailout.resumed", mailout_id=mailout_id, status=mailout.status.value)
        engine.mailout_changed(mailout_id)
    return mailout


async def cancel(db: AsyncEngine, engine: EnginePort, mailout_id: int) -> Mailout:
    mailout, cancelled = await store.cancel(db, mailout_id, utc_now())
    if cancelled is not None:
        metrics.message_transition(MessageStatus.CANCELLED, cancelled)
        log.info("mailout.cancelled", mailout_id=mailout_id, messages=cancelled)
    # Also when it was cancelled already: a repeated cancel makes sure nothing is still in flight.
    await engine.stop_mailout(mailout_id)
    if cancelled is not None:
        engine.mailout_changed(mailout_id)
    return mailout


async def delete(db: AsyncEngine, engine: EnginePort, mailout_id: int) -> None:
    """Stop all sending, then delete the mailout with its messages and attempts."""
    if not await store.exists(db, mailout_id):
        raise NotFoundError(store.RESOURCE, mailout_id)
    await engine.stop_mailout(mailout_id)
    await store.delete_one(db, mailout_id)
    log.info("mailout.deleted", mailout_id=mailout_id)
    # The scheduler may hold a timer for it; let it drop that.
    engine.mailout_changed(mailout_id)


async def add_message(db: AsyncEngine, engine: EnginePort, mailout_id: int, customer_id: int) -> RowMapping:
    """Add one customer to a mailout's audience: a pending message, due when its window opens."""
    row = await message_store.add(db, mailout_id, customer_id, utc_now())
    log.info("message.created", mailout_id=mailout_id, message_id=row["id"], customer_id=customer_id)
    metrics.message_transition(MessageStatus.PENDING)
    engine.mailout_changed(mailout_id)
    return row
