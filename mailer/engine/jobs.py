"""What the sender pool works on: one live mailout per actor lifetime, and one job per claimed message."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from mailer.domain.sending import ClaimedMessage, MailoutPlan
from mailer.domain.statuses import MessageStatus


class CutReason(StrEnum):
    """Why a request in flight was cut."""

    END = "end"  # the mailout's end came
    WINDOW = "window"  # the customer's window closed
    CANCEL = "cancel"  # the mailout was cancelled or deleted
    SHUTDOWN = "shutdown"  # the process is stopping


class LiveMailout:
    """One mailout as the pool knows it, from its actor's first claim until the actor lets it go.

    The actor refreshes `plan`; the pool sets `hold`. A hold belongs to this object, not to the mailout's id:
    when the actor lets go, the hold goes with it, so a later mailout that happens to get the same id (SQLite
    reused ids before migration 0005) starts with no hold of its own.
    """

    __slots__ = ("hold", "plan")

    def __init__(self, plan: MailoutPlan) -> None:
        self.plan = plan
        # While set, this mailout's jobs are given back with this status instead of being sent.
        self.hold: MessageStatus | None = None

    @property
    def id(self) -> int:
        return self.plan.id


@dataclass(eq=False, slots=True)
class SendJob:
    """One claimed message on its way to the provider."""

    message: ClaimedMessage
    mailout: LiveMailout
    started_at: datetime | None = None
    started_s: float | None = None
    cut: CutReason | None = None
    probe: bool = False
    # True while its worker is inside the attempt: only then may a cut cancel the worker (`sender._cut`).
    attempting: bool = False
    # Set once the outcome is handed to the recorder (the worker's slot then comes back with its write).
    settled: bool = False
