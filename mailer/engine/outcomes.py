"""The outcome of a job as data: the message's next state, and the attempt row when a request went out."""

from __future__ import annotations

from datetime import datetime

from mailer.domain.sending import AttemptRow, MessageOutcome
from mailer.domain.statuses import MessageStatus, Outcome
from mailer.engine.jobs import SendJob


def outcome_of(
    job: SendJob,
    status: MessageStatus,
    *,
    next_at: datetime | None = None,
    sent_at: datetime | None = None,
    error: str | None = None,
    attempt: AttemptRow | None = None,
) -> MessageOutcome:
    """The job's message goes to `status`; `next_at` counts only for pending, `attempt` adds one attempt."""
    message = job.message
    return MessageOutcome(
        message_id=message.id,
        mailout_id=message.mailout_id,
        status=status,
        next_attempt_at=next_at if status is MessageStatus.PENDING else None,
        sent_at=sent_at,
        error=error,
        attempt=attempt,
        attempts=message.attempts + (1 if attempt is not None else 0),
        customer_id=message.customer_id,
    )


def rescheduled(
    job: SendJob,
    at: datetime,
    *,
    error: str | None = None,
    attempt: AttemptRow | None = None,
) -> MessageOutcome:
    """Back to pending at `at`, or expired when that is not before the end."""
    if at >= job.mailout.plan.end_at:
        return outcome_of(job, MessageStatus.EXPIRED, error=error, attempt=attempt)
    return outcome_of(job, MessageStatus.PENDING, next_at=at, error=error, attempt=attempt)


def attempt_row(
    job: SendJob, outcome: Outcome, http_status: int | None, error: str | None, duration_s: float
) -> AttemptRow:
    """The attempt row of a job whose request started."""
    assert job.started_at is not None
    return AttemptRow(job.started_at, round(duration_s * 1000, 3), outcome.value, http_status, error)
