"""The customers resource over HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from mailer.domain.statuses import MailoutStatus, MessageStatus
from mailer.store.tables import customers, mailouts, messages
from tests.conftest import Api

BASE = "/api/customers/"


async def create(api: Api, **fields: Any) -> dict[str, Any]:
    body = {"phone": "79001234567", **fields}
    resp = await api.post(BASE, json=body)
    assert resp.status == 201, await resp.text()
    return dict(await resp.json())


async def customer_count(api: Api) -> int:
    async with api.db.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(customers))).scalar_one())


async def assert_problem(resp: Any, status: int, loc: Sequence[str | int] | None = None) -> dict[str, Any]:
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/problem+json"
    body = dict(await resp.json())
    assert body["status"] == status
    if loc is not None:
        assert list(loc) in [e["loc"] for e in body["errors"]], body
    return body


# --- create and read ---------------------------------------------------------------------------------------


async def test_create_applies_defaults_and_reads_back(api: Api) -> None:
    before = datetime.now(UTC)
    created = await create(api)
    assert created["phone"] == "79001234567"
    assert created["operator_code"] == "900"
    assert created["tag"] is None
    assert created["timezone"] == "UTC"
    assert created["created_at"].endswith("Z")
    assert created["created_at"] == created["updated_at"]
    assert datetime.fromisoformat(created["created_at"]) >= before - timedelta(seconds=1)
    assert set(created) == {"id", "phone", "operator_code", "tag", "timezone", "created_at", "updated_at"}

    resp = await api.get(f"/api/customers/{created['id']}")
    assert resp.status == 200
    assert await resp.json() == created


async def test_create_with_every_field_and_integer_phone(api: Api) -> None:
    created = await create(api, phone=79161234567, operator_code="123", tag="vip", timezone="Asia/Kathmandu")
    assert created["phone"] == "79161234567"
    assert created["operator_code"] == "123"
    assert created["tag"] == "vip"
    assert created["timezone"] == "Asia/Kathmandu"


async def test_collection_answers_without_trailing_slash(api: Api) -> None:
    resp = await api.post("/api/customers", json={"phone": "79001234567"})
    assert resp.status == 201
    resp = await api.get("/api/customers")
    assert resp.status == 200
    assert len((await resp.json())["items"]) == 1


async def test_unicode_tag_is_stored_exactly(api: Api) -> None:
    tag = "клиент 🎉 " + "x" * 54
    created = await create(api, tag=tag)
    resp = await api.get(f"/api/customers/{created['id']}")
    assert (await resp.json())["tag"] == tag


# --- validation -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"phone": "7900123456"}, ["body", "phone"]),
        ({"phone": "790012345678"}, ["body", "phone"]),
        ({"phone": "89001234567"}, ["body", "phone"]),
        ({"phone": 89001234567}, ["body", "phone"]),
        ({"phone": True}, ["body", "phone"]),
        # 79001234567.0 is an integer to JSON Schema, so it is accepted; a fraction is not.
        ({"phone": 79001234567.5}, ["body", "phone"]),
        ({"phone": 10**30}, ["body", "phone"]),
        ({"phone": ""}, ["body", "phone"]),
        ({"phone": None}, ["body", "phone"]),
        ({}, ["body", "phone"]),
        ({"phone": "79001234567", "operator_code": "90"}, ["body", "operator_code"]),
        ({"phone": "79001234567", "operator_code": 900}, ["body", "operator_code"]),
        ({"phone": "79001234567", "operator_code": None}, ["body", "operator_code"]),
        ({"phone": "79001234567", "tag": "x" * 65}, ["body", "tag"]),
        ({"phone": "79001234567", "tag": 7}, ["body", "tag"]),
        ({"phone": "79001234567", "tag": "a\u0000b"}, ["body", "tag"]),
        ({"phone": "79001234567", "timezone": "Mars/Olympus"}, ["body", "timezone"]),
        ({"phone": "79001234567", "timezone": None}, ["body", "timezone"]),
        ({"phone": "79001234567", "timezone": "x" * 10_000}, ["body", "timezone"]),
        ({"phone": "79001234567", "name": "Ann"}, ["body", "name"]),
    ],
)
async def test_create_refuses_bad_fields_and_changes_nothing(
    api: Api, body: dict[str, Any], loc: list[str | int]
) -> None:
    resp = await api.post(BASE, json=body)
    await assert_problem(resp, 422, loc)
    assert await customer_count(api) == 0


async def test_lone_surrogate_in_tag_is_422(api: Api) -> None:
    # Valid JSON escaping an invalid code point: PostgreSQL could not store it.
    raw = '{"phone": "79001234567", "tag": "\\ud800"}'
    resp = await api.post(BASE, data=raw, headers={"Content-Type": "application/json"})
    await assert_problem(resp, 422, ["body", "tag"])


@pytest.mark.parametrize(
    "raw",
    [
        b"{",
        b'{"phone": "79001234567",}',
        b"",
        b'{"phone": 7' + b"0" * 5000 + b"}",  # json.loads refuses integers this long with a bare ValueError
        b"[" * 100_000 + b"]" * 100_000,  # deep enough to exhaust the recursion limit
    ],
)
async def test_malformed_json_is_400(api: Api, raw: bytes) -> None:
    resp = await api.post(BASE, data=raw, headers={"Content-Type": "application/json"})
    await assert_problem(resp, 400)
    assert await customer_count(api) == 0


async def test_invalid_utf8_body_is_400(api: Api) -> None:
    resp = await api.post(BASE, data=b'{"phone": "7900\xff"}', headers={"Content-Type": "application/json"})
    await assert_problem(resp, 400)


async def test_non_object_body_is_refused(api: Api) -> None:
    resp = await api.post(BASE, json=["79001234567"])
    assert resp.status in (400, 422)
    assert await customer_count(api) == 0


async def test_duplicate_phone_is_409_on_create(api: Api) -> None:
    await create(api)
    resp = await api.post(BASE, json={"phone": 79001234567})
    body = await assert_problem(resp, 409)
    assert "79001234567" in body["detail"]
    assert await customer_count(api) == 1


@pytest.mark.parametrize("ident", ["0", "99999999999999999999", "9223372036854775808", "abc", "-1", "1.5"])
async def test_ids_that_name_nothing_are_404(api: Api, ident: str) -> None:
    for method in ("GET", "PUT", "PATCH", "DELETE"):
        kwargs: dict[str, Any] = {"json": {"phone": "79001234567"}} if method in ("PUT", "PATCH") else {}
        resp = await api.request(method, f"/api/customers/{ident}", **kwargs)
        await assert_problem(resp, 404)


async def test_unknown_id_is_404(api: Api) -> None:
    await assert_problem(await api.get("/api/customers/42"), 404)
    await assert_problem(await api.put("/api/customers/42", json={"phone": "79001234567"}), 404)
    await assert_problem(await api.patch("/api/customers/42", json={"tag": "x"}), 404)
    await assert_problem(await api.patch("/api/customers/42", json={}), 404)
    await assert_problem(await api.delete("/api/customers/42"), 404)
    assert await customer_count(api) == 0


# --- list -----------------------------------------------------------------------------------------


async def test_list_pages_by_id_with_keyset(api: Api) -> None:
    ids = [(await create(api, phone=79000000000 + i))["id"] for i in range(5)]
    seen: list[int] = []
    after: int | None = None
    pages = 0
    while True:
        query = {"limit": "2"} if after is None else {"limit": "2", "after": str(after)}
        resp = await api.get(BASE, params=query)
        assert resp.status == 200
        page = await resp.json()
        seen += [c["id"] for c in page["items"]]
        pages += 1
        after = page["next_after"]
        if after is None:
            break
        assert after == seen[-1]
    assert seen == sorted(ids)
    assert pages == 3


async def test_list_exact_page_has_no_next(api: Api) -> None:
    for i in range(2):
        await create(api, phone=79000000000 + i)
    page = await (await api.get(BASE, params={"limit": "2"})).json()
    assert len(page["items"]) == 2
    assert page["next_after"] is None


async def test_list_default_limit_is_50(api: Api) -> None:
    for i in range(51):
        await create(api, phone=79000000000 + i)
    page = await (await api.get(BASE)).json()
    assert len(page["items"]) == 50
    assert page["next_after"] == page["items"][-1]["id"]


async def test_list_filters_combine(api: Api) -> None:
    a = await create(api, phone="79001111111", tag="vip")
    b = await create(api, phone="79161111111", tag="vip")
    await create(api, phone="79002222222", tag="new")
    await create(api, phone="79003333333")

    async def ids(**query: str) -> list[int]:
        resp = await api.get(BASE, params=query)
        assert resp.status == 200, await resp.text()
        return [c["id"] for c in (await resp.json())["items"]]

    assert await ids(tag="vip") == [a["id"], b["id"]]
    assert await ids(tag="vip", operator_code="916") == [b["id"]]
    assert len(await ids(operator_code="900")) == 3
    assert await ids(phone="79001111111") == [a["id"]]
    assert await ids(tag="nobody") == []


@pytest.mark.parametrize(
    ("query", "loc"),
    [
        ({"limit": "0"}, ["query", "limit"]),
        ({"limit": "1001"}, ["query", "limit"]),
        ({"limit": "abc"}, ["query", "limit"]),
        ({"limit": "99999999999999999999999"}, ["query", "limit"]),
        ({"after": "-1"}, ["query", "after"]),
        ({"after": "99999999999999999999999"}, ["query", "after"]),
        ({"operator_code": "12"}, ["query", "operator_code"]),
        ({"phone": "8900"}, ["query", "phone"]),
        ({"tag": "x" * 65}, ["query", "tag"]),
        ({"tag": "a\x00b"}, ["query", "tag"]),
    ],
)
async def test_list_refuses_bad_query(api: Api, query: dict[str, str], loc: list[str]) -> None:
    await assert_problem(await api.get(BASE, params=query), 422, loc)


async def test_list_accepts_max_limit(api: Api) -> None:
    resp = await api.get(BASE, params={"limit": "1000"})
    assert resp.status == 200
    assert await resp.json() == {"items": [], "next_after": None}


# --- replace --------------------------------------------------------------------------------------


async def test_put_replaces_and_applies_defaults(api: Api) -> None:
    created = await create(api, operator_code="123", tag="vip", timezone="Europe/Moscow")
    resp = await api.put(f"/api/customers/{created['id']}", json={"phone": 79161234567})
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["phone"] == "79161234567"
    assert body["operator_code"] == "916"
    assert body["tag"] is None
    assert body["timezone"] == "UTC"
    assert body["created_at"] == created["created_at"]
    assert body["updated_at"] >= created["updated_at"]
    assert await (await api.get(f"/api/customers/{created['id']}")).json() == body


async def test_put_validates_like_create(api: Api) -> None:
    created = await create(api)
    resp = await api.put(f"/api/customers/{created['id']}", json={"phone": "79001234567", "tag": "x" * 65})
    await assert_problem(resp, 422, ["body", "tag"])
    resp = await api.put(f"/api/customers/{created['id']}", json={"tag": "x"})
    await assert_problem(resp, 422, ["body", "phone"])
    assert await (await api.get(f"/api/customers/{created['id']}")).json() == created


async def test_put_to_a_taken_phone_is_409(api: Api) -> None:
    await create(api, phone="79001111111")
    other = await create(api, phone="79002222222")
    resp = await api.put(f"/api/customers/{other['id']}", json={"phone": "79001111111"})
    await assert_problem(resp, 409)
    assert await (await api.get(f"/api/customers/{other['id']}")).json() == other


# --- change ---------------------------------------------------------------------------------------


async def test_patch_changes_only_given_fields(api: Api) -> None:
    created = await create(api, tag="vip", timezone="Europe/Moscow")
    resp = await api.patch(f"/api/customers/{created['id']}", json={"tag": "gold"})
    assert resp.status == 200
    body = await resp.json()
    assert body["tag"] == "gold"
    assert body["timezone"] == "Europe/Moscow"
    assert body["phone"] == created["phone"]

    resp = await api.patch(f"/api/customers/{created['id']}", json={"tag": None})
    assert (await resp.json())["tag"] is None


async def test_patch_empty_body_changes_nothing(api: Api) -> None:
    created = await create(api, tag="vip")
    resp = await api.patch(f"/api/customers/{created['id']}", json={})
    assert resp.status == 200
    assert await resp.json() == created


async def test_patch_new_phone_brings_its_operator_code(api: Api) -> None:
    created = await create(api, phone="79001234567", operator_code="555")
    url = f"/api/customers/{created['id']}"
    # The same phone again keeps a custom code.
    body = await (await api.patch(url, json={"phone": "79001234567"})).json()
    assert body["operator_code"] == "555"
    body = await (await api.patch(url, json={"phone": 79161234567})).json()
    assert (body["phone"], body["operator_code"]) == ("79161234567", "916")
    body = await (await api.patch(url, json={"phone": "79261234567", "operator_code": "111"})).json()
    assert (body["phone"], body["operator_code"]) == ("79261234567", "111")
    body = await (await api.patch(url, json={"operator_code": "222"})).json()
    assert (body["phone"], body["operator_code"]) == ("79261234567", "222")


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"phone": None}, ["body", "phone"]),
        ({"phone": "123"}, ["body", "phone"]),
        ({"operator_code": None}, ["body", "operator_code"]),
        ({"timezone": None}, ["body", "timezone"]),
        ({"timezone": "Nowhere/City"}, ["body", "timezone"]),
        ({"tag": "x" * 65}, ["body", "tag"]),
        ({"id": 5}, ["body", "id"]),
    ],
)
async def test_patch_refuses_bad_fields(api: Api, body: dict[str, Any], loc: list[str]) -> None:
    created = await create(api)
    await assert_problem(await api.patch(f"/api/customers/{created['id']}", json=body), 422, loc)
    assert await (await api.get(f"/api/customers/{created['id']}")).json() == created


async def test_patch_to_a_taken_phone_is_409(api: Api) -> None:
    await create(api, phone="79001111111")
    other = await create(api, phone="79002222222")
    resp = await api.patch(f"/api/customers/{other['id']}", json={"phone": "79001111111"})
    await assert_problem(resp, 409)
    assert await (await api.get(f"/api/customers/{other['id']}")).json() == other


# --- delete ---------------------------------------------------------------------------------------


async def insert_running_mailout(conn: AsyncConnection, text: str, now: datetime) -> int:
    """A mailout the engine would have started, written directly."""
    values = {
        "start_at": now,
        "end_at": now + timedelta(hours=1),
        "text": text,
        "operator_codes": [],
        "tags": [],
        "status": MailoutStatus.RUNNING,
        "created_at": now,
        "updated_at": now,
    }
    return int((await conn.execute(insert(mailouts).values(values).returning(mailouts.c.id))).scalar_one())


async def test_delete_cancels_pending_messages_and_keeps_history(api: Api) -> None:
    created = await create(api)
    keeper = await create(api, phone="79009999999")
    now = datetime.now(UTC)
    async with api.db.begin() as conn:
        mailout_id = await insert_running_mailout(conn, "hi", now)
        second_mailout = await insert_running_mailout(conn, "bye", now)
        rows = [
            (mailout_id, created["id"], MessageStatus.SENT),
            (second_mailout, created["id"], MessageStatus.PENDING),
            (mailout_id, keeper["id"], MessageStatus.PENDING),
        ]
        for m_id, c_id, status in rows:
            await conn.execute(
                insert(messages).values(
                    mailout_id=m_id,
                    customer_id=c_id,
                    phone="79001234567",
                    timezone="UTC",
                    status=status,
                    created_at=now,
                    updated_at=now,
                )
            )

    resp = await api.delete(f"/api/customers/{created['id']}")
    assert resp.status == 204
    assert await resp.read() == b""
    await assert_problem(await api.get(f"/api/customers/{created['id']}"), 404)
    await assert_problem(await api.delete(f"/api/customers/{created['id']}"), 404)

    async with api.db.connect() as conn:
        result = await conn.execute(
            select(
                messages.c.mailout_id, messages.c.customer_id, messages.c.status, messages.c.updated_at
            ).order_by(messages.c.id)
        )
        found = [tuple(r) for r in result.all()]
    assert [(m, c, s) for m, c, s, _ in found] == [
        (mailout_id, None, MessageStatus.SENT),
        (second_mailout, None, MessageStatus.CANCELLED),
        (mailout_id, keeper["id"], MessageStatus.PENDING),
    ]
    assert found[0][3] == now  # the sent one is untouched
    assert found[1][3] > now
    assert (await api.get(f"/api/customers/{keeper['id']}")).status == 200
