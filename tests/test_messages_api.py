"""Messages on both databases: a mailout's list, adding one customer, one message with its attempts."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import delete, select

from mailer.domain.statuses import MailoutStatus, MessageStatus, Outcome
from mailer.domain.windows import SendWindow, next_open
from mailer.store.tables import customers, messages
from tests.conftest import Api
from tests.recording_engine import RecordingEngine
from tests.test_mailouts_api import (
    NOW,
    START,
    count_rows,
    create_mailout,
    insert_attempt,
    insert_customer,
    insert_message,
    iso,
    recorded,
    set_status,
    z,
)

__all__ = ["recorded"]  # the fixture, imported for pytest

MESSAGE_FIELDS = {
    "id",
    "mailout_id",
    "customer_id",
    "phone",
    "status",
    "created_at",
    "updated_at",
    "sent_at",
    "attempts",
    "next_attempt_at",
    "last_error",
}


async def add(api: Api, mailout_id: int, customer_id: int) -> Any:
    return await api.post(f"/api/mailouts/{mailout_id}/messages", json={"customer_id": customer_id})


async def test_add_a_customer_to_a_future_mailout(recorded: tuple[Api, RecordingEngine]) -> None:
    api, engine = recorded
    mailout = await create_mailout(api, send_window={"start": "09:00", "end": "18:00"})
    customer_id = await insert_customer(api.db, timezone="Asia/Kathmandu")
    engine.take()

    resp = await add(api, mailout["id"], customer_id)
    assert resp.status == 201, await resp.text()
    body = await resp.json()
    assert set(body) == MESSAGE_FIELDS
    assert (body["mailout_id"], body["customer_id"], body["status"], body["attempts"]) == (
        mailout["id"],
        customer_id,
        "pending",
        0,
    )
    assert (body["sent_at"], body["last_error"]) == (None, None)
    expected = next_open(START, SendWindow(time(9), time(18)), ZoneInfo("Asia/Kathmandu"))
    assert body["next_attempt_at"] == z(expected)
    assert engine.take() == [("changed", mailout["id"])]

    async with api.db.connect() as conn:
        row = (await conn.execute(select(messages).where(messages.c.id == body["id"]))).mappings().one()
        phone = await conn.scalar(select(customers.c.phone).where(customers.c.id == customer_id))
    assert (row["phone"], row["timezone"]) == (phone, "Asia/Kathmandu")
    assert body["phone"] == phone


async def test_add_to_a_running_mailout_is_due_now(api: Api) -> None:
    mailout = await create_mailout(api, start_at=iso(NOW - timedelta(hours=1)))
    await set_status(api.db, mailout["id"], MailoutStatus.RUNNING)
    customer_id = await insert_customer(api.db)
    before = datetime.now(UTC)
    body = await (await add(api, mailout["id"], customer_id)).json()
    after = datetime.now(UTC)
    assert before <= datetime.fromisoformat(body["next_attempt_at"]) <= after


@pytest.mark.parametrize("status", [MailoutStatus.FINISHED, MailoutStatus.CANCELLED])
async def test_a_final_mailout_takes_no_messages(
    recorded: tuple[Api, RecordingEngine], status: MailoutStatus
) -> None:
    api, engine = recorded
    # Its end has come (a finished mailout before its end is reopened instead: the test below).
    mailout_id = (
        await create_mailout(
            api, start_at=iso(NOW - timedelta(hours=2)), end_at=iso(NOW - timedelta(hours=1))
        )
    )["id"]
    await set_status(api.db, mailout_id, status)
    customer_id = await insert_customer(api.db)
    engine.take()
    resp = await add(api, mailout_id, customer_id)
    assert resp.status == 409
    assert engine.calls == []
    assert await count_rows(api.db, messages) == 0


async def test_a_mailout_finished_early_is_reopened_by_a_new_message(
    recorded: tuple[Api, RecordingEngine],
) -> None:
    """Finished because every message was final, before its end: the new customer is meant to get it."""
    api, engine = recorded
    mailout_id = (await create_mailout(api))["id"]
    await set_status(api.db, mailout_id, MailoutStatus.FINISHED)
    customer_id = await insert_customer(api.db)
    engine.take()
    resp = await add(api, mailout_id, customer_id)
    assert resp.status == 201, await resp.text()
    assert engine.calls == [("changed", mailout_id)]
    reread = await (await api.get(f"/api/mailouts/{mailout_id}")).json()
    assert reread["status"] == "running"


async def test_add_refusals(recorded: tuple[Api, RecordingEngine]) -> None:
    api, engine = recorded
    mailout_id = (await create_mailout(api))["id"]
    customer_id = await insert_customer(api.db)
    assert (await add(api, mailout_id, customer_id)).status == 201
    engine.take()

    resp = await add(api, mailout_id, customer_id)
    assert resp.status == 409, "one message per (mailout, customer)"
    resp = await add(api, mailout_id, 999_999)
    assert resp.status == 404
    assert "customer 999999" in (await resp.json())["detail"]
    resp = await add(api, 999_999, customer_id)
    assert resp.status == 404
    assert "mailout 999999" in (await resp.json())["detail"]
    for body, loc in (
        ({"customer_id": 2**63}, ["body", "customer_id"]),
        ({"customer_id": "x"}, ["body", "customer_id"]),
        ({}, ["body", "customer_id"]),
        ({"customer_id": customer_id, "phone": "7"}, ["body", "phone"]),
    ):
        resp = await api.post(f"/api/mailouts/{mailout_id}/messages", json=body)
        assert resp.status == 422, body
        assert loc in [e["loc"] for e in (await resp.json())["errors"]]
    resp = await api.post(
        f"/api/mailouts/{mailout_id}/messages", data="{", headers={"Content-Type": "application/json"}
    )
    assert resp.status == 400
    assert engine.calls == []
    assert await count_rows(api.db, messages) == 1


async def test_list_a_mailouts_messages(api: Api) -> None:
    mailout_id = (await create_mailout(api))["id"]
    other_id = (await create_mailout(api))["id"]
    ids = [await insert_message(api.db, mailout_id, s) for s in MessageStatus for _ in range(2)]
    await insert_message(api.db, other_id)
    path = f"/api/mailouts/{mailout_id}/messages"

    page = await (await api.get(path)).json()
    assert [m["id"] for m in page["items"]] == ids
    assert page["next_after"] is None
    assert set(page["items"][0]) == MESSAGE_FIELDS

    seen: list[int] = []
    after = 0
    while True:
        page = await (await api.get(path, params={"limit": 5, "after": after})).json()
        seen += [m["id"] for m in page["items"]]
        if page["next_after"] is None:
            break
        after = page["next_after"]
    assert seen == ids

    page = await (await api.get(path, params={"status": "sent"})).json()
    assert [m["status"] for m in page["items"]] == ["sent", "sent"]

    assert (await api.get(path, params={"status": "gone"})).status == 422
    assert (await api.get(path, params={"limit": 1001})).status == 422
    assert (await api.get("/api/mailouts/999999/messages")).status == 404
    assert (await api.get(f"/api/mailouts/{2**64}/messages")).status == 404


async def test_a_message_with_its_attempts(api: Api) -> None:
    mailout_id = (await create_mailout(api))["id"]
    message_id = await insert_message(api.db, mailout_id, MessageStatus.SENT, sent_at=NOW, attempts=3)
    other = await insert_message(api.db, mailout_id)
    # Written out of order: the log comes back in time order.
    await insert_attempt(api.db, message_id, mailout_id, Outcome.SENT, NOW, http_status=200)
    await insert_attempt(
        api.db, message_id, mailout_id, Outcome.TIMEOUT, NOW - timedelta(minutes=2), error="no answer in 10 s"
    )
    await insert_attempt(
        api.db,
        message_id,
        mailout_id,
        Outcome.TRANSIENT,
        NOW - timedelta(minutes=1),
        http_status=503,
        error="503",
    )
    await insert_attempt(api.db, other, mailout_id, Outcome.CONNECTION)

    resp = await api.get(f"/api/messages/{message_id}")
    assert resp.status == 200
    body = await resp.json()
    assert set(body) == MESSAGE_FIELDS | {"attempts_log"}
    assert (body["status"], body["attempts"], body["sent_at"]) == ("sent", 3, z(NOW))
    assert body["attempts_log"] == [
        {
            "started_at": z(NOW - timedelta(minutes=2)),
            "duration_ms": 12.5,
            "outcome": "timeout",
            "http_status": None,
            "error": "no answer in 10 s",
        },
        {
            "started_at": z(NOW - timedelta(minutes=1)),
            "duration_ms": 12.5,
            "outcome": "transient",
            "http_status": 503,
            "error": "503",
        },
        {"started_at": z(NOW), "duration_ms": 12.5, "outcome": "sent", "http_status": 200, "error": None},
    ]
    assert (await (await api.get(f"/api/messages/{other}")).json())["attempts_log"][0][
        "outcome"
    ] == "connection"


async def test_a_deleted_customers_messages_remain(api: Api) -> None:
    mailout_id = (await create_mailout(api))["id"]
    customer_id = await insert_customer(api.db)
    message_id = await insert_message(
        api.db, mailout_id, MessageStatus.SENT, customer_id=customer_id, sent_at=NOW
    )
    async with api.db.begin() as conn:
        await conn.execute(delete(customers).where(customers.c.id == customer_id))
    body = await (await api.get(f"/api/messages/{message_id}")).json()
    assert body["customer_id"] is None
    assert body["attempts_log"] == []


@pytest.mark.parametrize(
    "path", ["/api/messages/999", f"/api/messages/{2**63}", "/api/messages/0", "/api/messages/x"]
)
async def test_unknown_messages_are_404(api: Api, path: str) -> None:
    resp = await api.get(path)
    assert resp.status == 404
    assert resp.content_type == "application/problem+json"
