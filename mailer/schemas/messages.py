"""Request and response bodies of messages: one per (mailout, customer), with its provider requests."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from mailer.domain.statuses import MessageStatus, Outcome
from mailer.schemas.common import ResourceId, StrictModel, UtcDatetime


class MessageCreate(StrictModel):
    """Add one customer to a mailout's audience."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"customer_id": 42}]})

    customer_id: ResourceId


class MessageOut(BaseModel):
    """A message: what is (or was) to be sent to one customer for one mailout."""

    id: int = Field(description="also the msgId sent to the provider")
    mailout_id: int
    customer_id: int | None = Field(description="null once the customer was deleted")
    phone: str
    status: MessageStatus
    created_at: UtcDatetime
    updated_at: UtcDatetime
    sent_at: UtcDatetime | None
    attempts: int = Field(description="provider requests made for this message")
    next_attempt_at: UtcDatetime | None
    last_error: str | None


class MessagePage(BaseModel):
    """A page of messages in id order; pass `next_after` as `after` for the next page (null: no more)."""

    items: list[MessageOut]
    next_after: int | None


class AttemptOut(BaseModel):
    """One provider request for a message."""

    started_at: UtcDatetime
    duration_ms: float
    outcome: Outcome
    http_status: int | None
    error: str | None


class MessageDetail(MessageOut):
    """A message with its provider requests, oldest first; `attempts` stays their count."""

    attempts_log: list[AttemptOut]
