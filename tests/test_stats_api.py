"""Mailout statistics on both databases: counts in every status, completeness, pages, aliases, queries."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from mailer.domain.statuses import MailoutStatus, MessageStatus, Outcome
from mailer.schemas.mailouts import ByStatus, ErrorsByKind
from tests.conftest import Api
from tests.test_mailouts_api import NOW, create_mailout, insert_attempt, insert_message, set_status, z

ZERO_STATUSES = {s.value: 0 for s in MessageStatus}
ZERO_ERRORS = {o.value: 0 for o in Outcome if o is not Outcome.SENT}


def test_the_count_models_name_every_status_and_error_kind() -> None:
    assert ByStatus().model_dump() == ZERO_STATUSES
    assert ErrorsByKind().model_dump() == ZERO_ERRORS


async def seed(api: Api) -> tuple[list[int], dict[int, dict[str, int]]]:
    """Three mailouts: one with two messages in each status, one with a few, one with none."""
    ids = [(await create_mailout(api, text=f"m{i}"))["id"] for i in range(3)]
    await set_status(api.db, ids[0], MailoutStatus.RUNNING)
    for status in MessageStatus:
        for _ in range(2):
            await insert_message(api.db, ids[0], status)
    await insert_message(api.db, ids[1], MessageStatus.SENT)
    await insert_message(api.db, ids[1], MessageStatus.FAILED)
    await insert_message(api.db, ids[1], MessageStatus.FAILED)
    expected = {
        ids[0]: {s.value: 2 for s in MessageStatus},
        ids[1]: ZERO_STATUSES | {"sent": 1, "failed": 2},
        ids[2]: ZERO_STATUSES,
    }
    return ids, expected


@pytest.mark.parametrize("path", ["/api/mailouts/stats", "/api/mailouts/status/stats"])
async def test_stats_of_every_mailout(api: Api, path: str) -> None:
    ids, expected = await seed(api)
    page = await (await api.get(path)).json()
    assert page["next_after"] is None
    assert [item["id"] for item in page["items"]] == ids
    first = page["items"][0]
    assert set(first) == {"id", "status", "start_at", "end_at", "text", "total", "by_status"}
    assert (first["status"], first["text"]) == ("running", "m0")
    for item in page["items"]:
        assert item["by_status"] == expected[item["id"]]
        assert item["total"] == sum(expected[item["id"]].values())

    page = await (await api.get(path, params={"limit": 2})).json()
    assert [i["id"] for i in page["items"]] == ids[:2]
    assert page["next_after"] == ids[1]
    page = await (await api.get(path, params={"limit": 2, "after": ids[1]})).json()
    assert [i["id"] for i in page["items"]] == ids[2:]
    assert page["next_after"] is None

    page = await (await api.get(path, params={"status": "running"})).json()
    assert [i["id"] for i in page["items"]] == ids[:1]
    assert (await api.get(path, params={"status": "bad"})).status == 422
    assert (await api.get(path, params={"limit": 0})).status == 422


@pytest.fixture
def statements(api: Api) -> Iterator[list[str]]:
    """The SQL statements run while the test runs."""
    seen: list[str] = []
    db: AsyncEngine = api.db

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    event.listen(db.sync_engine, "before_cursor_execute", record)
    yield seen
    event.remove(db.sync_engine, "before_cursor_execute", record)


async def test_the_counts_of_a_page_take_one_query(api: Api, statements: list[str]) -> None:
    await seed(api)
    statements.clear()
    resp = await api.get("/api/mailouts/stats")
    assert resp.status == 200
    # The counts come from the counters the triggers keep: one query for the page, no count of messages.
    on_counters = [s for s in statements if "FROM mailout_message_counts" in s]
    assert len(on_counters) == 1, statements
    assert not [s for s in statements if "FROM messages" in s], statements


@pytest.mark.parametrize("suffix", ["stats", "messages/stats"])
async def test_stats_of_one_mailout(api: Api, suffix: str) -> None:
    ids, expected = await seed(api)
    mailout_id = ids[0]
    first_sent = NOW - timedelta(hours=2)
    last_sent = NOW - timedelta(minutes=3)
    sent = [
        await insert_message(api.db, mailout_id, MessageStatus.SENT, sent_at=at)
        for at in (last_sent, first_sent, NOW - timedelta(hours=1))
    ]
    outcomes = [Outcome.SENT, Outcome.TRANSIENT, Outcome.TRANSIENT, Outcome.TIMEOUT, Outcome.REJECTED]
    for outcome in outcomes:
        await insert_attempt(api.db, sent[0], mailout_id, outcome)
    # Another mailout's attempts do not count.
    other_message = await insert_message(api.db, ids[1], MessageStatus.SENT, sent_at=NOW)
    await insert_attempt(api.db, other_message, ids[1], Outcome.CONNECTION)

    resp = await api.get(f"/api/mailouts/{mailout_id}/{suffix}")
    assert resp.status == 200
    body = await resp.json()
    assert set(body) == {
        "mailout",
        "total",
        "by_status",
        "first_sent_at",
        "last_sent_at",
        "attempts",
        "errors_by_kind",
    }
    assert body["mailout"] == await (await api.get(f"/api/mailouts/{mailout_id}")).json()
    by_status = expected[mailout_id] | {"sent": 2 + 3}
    assert body["by_status"] == by_status
    assert body["total"] == sum(by_status.values())
    assert (body["first_sent_at"], body["last_sent_at"]) == (z(first_sent), z(last_sent))
    assert body["attempts"] == len(outcomes)
    assert body["errors_by_kind"] == ZERO_ERRORS | {"transient": 2, "timeout": 1, "rejected": 1}


async def test_stats_of_an_empty_mailout(api: Api) -> None:
    mailout_id = (await create_mailout(api))["id"]
    body = await (await api.get(f"/api/mailouts/{mailout_id}/stats")).json()
    assert (body["total"], body["by_status"], body["attempts"]) == (0, ZERO_STATUSES, 0)
    assert (body["first_sent_at"], body["last_sent_at"]) == (None, None)
    assert body["errors_by_kind"] == ZERO_ERRORS


@pytest.mark.parametrize("mailout_id", ["999", str(2**63), "0"])
async def test_stats_of_unknown_mailouts_are_404(api: Api, mailout_id: str) -> None:
    for suffix in ("stats", "messages/stats"):
        resp = await api.get(f"/api/mailouts/{mailout_id}/{suffix}")
        assert resp.status == 404
        assert resp.content_type == "application/problem+json"
