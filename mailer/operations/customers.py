"""Customer operations: create, replace, change and delete one customer, with their log lines."""

from __future__ import annotations

from collections.abc import Mapping

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from mailer.domain.customers import CustomerFields
from mailer.domain.statuses import MessageStatus
from mailer.observability import metrics
from mailer.store import customers as store
from mailer.store.customers import CustomerRow

log = structlog.get_logger(__name__)


async def create(db: AsyncEngine, fields: CustomerFields) -> CustomerRow:
    row = await store.create(db, fields)
    # The id exists only now: the request's own log line carries it too.
    structlog.contextvars.bind_contextvars(customer_id=row["id"])
    log.info("customer.created")
    return row


async def replace(db: AsyncEngine, customer_id: int, fields: CustomerFields) -> CustomerRow:
    row = await store.replace(db, customer_id, fields)
    log.info("customer.replaced", customer_id=customer_id)
    return row


async def patch(db: AsyncEngine, customer_id: int, changes: Mapping[str, str | None]) -> CustomerRow:
    row = await store.patch(db, customer_id, changes)
    log.info("customer.changed", customer_id=customer_id, fields=sorted(changes))
    return row


async def delete(db: AsyncEngine, customer_id: int) -> int:
    """Cancel the customer's pending messages and delete it (its messages keep the history); how many."""
    cancelled = await store.delete_one(db, customer_id)
    metrics.message_transition(MessageStatus.CANCELLED, cancelled)
    log.info("customer.deleted", customer_id=customer_id, messages_cancelled=cancelled)
    return cancelled
