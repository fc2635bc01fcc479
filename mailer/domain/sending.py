"""The sending engine's vocabulary: a mailout's plan, a claimed message, an attempt, a message's outcome."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from mailer.domain.statuses import MailoutStatus, MessageStatus
from mailer.domain.windows import SendWindow


@dataclass(frozen=True, slots=True)
class MailoutPlan:
    """What the engine needs to know about one mailout, read in one query."""

    id: int
    status: MailoutStatus
    start_at: datetime
    end_at: datetime
    text: str
    window: SendWindow | None
    operator_codes: tuple[str, ...]
    tags: tuple[str, ...]
    activated_at: datetime | None
    # With the id, tells one mailout from a later one that got the same id (SQLite reused ids before 0005).
    created_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class ClaimedMessage:
    """A message now in `sending`, leased to this process; `attempts` counts requests made before."""

    id: int
    mailout_id: int
    phone: str
    timezone: str
    attempts: int
    # Carried from the claim so that every log line about the message names its customer with no query.
    customer_id: int | None = None


@dataclass(frozen=True, slots=True)
class AttemptRow:
    """One provider request that was started."""

    started_at: datetime
    duration_ms: float
    outcome: str
    http_status: int | None
    error: str | None


@dataclass(frozen=True, slots=True)
class MessageOutcome:
    """The new state of a message in `sending`, with the request that led there (None: no request made)."""

    message_id: int
    mailout_id: int
    status: MessageStatus
    next_attempt_at: datetime | None
    sent_at: datetime | None
    error: str | None
    attempt: AttemptRow | None
    # Requests made for the message so far, this one included: for the log line of the state change.
    attempts: int = 0
    customer_id: int | None = None
