"""Send windows: when a customer's local wall time lets a send start.

Instants are timezone-aware everywhere; local time exists only inside this module. A send may start while
the local wall time of the instant is in ``[start, end)``; the functions answer exactly that question, across
DST gaps, folds and date-line jumps, by looking at the few instants where the answer can change instead of
stepping through time.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

_TIME_PATTERN = re.compile(r"([0-9]{2}):([0-9]{2})(?::([0-9]{2}))?")
_ONE_SECOND = timedelta(seconds=1)
_ONE_DAY = timedelta(days=1)
_UTC_ZONE = ZoneInfo("UTC")

# UTC offset changes in tzdata are never this close together (the closest pair ever is Africa/Freetown's in
# 1939, 95 h 40 min apart; since 1970, Brazil's in 2000, almost 7 days; tests/test_windows.py checks it for
# the installed tzdata). So when the offset is the same at two instants less than this far apart, it held all
# the way between them, and local time ran in step with UTC: the fast path below relies on that.
_MIN_OFFSET_CHANGE_SPACING = timedelta(days=2)

# Local days searched, relative to the instant's local date. The state can only change where the local wall
# time meets a window boundary, and the first such change lies at most two local days ahead: one day, plus
# one skipped by a date-line jump (Pacific/Apia had no 2011-12-30). A clock set back over midnight can put it
# on the previous local date. The spare day each side costs microseconds; the second span only guards against
# a future tzdata surprise, so the search can never give up on a real window.
_SEARCH_SPANS = ((-1, 3), (4, 14))


@dataclass(frozen=True, slots=True)
class SendWindow:
    """Local wall-clock hours ``[start, end)`` in which a send may start; ``start > end`` wraps midnight."""

    start: time
    end: time

    def __post_init__(self) -> None:
        for name in ("start", "end"):
            value: time = getattr(self, name)
            if value.tzinfo is not None:
                raise ValueError(f"window {name} must be a local wall time without a time zone")
            # Seconds are the resolution of the API; fold means nothing for a time of day.
            if value.microsecond or value.fold:
                object.__setattr__(self, name, value.replace(microsecond=0, fold=0))
        if self.start == self.end:
            raise ValueError("window start and end must differ (an empty or full-day window is ambiguous)")

    @classmethod
    def parse(cls, start: str, end: str) -> SendWindow:
        """The window from its API form, ``"HH:MM"`` or ``"HH:MM:SS"`` each."""
        return cls(parse_window_time(start), parse_window_time(end))

    @property
    def wraps(self) -> bool:
        """True when the window runs past midnight (e.g. 22:00-06:00)."""
        return self.start > self.end

    def contains(self, local: time) -> bool:
        """Whether a local wall time (any precision, naive) is inside the window."""
        local = local.replace(tzinfo=None)
        if self.wraps:
            return local >= self.start or local < self.end
        return self.start <= local < self.end


def parse_window_time(text: str) -> time:
    """``"HH:MM"`` or ``"HH:MM:SS"``, two digits each, 00:00:00 to 23:59:59."""
    match = _TIME_PATTERN.fullmatch(text)
    if match is None:
        raise ValueError(f"invalid time {text!r}: expected HH:MM or HH:MM:SS")
    hour, minute = int(match[1]), int(match[2])
    second = int(match[3]) if match[3] is not None else 0
    if hour > 23:
        raise ValueError(f"invalid time {text!r}: hour must be 00-23")
    if minute > 59:
        raise ValueError(f"invalid time {text!r}: minute must be 00-59")
    if second > 59:
        raise ValueError(f"invalid time {text!r}: second must be 00-59")
    return time(hour, minute, second)


def format_window_time(value: time) -> str:
    """``"HH:MM"`` when the seconds are zero, else ``"HH:MM:SS"``."""
    if value.second:
        return f"{value.hour:02d}:{value.minute:02d}:{value.second:02d}"
    return f"{value.hour:02d}:{value.minute:02d}"


# ZoneInfo keeps only a few zones alive on its own and reads a file for each other one; mailouts ask for the
# same few hundred zones again and again. Enough room for every IANA name (about 600) and some unknown ones.
_ZONE_CACHE_SIZE = 1024


@functools.lru_cache(maxsize=_ZONE_CACHE_SIZE)
def load_zone(name: str) -> ZoneInfo:
    """The zone of that IANA name, or UTC when the name is unknown.

    The API validates zone names on input, but a stored name can vanish from a later tzdata release (zones are
    removed or renamed); sending by UTC is better than failing a whole mailout for one stale name.
    """
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a directory such as "America"
        return _UTC_ZONE


def is_open(instant: datetime, window: SendWindow | None, zone: ZoneInfo) -> bool:
    """Whether a send may start at `instant` for a customer in `zone`."""
    _require_aware(instant)
    return window is None or window.contains(instant.astimezone(zone).time())


def next_open(instant: datetime, window: SendWindow | None, zone: ZoneInfo) -> datetime:
    """The earliest instant ``t >= instant`` at which the window is open, in UTC."""
    _require_aware(instant)
    instant = instant.astimezone(UTC)
    if window is None or window.contains(instant.astimezone(zone).time()):
        return instant
    return _first_change(instant, window, zone, to_open=True)


def closes_at(instant: datetime, window: SendWindow | None, zone: ZoneInfo) -> datetime | None:
    """The first instant after `instant` at which the window is closed, in UTC; None when there is no window.

    Returns `instant` itself when the window is already closed then.
    """
    _require_aware(instant)
    instant = instant.astimezone(UTC)
    if window is None:
        return None
    if not window.contains(instant.astimezone(zone).time()):
        return instant
    return _first_change(instant, window, zone, to_open=False)


def next_open_by_zone(
    instant: datetime, window: SendWindow | None, zones: Iterable[str]
) -> dict[str, datetime]:
    """`next_open` for each distinct zone name; unknown names are treated as UTC (see `load_zone`)."""
    result: dict[str, datetime] = {}
    for name in zones:
        if name not in result:
            result[name] = next_open(instant, window, load_zone(name))
    return result


def _first_change(instant: datetime, window: SendWindow, zone: ZoneInfo, *, to_open: bool) -> datetime:
    """The earliest instant after `instant` at which `window.contains` becomes `to_open`."""
    return _unchanged_offset_change(instant, window, zone, to_open=to_open) or _searched_change(
        instant, window, zone, to_open=to_open
    )


def _unchanged_offset_change(
    instant: datetime, window: SendWindow, zone: ZoneInfo, *, to_open: bool
) -> datetime | None:
    """The common case: the offset does not change before the local time reaches the boundary ahead.

    Returns None when it does change (or cannot tell), for `_searched_change` to handle.
    """
    local = instant.astimezone(zone)
    offset = local.utcoffset()
    if offset is None:
        return None
    wall = local.replace(tzinfo=None)
    crossing = datetime.combine(wall.date(), window.start if to_open else window.end)
    if crossing <= wall:
        crossing += _ONE_DAY
    try:
        candidate = (crossing - offset).replace(tzinfo=UTC)
    except OverflowError:
        return None
    if candidate - instant < _MIN_OFFSET_CHANGE_SPACING and candidate.astimezone(zone).utcoffset() == offset:
        return candidate
    return None


def _searched_change(instant: datetime, window: SendWindow, zone: ZoneInfo, *, to_open: bool) -> datetime:
    """The general case, exact across gaps, folds and date-line jumps.

    The state changes only where the local wall time reaches a boundary: it runs into `start` (opening) or
    `end` (closing), or a clock change carries it across one. A jump forward over a boundary means that
    boundary's local time does not exist that day (a gap); a jump back over one means it exists twice (a
    fold). Either way the change happens at the transition instant. So the first change is among: every real
    instant whose local time is a boundary, and every transition next to a missing or repeated boundary. The
    earliest candidate that really has the wanted state is the answer.
    """
    local_day = instant.astimezone(zone).date()
    for first, last in _SEARCH_SPANS:
        best: datetime | None = None
        for shift in range(first, last + 1):
            for boundary in (window.start, window.end):
                for candidate in _boundary_instants(local_day, shift, boundary, zone):
                    if (
                        instant < candidate
                        and (best is None or candidate < best)
                        and window.contains(candidate.astimezone(zone).time()) == to_open
                    ):
                        best = candidate
        if best is not None:
            return best
    # Unreachable with any real zone: every window of at least a second opens and closes within two weeks.
    raise RuntimeError(f"no window change found for {window} in {zone} after {instant}")


def _boundary_instants(local_day: date, shift: int, boundary: time, zone: ZoneInfo) -> Iterator[datetime]:
    """The UTC instants where the local time on that day meets `boundary`, or where a clock change skips
    it."""
    try:
        local = datetime.combine(local_day + timedelta(days=shift), boundary, tzinfo=zone)
        # fold=0 reads the local time with the offset before a transition, fold=1 with the one after
        # (PEP 495). They agree unless the time is in a gap or a fold.
        earlier_offset = local.astimezone(UTC)
        later_offset = local.replace(fold=1).astimezone(UTC)
    except OverflowError:  # next to datetime.min or datetime.max: nothing to find there
        return
    yield earlier_offset
    if later_offset != earlier_offset:
        yield later_offset
        yield _transition(min(earlier_offset, later_offset), max(earlier_offset, later_offset), zone)


def _transition(before: datetime, after: datetime, zone: ZoneInfo) -> datetime:
    """The first whole second in ``(before, after]`` with the UTC offset of `after` (a bisection).

    Both ends are whole seconds, as are tzdata transitions, so a second's resolution is exact. The two
    readings of one local time lie one clock change apart (at most a day), hence at most 17 steps.
    """
    target = after.astimezone(zone).utcoffset()
    span = (after - before) // _ONE_SECOND
    while span > 1:
        middle = before + timedelta(seconds=span // 2)
        if middle.astimezone(zone).utcoffset() == target:
            after = middle
        else:
            before = middle
        span = (after - before) // _ONE_SECOND
    return after


class OpenSpans:
    """`closes_at` remembered per (window, zone): the sender asks it for every message, and for a window that
    is open the answer costs a bisection (about 5 µs), the same answer for a whole day's sends in that zone.

    A span is [an instant at which the window was found open, the instant it closes then]: the window is open
    all along it, so for any instant inside it closes at the same instant. Only spans are remembered (a
    closed window is asked anew: rescheduling reads `next_open` anyway), at most `max_spans` of them.
    """

    def __init__(self, max_spans: int = 4096) -> None:
        self._max_spans = max_spans
        self._spans: dict[tuple[SendWindow, ZoneInfo], tuple[datetime, datetime]] = {}

    def closes_at(self, instant: datetime, window: SendWindow | None, zone: ZoneInfo) -> datetime | None:
        """What `closes_at(instant, window, zone)` returns (so, `instant` itself when closed then)."""
        if window is None:
            _require_aware(instant)
            return None
        key = (window, zone)
        span = self._spans.get(key)
        if span is not None and span[0] <= instant < span[1]:
            return span[1]
        closing = closes_at(instant, window, zone)
        if closing is not None and closing > instant:
            if len(self._spans) >= self._max_spans:
                self._spans.clear()
            self._spans[key] = (instant, closing)
        return closing

    def is_open(self, instant: datetime, window: SendWindow | None, zone: ZoneInfo) -> bool:
        """What `is_open(instant, window, zone)` returns."""
        closing = self.closes_at(instant, window, zone)
        return closing is None or closing > instant


def _require_aware(instant: datetime) -> None:
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise ValueError(f"a naive datetime is not an instant: {instant!r}")
