"""The search box's queries: customers by id, phone prefix, operator code or tag; mailouts by id or text."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import ColumnElement, or_, select
from sqlalchemy.ext.asyncio import AsyncEngine

from mailer.domain.mailouts import Mailout
from mailer.store.customers import CustomerRow, phone_starts_with
from mailer.store.mailouts import contains, from_row
from mailer.store.tables import customers, mailouts


@dataclass(frozen=True, slots=True)
class SearchTerms:
    """What one typed query may mean; None where it cannot mean that (see `mailer.operations.search`)."""

    ident: int | None = None
    phone_prefix: str | None = None
    operator_code: str | None = None
    tag: str | None = None
    text: str | None = None


def _customer_conditions(terms: SearchTerms) -> list[ColumnElement[bool]]:
    c = customers.c
    found: list[ColumnElement[bool]] = []
    if terms.ident is not None:
        found.append(c.id == terms.ident)
    if terms.phone_prefix is not None:
        found.append(phone_starts_with(terms.phone_prefix))
    if terms.operator_code is not None:
        found.append(c.operator_code == terms.operator_code)
    if terms.tag is not None:
        found.append(c.tag == terms.tag)
    return found


async def find_customers(db: AsyncEngine, terms: SearchTerms, limit: int) -> list[CustomerRow]:
    """Customers any term matches, in id order, at most `limit`."""
    conditions = _customer_conditions(terms)
    if not conditions:
        return []
    query = select(customers).where(or_(*conditions)).order_by(customers.c.id).limit(limit)
    async with db.connect() as conn:
        return [r._mapping for r in (await conn.execute(query)).all()]


async def find_mailouts(db: AsyncEngine, terms: SearchTerms, limit: int) -> list[Mailout]:
    """Mailouts with that id or whose text holds the query (case-insensitive), newest first."""
    m = mailouts.c
    conditions: list[ColumnElement[bool]] = []
    if terms.ident is not None:
        conditions.append(m.id == terms.ident)
    if terms.text:
        conditions.append(contains(terms.text))
    if not conditions:
        return []
    query = select(mailouts).where(or_(*conditions)).order_by(m.id.desc()).limit(limit)
    async with db.connect() as conn:
        rows = (await conn.execute(query)).mappings().all()
    return [from_row(r) for r in rows]
