"""Customer queries: single-row CRUD for the API and batched upserts for the bulk import.

Every function opens its own short transaction on the engine, so no caller holds a connection while it
waits on anything else (SQLite has one pooled connection).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, String, bindparam, case, delete, func, insert, select, true, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import RowMapping
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql.elements import ColumnElement

from mailer.domain.clock import utc_now
from mailer.domain.customers import PHONE_DIGITS, CustomerFields, default_operator_code
from mailer.domain.errors import ConflictError, NotFoundError
from mailer.domain.statuses import MessageStatus
from mailer.store.coltypes import UTCDateTime
from mailer.store.paging import page_of
from mailer.store.tables import customers, messages

CustomerRow = RowMapping

_RESOURCE = "customer"


def phone_starts_with(prefix: str) -> ColumnElement[bool]:
    """Phones that begin with the digits `prefix`, as a range the unique phone index answers in any
    collation (LIKE 'p%' would need a C-collated index on PostgreSQL)."""
    # Every stored phone is 7 and ten digits: a prefix is then a range of equal-length digit strings.
    pad = PHONE_DIGITS - len(prefix)
    return customers.c.phone.between(prefix + "0" * pad, prefix + "9" * pad)


def _duplicate_phone(phone: str) -> ConflictError:
    return ConflictError(f"a customer with phone {phone} already exists")


async def create(db: AsyncEngine, fields: CustomerFields) -> CustomerRow:
    """Insert one customer; a phone that is taken is a conflict."""
    now = utc_now()
    stmt = (
        insert(customers)
        .values(
            phone=fields.phone,
            operator_code=fields.operator_code,
            tag=fields.tag,
            timezone=fields.timezone,
            created_at=now,
            updated_at=now,
        )
        .returning(*customers.c)
    )
    try:
        async with db.begin() as conn:
            row = (await conn.execute(stmt)).one()
    except IntegrityError:
        # phone is the only unique column a client controls; every other constraint is met by construction.
        raise _duplicate_phone(fields.phone) from None
    return row._mapping


async def get(db: AsyncEngine, customer_id: int) -> CustomerRow:
    async with db.connect() as conn:
        row = (await conn.execute(select(customers).where(customers.c.id == customer_id))).one_or_none()
    if row is None:
        raise NotFoundError(_RESOURCE, customer_id)
    return row._mapping


async def list_page(
    db: AsyncEngine,
    *,
    limit: int,
    after: int | None = None,
    tag: str | None = None,
    operator_code: str | None = None,
    phone: str | None = None,
    phone_prefix: str | None = None,
) -> tuple[list[CustomerRow], int | None]:
    """One page in id order, and the id to continue after (None when this page is the last).

    `phone_prefix` (digits) matches every phone that starts with it, by a range on the phone index.
    """
    c = customers.c
    query = select(customers).order_by(c.id).limit(limit + 1)
    if after is not None:
        query = query.where(c.id > after)
    if tag is not None:
        query = query.where(c.tag == tag)
    if operator_code is not None:
        query = query.where(c.operator_code == operator_code)
    if phone is not None:
        query = query.where(c.phone == phone)
    if phone_prefix is not None:
        query = query.where(phone_starts_with(phone_prefix))
    async with db.connect() as conn:
        rows = [r._mapping for r in (await conn.execute(query)).all()]
    page = page_of(rows, limit, lambda row: int(row["id"]))
    return page.items, page.next_after


async def replace(db: AsyncEngine, customer_id: int, fields: CustomerFields) -> CustomerRow:
    """Overwrite every writable field."""
    return await _update(
        db,
        customer_id,
        {
            "phone": fields.phone,
            "operator_code": fields.operator_code,
            "tag": fields.tag,
            "timezone": fields.timezone,
        },
        fields.phone,
    )


async def patch(db: AsyncEngine, customer_id: int, changes: Mapping[str, str | None]) -> CustomerRow:
    """Change the given fields; a new phone without an operator code brings its own default code."""
    if not changes:
        return await get(db, customer_id)
    values: dict[str, Any] = dict(changes)
    phone = changes.get("phone")
    if phone is not None and "operator_code" not in changes:
        # Decided in SQL against the stored phone, so reading and writing are one statement:
        # re-sending the same phone keeps a custom code, a new phone takes its own default.
        values["operator_code"] = case(
            (customers.c.phone == phone, customers.c.operator_code),
            else_=default_operator_code(phone),
        )
    return await _update(db, customer_id, values, phone)


async def _update(
    db: AsyncEngine, customer_id: int, values: dict[str, Any], phone: str | None
) -> CustomerRow:
    stmt = (
        update(customers)
        .where(customers.c.id == customer_id)
        .values(**values, updated_at=utc_now())
        .returning(*customers.c)
    )
    try:
        async with db.begin() as conn:
            row = (await conn.execute(stmt)).one_or_none()
    except IntegrityError:
        raise _duplicate_phone(phone or "") from None
    if row is None:
        raise NotFoundError(_RESOURCE, customer_id)
    return row._mapping


async def delete_one(db: AsyncEngine, customer_id: int) -> int:
    """Cancel the customer's pending messages, then delete it; its messages stay, with customer_id NULL.

    Returns how many messages were cancelled."""
    async with db.begin() as conn:
        cancelled = await conn.execute(
            update(messages)
            .where(messages.c.customer_id == customer_id, messages.c.status == MessageStatus.PENDING)
            .values(status=MessageStatus.CANCELLED, updated_at=utc_now())
        )
        result = await conn.execute(delete(customers).where(customers.c.id == customer_id))
        if result.rowcount == 0:
            # Raising inside the transaction rolls back the cancellation too (there was nothing to cancel).
            raise NotFoundError(_RESOURCE, customer_id)
    return cancelled.rowcount


_UPSERT_COLUMNS = ("phone", "operator_code", "tag", "timezone")


def _batch_source(dialect: str) -> Select[Any]:
    """The batch as a table: PostgreSQL unnests one array per column, SQLite walks one JSON array of rows.

    Either way the whole batch is a handful of bound values, so one statement carries thousands of rows
    without per-row parameter processing, and the statement text is the same for every batch (cached).
    """
    now = bindparam("now", type_=UTCDateTime())
    if dialect == "postgresql":
        arrays = [bindparam(name, type_=ARRAY(String())) for name in _UPSERT_COLUMNS]
        rows = func.unnest(*arrays).table_valued(*_UPSERT_COLUMNS).render_derived(name="batch")
        return select(*(rows.c[name] for name in _UPSERT_COLUMNS), now, now)
    if dialect == "sqlite":
        each = func.json_each(bindparam("rows", type_=String())).table_valued("value").alias("batch")
        cells = (func.json_extract(each.c.value, f"$[{i}]") for i in range(len(_UPSERT_COLUMNS)))
        # "WHERE true": without a WHERE, SQLite would read ON CONFLICT as part of the SELECT's join.
        return select(*cells, now, now).where(true())
    raise RuntimeError(f"no upsert for dialect {dialect!r}")  # pragma: no cover - settings allow no other


def _batch_params(dialect: str, rows: Sequence[CustomerFields], now: datetime) -> dict[str, Any]:
    if dialect == "postgresql":
        columns = list(zip(*rows, strict=True))
        return {"now": now} | {
            name: list(values) for name, values in zip(_UPSERT_COLUMNS, columns, strict=True)
        }
    return {"now": now, "rows": json.dumps(rows)}


def _upsert_statement(dialect: str) -> Any:
    insert_into: Any = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = insert_into(customers).from_select(
        [*_UPSERT_COLUMNS, "created_at", "updated_at"], _batch_source(dialect)
    )
    return stmt.on_conflict_do_update(
        index_elements=[customers.c.phone],
        set_={
            "operator_code": stmt.excluded.operator_code,
            "tag": stmt.excluded.tag,
            "timezone": stmt.excluded.timezone,
            "updated_at": stmt.excluded.updated_at,
        },
    ).returning(customers.c.id, customers.c.created_at)


@dataclass(frozen=True, slots=True)
class UpsertOutcome:
    """What one batch did: the counts, and the ids it created and updated (each id once)."""

    created: int
    updated: int
    created_ids: list[int]
    updated_ids: list[int]


async def upsert_batch(db: AsyncEngine, batch: Sequence[CustomerFields]) -> UpsertOutcome:
    """Create or update customers by phone in one statement and transaction.

    Within the batch the last entry for a phone wins; the earlier ones count as updates, as they would
    had they come in separate batches, so created + updated == len(batch).
    """
    if not batch:
        return UpsertOutcome(0, 0, [], [])
    # One row per phone: PostgreSQL refuses to update a row twice in one statement.
    rows = list({fields.phone: fields for fields in batch}.values())
    now = utc_now()
    async with db.begin() as conn:
        dialect = conn.dialect.name
        result = await conn.execute(_upsert_statement(dialect), _batch_params(dialect, rows, now))
        # An update keeps the row's created_at, so only the rows this statement created carry `now`; exact
        # even when another import writes the same phones at the same time.
        created_ids: list[int] = []
        updated_ids: list[int] = []
        for customer_id, created_at in result.all():
            (created_ids if created_at == now else updated_ids).append(customer_id)
    created = len(created_ids)
    return UpsertOutcome(created, len(batch) - created, created_ids, updated_ids)
