"""A would-be mailout's audience: customers its filter matches, and how many are in its window now."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncEngine

from mailer.domain.clock import utc_now
from mailer.domain.mailouts import AudienceFilter
from mailer.domain.windows import SendWindow, is_open, load_zone
from mailer.store import audience as store


@dataclass(frozen=True, slots=True)
class AudienceCount:
    count: int
    in_window_now: int


def in_window(by_zone: Mapping[str, int], window: SendWindow | None, now: datetime) -> int:
    """How many of the customers (counted per zone) are inside `window` at `now`: one check per zone."""
    if window is None:
        return sum(by_zone.values())
    return sum(n for zone, n in by_zone.items() if is_open(now, window, load_zone(zone)))


async def count(
    db: AsyncEngine, audience: AudienceFilter, window: SendWindow | None, now: datetime | None = None
) -> AudienceCount:
    """One count query: a plain one without a window, grouped by time zone with one."""
    if window is None:
        matching = await store.count(db, audience)
        return AudienceCount(count=matching, in_window_now=matching)
    by_zone = await store.count_by_zone(db, audience)
    moment = now or utc_now()
    return AudienceCount(count=sum(by_zone.values()), in_window_now=in_window(by_zone, window, moment))
