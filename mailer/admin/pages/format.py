"""Jinja filters: numbers, instants and durations as an operator reads them."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

SECONDS_PER_MINUTE = 60
SECONDS_PER_HOUR = 3600
SECONDS_PER_DAY = 86400


def instant(value: datetime | None) -> str:
    """UTC, to the second, in the API's RFC 3339 spelling but readable."""
    if value is None:
        return "—"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def iso(value: datetime | None) -> str:
    return "" if value is None else value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def local_input(value: datetime | None) -> str:
    """The value of an `<input type="datetime-local">`, in UTC (the form says so)."""
    return "" if value is None else value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M")


def duration(value: timedelta | float | None) -> str:
    """1 d 2 h, 3 h 4 min, 5 min 6 s, 7 s."""
    if value is None:
        return "—"
    seconds = int(value.total_seconds() if isinstance(value, timedelta) else value)
    if seconds < 0:
        seconds = 0
    days, rest = divmod(seconds, SECONDS_PER_DAY)
    hours, rest = divmod(rest, SECONDS_PER_HOUR)
    minutes, secs = divmod(rest, SECONDS_PER_MINUTE)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min {secs} s"
    return f"{secs} s"


def number(value: int | float | None) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:,.1f}"
    return f"{value:,}"


def percent(part: int, whole: int) -> str:
    if whole <= 0:
        return "0%"
    return f"{100 * part / whole:.0f}%"


FILTERS: dict[str, Callable[..., Any]] = {
    "instant": instant,
    "iso": iso,
    "local_input": local_input,
    "duration": duration,
    "number": number,
    "percent": percent,
}
