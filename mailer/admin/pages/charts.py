"""Chart geometry for server-rendered SVG: numbers in, bar positions out (the page shows the numbers too)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

# The chart's drawing box, in SVG user units; it scales to the page width.
CHART_WIDTH = 600
CHART_HEIGHT = 160
# Minutes shown at most: one bar each stays wider than a pixel on a phone.
MAX_MINUTES = 60
# Minutes shown at least, so that a short burst still sits on a time axis instead of filling the chart.
MIN_MINUTES = 10
MINUTE = timedelta(minutes=1)


@dataclass(frozen=True, slots=True)
class MinuteBar:
    minute: datetime
    sent: int
    failed: int
    x: float
    width: float
    sent_height: float
    failed_height: float


@dataclass(frozen=True, slots=True)
class Series:
    bars: list[MinuteBar]
    peak: int

    @property
    def empty(self) -> bool:
        return not self.bars


def minute_series(
    sent: Mapping[datetime, int], failed: Mapping[datetime, int], last_minute: datetime | None = None
) -> Series:
    """One bar per minute from the first minute with data to `last_minute` (or the last with data), at
    most MAX_MINUTES; empty minutes in between are bars of zero, so the time axis stays true."""
    minutes = set(sent) | set(failed)
    if not minutes:
        return Series([], 0)
    end = max(minutes) if last_minute is None else max(max(minutes), last_minute)
    start = max(min(minutes), end - (MAX_MINUTES - 1) * MINUTE)
    start = min(start, end - (MIN_MINUTES - 1) * MINUTE)
    count = int((end - start) / MINUTE) + 1
    peak = max((sent.get(m, 0) + failed.get(m, 0)) for m in minutes if m >= start) or 1
    width = CHART_WIDTH / count
    bars = []
    for i in range(count):
        minute = start + i * MINUTE
        s, f = sent.get(minute, 0), failed.get(minute, 0)
        bars.append(
            MinuteBar(
                minute=minute,
                sent=s,
                failed=f,
                x=i * width,
                width=max(width - 1, 1),
                sent_height=CHART_HEIGHT * s / peak,
                failed_height=CHART_HEIGHT * f / peak,
            )
        )
    return Series(bars, peak)
