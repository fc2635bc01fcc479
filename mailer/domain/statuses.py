"""Status values of mailouts, messages and send attempts."""

from enum import StrEnum


class MailoutStatus(StrEnum):
    SCHEDULED = "scheduled"
    RUNNING = "running"
    PAUSED = "paused"
    FINISHED = "finished"
    CANCELLED = "cancelled"


# A mailout in one of these states will never send again.
MAILOUT_FINAL = frozenset({MailoutStatus.FINISHED, MailoutStatus.CANCELLED})


class MessageStatus(StrEnum):
    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    EXPIRED = "expired"
    CANCELLED = "cancelled"


class Outcome(StrEnum):
    """How one provider request ended; the `kind` of an error in statistics."""

    SENT = "sent"  # 200 with a parsable body and code == 0
    TRANSIENT = "transient"  # 5xx, 429, 408, garbage 200: retry later
    TIMEOUT = "timeout"  # no answer before the deadline
    CONNECTION = "connection"  # refused, reset, DNS: retry later
    REJECTED = "rejected"  # 400 and other 4xx: permanent for that message
    UNAUTHORIZED = "unauthorized"  # 401/403: configuration fault, pause all sending
    CUT = "cut"  # cut at a boundary while in flight: the end, the window closing, a cancel, a shutdown
