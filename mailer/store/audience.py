"""How many customers a mailout's filter matches, per time zone, in one query on the customer indexes."""

from __future__ import annotations

from sqlalchemy import ColumnElement, and_, func, select, true
from sqlalchemy.ext.asyncio import AsyncEngine

from mailer.domain.mailouts import AudienceFilter
from mailer.store.tables import customers


def matches(audience: AudienceFilter) -> ColumnElement[bool]:
    """The customers the filter matches: each non-empty list must hold the customer's value."""
    conditions: list[ColumnElement[bool]] = []
    if audience.operator_codes:
        conditions.append(customers.c.operator_code.in_(audience.operator_codes))
    if audience.tags:
        conditions.append(customers.c.tag.in_(audience.tags))
    return and_(true(), *conditions)


async def count(db: AsyncEngine, audience: AudienceFilter) -> int:
    """Matching customers: without a window to check, the zone does not matter and the count can be read off
    the (operator_code, tag) index alone (or the smallest index, for everyone)."""
    query = select(func.count()).select_from(customers).where(matches(audience))
    async with db.connect() as conn:
        return int(await conn.scalar(query) or 0)


async def count_by_zone(db: AsyncEngine, audience: AudienceFilter) -> dict[str, int]:
    """{time zone: matching customers}; zones with none are absent.

    Grouped by zone because whether a customer is inside a send window now depends on its zone only: the
    caller evaluates the window once per zone (a few hundred at most), never once per customer.
    """
    query = select(customers.c.timezone, func.count()).where(matches(audience)).group_by(customers.c.timezone)
    async with db.connect() as conn:
        return {zone: n for zone, n in await conn.execute(query)}
