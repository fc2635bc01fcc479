"""Paging a mailout's messages reads the (mailout_id, id) index of migration 0008 and sorts nothing.

The queries are the real ones (API page, admin table page, CSV export batch), caught as they are sent to the
database and explained there with the same parameters.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, insert, select, text

from mailer.domain.statuses import MessageStatus
from mailer.store import mailout_overview
from mailer.store import messages as message_store
from mailer.store.tables import messages, metadata
from tests.conftest import Api
from tests.query_plans import plans_of

INDEX = "ix_messages_mailout_id_id"
MAILOUTS = 100
MESSAGES_EACH = 200
PAGE = 50


async def seed(api: Api) -> list[int]:
    start = datetime.now(UTC) + timedelta(days=1)
    ids = []
    for _ in range(MAILOUTS):
        body = {
            "start_at": start.isoformat(),
            "end_at": (start + timedelta(hours=1)).isoformat(),
            "text": "hello",
            "filter": {"operator_codes": [], "tags": []},
        }
        resp = await api.post("/api/mailouts/", json=body)
        assert resp.status == 201, await resp.text()
        ids.append(int((await resp.json())["id"]))
    now = datetime.now(UTC)
    rows = [
        {
            "mailout_id": mailout_id,
            "customer_id": None,
            "phone": f"7900{n:07d}",
            "timezone": "UTC",
            "status": MessageStatus.PENDING if n % 2 else MessageStatus.SENT,
            "created_at": now,
            "updated_at": now,
        }
        for n in range(MESSAGES_EACH)
        for mailout_id in ids
    ]
    async with api.db.begin() as conn:
        await conn.execute(insert(messages), rows)
        if conn.dialect.name == "postgresql":
            await conn.execute(text("ANALYZE messages"))
    return ids


def is_paging_query(statement: str) -> bool:
    return statement.lstrip().upper().startswith("SELECT") and "ORDER BY messages.id" in statement


@pytest.mark.parametrize("status", [None, MessageStatus.PENDING])
async def test_each_page_of_a_mailout_s_messages_reads_the_index_in_order(
    api: Api, status: MessageStatus | None
) -> None:
    # At test scale PostgreSQL pages a status-filtered list off the claim index (mailout_id, status, …) and
    # sorts its few rows (cheap and bounded by the status); without a status it reads the new index, which is
    # what the paging routes do by default.
    claim_index_may_sort = status is not None and api.db.dialect.name == "postgresql"
    ids = await seed(api)
    mailout_id = ids[1]
    first = select(func.min(messages.c.id)).where(messages.c.mailout_id == mailout_id)
    async with api.db.connect() as conn:
        # Ten messages of the mailout in: a page from the middle, after other mailouts' messages.
        after = int((await conn.execute(first)).scalar_one()) + 10 * MAILOUTS

    async def pages() -> None:
        page = await message_store.list_page(api.db, mailout_id, status, PAGE, after)
        assert len(page.items) == PAGE
        await mailout_overview.message_page(
            api.db, mailout_id, status=status, phone=None, limit=PAGE, after=after
        )
        async with api.db.connect() as conn:
            await mailout_overview.export_batch(conn, mailout_id, status, after, PAGE)

    plans = await plans_of(api.db, pages, is_paging_query)
    assert len(plans) == 3
    for plan in plans:
        if claim_index_may_sort:
            assert INDEX in plan or "ix_messages_mailout_id_status_next_attempt_at_id" in plan, plan
            continue
        assert INDEX in plan, plan
        # SQLite says "USE TEMP B-TREE FOR ORDER BY" when it sorts, PostgreSQL "Sort".
        assert "TEMP B-TREE" not in plan, plan
        assert "Sort" not in plan, plan


async def test_migrations_create_the_index_as_declared(api: Api) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    def diff(sync_conn: Any) -> list[Any]:
        found = compare_metadata(MigrationContext.configure(sync_conn), metadata)
        return [d for d in found if INDEX in repr(d)]

    async with api.db.connect() as conn:
        assert await conn.run_sync(diff) == []
