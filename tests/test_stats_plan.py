"""The first and last send of a mailout are one lookup in the partial `(mailout_id, sent_at)` index.

Both of the admin UI's live fragments and `GET /api/mailouts/{id}/stats` read them on every refresh. With a
condition on `status` as well, PostgreSQL on a freshly filled table took the claim index instead and sorted
every sent message of the mailout (bench/admin_tabs.py found 20 ms per refresh at 11,000 sent).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import insert

from mailer.domain.statuses import MessageStatus
from mailer.store import stats
from mailer.store.tables import messages
from tests.conftest import Api
from tests.query_plans import plans_of

INDEX = "ix_messages_mailout_id_sent_at"
MESSAGES = 4000


async def test_first_and_last_send_read_the_sent_at_index_without_sorting(api: Api) -> None:
    if api.db.dialect.name == "postgresql":
        pytest.skip(
            "PostgreSQL reads statistics through DirectStatement (store/direct.py), which SQLAlchemy's "
            "events never see; tests/test_read_path.py checks the plan of its statement"
        )
    start = datetime.now(UTC) + timedelta(days=1)
    body = {
        "start_at": start.isoformat(),
        "end_at": (start + timedelta(hours=1)).isoformat(),
        "text": "hello",
        "filter": {"operator_codes": [], "tags": []},
    }
    resp = await api.post("/api/mailouts/", json=body)
    assert resp.status == 201, await resp.text()
    mailout_id = int((await resp.json())["id"])
    now = datetime.now(UTC)
    rows = [
        {
            "mailout_id": mailout_id,
            "customer_id": None,
            "phone": f"7900{n:07d}",
            "timezone": "UTC",
            "status": MessageStatus.SENT if n % 2 else MessageStatus.PENDING,
            "sent_at": now + timedelta(seconds=n) if n % 2 else None,
            "created_at": now,
            "updated_at": now,
        }
        for n in range(MESSAGES)
    ]
    # No ANALYZE: the planner sees the table as the engine leaves it right after an activation.
    async with api.db.begin() as conn:
        await conn.execute(insert(messages), rows)

    found: list[Any] = []

    async def read() -> None:
        found.append(await stats.for_mailout(api.db, mailout_id))

    plans = await plans_of(api.db, read, lambda statement: "sent_at" in statement and "ORDER BY" in statement)
    data = found[0]
    assert data.first_sent_at == now + timedelta(seconds=1)
    assert data.last_sent_at == now + timedelta(seconds=MESSAGES - 1)
    assert len(plans) == 1
    plan = plans[0]
    assert INDEX in plan, plan
    # SQLite says "USE TEMP B-TREE FOR ORDER BY" when it sorts, PostgreSQL "Sort".
    assert "TEMP B-TREE" not in plan, plan
    assert "Sort" not in plan, plan
