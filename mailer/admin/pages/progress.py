"""How far a mailout has got, in numbers an operator can act on: pure arithmetic on its counters."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from mailer.domain.mailouts import Mailout
from mailer.domain.statuses import MailoutStatus, MessageStatus

# A running mailout with due messages that has sent nothing for this long is worth a look: the provider
# may be refusing, the breaker open, or every process stopped.
STALLED_AFTER_S = 60.0
# Below this much sending history a rate would be noise (two sends a millisecond apart).
MIN_RATE_WINDOW_S = 1.0
SECONDS_PER_MINUTE = 60.0
# The order of the progress bar: what is done first, then what is still to come.
BAR_ORDER = (
    MessageStatus.SENT,
    MessageStatus.FAILED,
    MessageStatus.EXPIRED,
    MessageStatus.CANCELLED,
    MessageStatus.SENDING,
    MessageStatus.PENDING,
)
OPEN_STATUSES = frozenset({MessageStatus.PENDING, MessageStatus.SENDING})


@dataclass(frozen=True, slots=True)
class Segment:
    """One status's part of a bar, in percent of the whole."""

    status: MessageStatus
    count: int
    start_pct: float
    width_pct: float


@dataclass(frozen=True, slots=True)
class Progress:
    mailout: Mailout
    by_status: dict[MessageStatus, int]
    total: int
    done: int
    rate_per_min: float | None
    eta: timedelta | None
    last_sent_at: datetime | None
    stalled: bool
    segments: list[Segment]

    @property
    def done_pct(self) -> float:
        return 100.0 * self.done / self.total if self.total else 0.0


def segments(by_status: dict[MessageStatus, int]) -> list[Segment]:
    """The bar's parts, in BAR_ORDER, zero-count statuses left out."""
    total = sum(by_status.values())
    out: list[Segment] = []
    start = 0.0
    for status in BAR_ORDER:
        count = by_status.get(status, 0)
        if count and total:
            width = 100.0 * count / total
            out.append(Segment(status, count, start, width))
            start += width
    return out


def progress(
    mailout: Mailout,
    by_status: dict[MessageStatus, int],
    first_sent_at: datetime | None,
    last_sent_at: datetime | None,
    has_due_work: bool,
    now: datetime,
) -> Progress:
    """Rate is the average since the first send (read off two index lookups, not a count of messages)."""
    total = sum(by_status.values())
    remaining = sum(by_status.get(s, 0) for s in OPEN_STATUSES)
    sent = by_status.get(MessageStatus.SENT, 0)
    rate: float | None = None
    if first_sent_at is not None and last_sent_at is not None:
        span_s = (last_sent_at - first_sent_at).total_seconds()
        if span_s >= MIN_RATE_WINDOW_S and sent > 1:
            rate = (sent - 1) / span_s * SECONDS_PER_MINUTE
    running = mailout.status is MailoutStatus.RUNNING
    eta = timedelta(minutes=remaining / rate) if running and rate and remaining else None
    quiet_since = last_sent_at or mailout.activated_at
    stalled = (
        running
        and has_due_work
        and quiet_since is not None
        and (now - quiet_since).total_seconds() > STALLED_AFTER_S
    )
    return Progress(
        mailout=mailout,
        by_status=by_status,
        total=total,
        done=total - remaining,
        rate_per_min=rate,
        eta=eta,
        last_sent_at=last_sent_at,
        stalled=stalled,
        segments=segments(by_status),
    )
