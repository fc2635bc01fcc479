"""Mailouts as the API sees them: what a mailout is, which status changes are allowed, what may change when.

Pure code: the store reads a row, asks these functions what to do, and writes the answer in the same
transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, time

from mailer.domain.errors import ConflictError, FieldError, InvalidError
from mailer.domain.statuses import MAILOUT_FINAL, MailoutStatus
from mailer.domain.windows import SendWindow

SECONDS_PER_HOUR = 3600
SECONDS_PER_MINUTE = 60

# Field names, as the API spells them: change checks and error messages speak of these.
START_AT = "start_at"
END_AT = "end_at"
TEXT = "text"
FILTER = "filter"
SEND_WINDOW = "send_window"

# Once a mailout has started (or was paused), its audience and start are history: messages exist for exactly
# that filter. What is still ahead (the text and hours of unsent messages, the end) may change.
EDITABLE_WHILE_ACTIVE = frozenset({TEXT, END_AT, SEND_WINDOW})
_ACTIVE = frozenset({MailoutStatus.RUNNING, MailoutStatus.PAUSED})
_CANCELLABLE = frozenset({MailoutStatus.SCHEDULED, MailoutStatus.RUNNING, MailoutStatus.PAUSED})


@dataclass(frozen=True, slots=True)
class AudienceFilter:
    """Who gets a mailout: an empty tuple matches everyone on that axis."""

    operator_codes: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()

    def same_audience(self, other: AudienceFilter) -> bool:
        """Order and repeats do not change who matches."""
        return set(self.operator_codes) == set(other.operator_codes) and set(self.tags) == set(other.tags)


@dataclass(frozen=True, slots=True)
class MailoutSpec:
    """The fields a client sets."""

    start_at: datetime
    end_at: datetime
    text: str
    filter: AudienceFilter
    window: SendWindow | None


@dataclass(frozen=True, slots=True)
class Mailout:
    """A stored mailout."""

    id: int
    spec: MailoutSpec
    status: MailoutStatus
    created_at: datetime
    updated_at: datetime
    activated_at: datetime | None


# How a request turns the stored spec into the wanted one (PUT ignores the old one, PATCH merges).
type SpecEdit = Callable[[MailoutSpec], MailoutSpec]


def unique(items: Iterable[str]) -> tuple[str, ...]:
    """Duplicates removed, first occurrences kept in order."""
    return tuple(dict.fromkeys(items))


def check_times(spec: MailoutSpec) -> None:
    """start_at < end_at, else InvalidError naming end_at."""
    if spec.start_at >= spec.end_at:
        raise InvalidError([FieldError(("body", END_AT), "end_at must be later than start_at")])


def changed_fields(old: MailoutSpec, new: MailoutSpec) -> frozenset[str]:
    """The API fields whose meaning differs between two specs."""
    changed = set()
    if old.start_at != new.start_at:
        changed.add(START_AT)
    if old.end_at != new.end_at:
        changed.add(END_AT)
    if old.text != new.text:
        changed.add(TEXT)
    if not old.filter.same_audience(new.filter):
        changed.add(FILTER)
    if old.window != new.window:
        changed.add(SEND_WINDOW)
    return frozenset(changed)


def refused_changes(status: MailoutStatus, changed: frozenset[str]) -> frozenset[str]:
    """The fields of `changed` that a mailout in `status` may not take."""
    if status in MAILOUT_FINAL:
        return changed
    if status in _ACTIVE:
        return changed - EDITABLE_WHILE_ACTIVE
    return frozenset()


def check_change(status: MailoutStatus, changed: frozenset[str]) -> None:
    """Raise ConflictError when a mailout in `status` may not take these changes."""
    refused = refused_changes(status, changed)
    if not refused:
        return
    if status in MAILOUT_FINAL:
        raise ConflictError(f"a {status} mailout cannot be changed")
    raise ConflictError(
        f"a {status} mailout cannot change {', '.join(sorted(refused))}; "
        f"only {', '.join(sorted(EDITABLE_WHILE_ACTIVE))} may change"
    )


def pause_target(status: MailoutStatus) -> MailoutStatus:
    """The status after a pause; the same status means nothing to do."""
    if status in MAILOUT_FINAL:
        raise ConflictError(f"a {status} mailout cannot be paused")
    return MailoutStatus.PAUSED


def resume_target(status: MailoutStatus, activated: bool) -> MailoutStatus:
    """The status after a resume: back to running if it had started, else to waiting for its start."""
    if status in MAILOUT_FINAL:
        raise ConflictError(f"a {status} mailout cannot be resumed")
    if status is not MailoutStatus.PAUSED:
        return status
    return MailoutStatus.RUNNING if activated else MailoutStatus.SCHEDULED


def cancel_target(status: MailoutStatus) -> MailoutStatus:
    """The status after a cancel; cancelling twice is harmless, cancelling what finished is a conflict."""
    if status is MailoutStatus.CANCELLED or status in _CANCELLABLE:
        return MailoutStatus.CANCELLED
    raise ConflictError(f"a {status} mailout cannot be cancelled")


def check_accepts_messages(status: MailoutStatus) -> None:
    """New messages only for a mailout that may still send."""
    if status in MAILOUT_FINAL:
        raise ConflictError(f"a {status} mailout takes no new messages")


def time_to_seconds(value: time) -> int:
    return value.hour * SECONDS_PER_HOUR + value.minute * SECONDS_PER_MINUTE + value.second


def seconds_to_time(seconds: int) -> time:
    hours, rest = divmod(seconds, SECONDS_PER_HOUR)
    return time(hours, *divmod(rest, SECONDS_PER_MINUTE))


def window_to_seconds(window: SendWindow | None) -> tuple[int | None, int | None]:
    """The window as stored: seconds since local midnight, both None for "any time"."""
    if window is None:
        return None, None
    return time_to_seconds(window.start), time_to_seconds(window.end)


def window_from_seconds(start_s: int | None, end_s: int | None) -> SendWindow | None:
    if start_s is None or end_s is None:
        return None
    return SendWindow(seconds_to_time(start_s), seconds_to_time(end_s))
