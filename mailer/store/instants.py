"""Instants and windows as the engine's SQL binds and reads them: typed binds, per-zone CASEs, aggregates."""

from __future__ import annotations

from datetime import datetime, time
from typing import Any

from sqlalchemy import ColumnElement, case, literal

from mailer.domain.statuses import MailoutStatus
from mailer.domain.windows import SendWindow
from mailer.store.coltypes import UTCDateTime

# Mailouts whose messages may still change; the end applies to all of them.
LIVE_MAILOUT = (MailoutStatus.SCHEDULED, MailoutStatus.RUNNING, MailoutStatus.PAUSED)
_SECONDS_PER_HOUR = 3600
_SECONDS_PER_MINUTE = 60


def window_of(start_s: int | None, end_s: int | None) -> SendWindow | None:
    """The window from its stored form (seconds since local midnight; both null = any time)."""
    if start_s is None or end_s is None:
        return None
    return SendWindow(_time_of(start_s), _time_of(end_s))


def _time_of(seconds: int) -> time:
    return time(
        seconds // _SECONDS_PER_HOUR,
        seconds % _SECONDS_PER_HOUR // _SECONDS_PER_MINUTE,
        seconds % _SECONDS_PER_MINUTE,
    )


def at(value: datetime) -> ColumnElement[datetime]:
    """A bound instant, typed so that SQLite stores it as the same text as the column."""
    return literal(value, UTCDateTime)


def by_zone(column: Any, opens: dict[str, datetime], default: datetime) -> ColumnElement[Any]:
    """CASE column WHEN zone THEN its instant …: one branch per distinct zone, computed once each."""
    if not opens:
        return at(default)
    return case({zone: at(instant) for zone, instant in opens.items()}, value=column, else_=at(default))


def as_instant(value: Any) -> datetime | None:
    """Aggregates (MIN) lose the column type on SQLite and come back as text; normalise to aware UTC."""
    if value is None:
        return None
    return UTCDateTime().process_result_value(value, None)  # type: ignore[arg-type]
