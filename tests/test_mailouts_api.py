"""/api/mailouts on both databases: create, validation, list, change rules by status, lifecycle, delete.

Rows the engine would make (activation, messages, attempts) are written directly; a recording EnginePort
checks that the API wakes and stops the engine when it should.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from sqlalchemy import Table, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from mailer import keys
from mailer.app import create_app
from mailer.domain.statuses import MailoutStatus, MessageStatus, Outcome
from mailer.settings import Settings
from mailer.store.tables import customers, mailouts, message_attempts, messages
from tests.conftest import ADMIN_PASSWORD, AiohttpClient, Api
from tests.recording_engine import RecordingEngine

NOW = datetime.now(UTC).replace(microsecond=0)
START = NOW + timedelta(days=1)
END = START + timedelta(hours=12)


def iso(value: datetime) -> str:
    return value.isoformat()


def z(value: datetime) -> str:
    """How the API writes an instant."""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def mailout_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"start_at": iso(START), "end_at": iso(END), "text": "hello"}
    body.update(overrides)
    return body


async def create_mailout(api: Api, **overrides: Any) -> dict[str, Any]:
    resp = await api.post("/api/mailouts/", json=mailout_body(**overrides))
    assert resp.status == 201, await resp.text()
    body: dict[str, Any] = await resp.json()
    return body


async def set_status(
    db: AsyncEngine, mailout_id: int, status: MailoutStatus, *, activated: bool = True
) -> None:
    """What the engine does: activate, finish."""
    values: dict[str, Any] = {"status": status, "activated_at": NOW if activated else None}
    async with db.begin() as conn:
        await conn.execute(update(mailouts).where(mailouts.c.id == mailout_id).values(values))


_phones = iter(range(70000000000, 79999999999))


async def insert_row(db: AsyncEngine, table: Table, values: dict[str, Any]) -> int:
    """A row the engine (or another test's setup) would have made, written directly; its id."""
    async with db.begin() as conn:
        return int((await conn.execute(insert(table).values(values).returning(table.c.id))).scalar_one())


async def insert_customer(db: AsyncEngine, *, timezone: str = "UTC", tag: str | None = None) -> int:
    phone = str(next(_phones))
    values = {
        "phone": phone,
        "operator_code": phone[1:4],
        "tag": tag,
        "timezone": timezone,
        "created_at": NOW,
        "updated_at": NOW,
    }
    return await insert_row(db, customers, values)


async def insert_message(
    db: AsyncEngine,
    mailout_id: int,
    status: MessageStatus = MessageStatus.PENDING,
    *,
    customer_id: int | None = None,
    sent_at: datetime | None = None,
    attempts: int = 0,
) -> int:
    if customer_id is None:
        customer_id = await insert_customer(db)
    values = {
        "mailout_id": mailout_id,
        "customer_id": customer_id,
        "phone": "79990000000",
        "timezone": "UTC",
        "status": status,
        "attempts": attempts,
        "next_attempt_at": NOW if status is MessageStatus.PENDING else None,
        "sent_at": sent_at,
        "created_at": NOW,
        "updated_at": NOW,
    }
    return await insert_row(db, messages, values)


async def insert_attempt(
    db: AsyncEngine,
    message_id: int,
    mailout_id: int,
    outcome: Outcome,
    started_at: datetime = NOW,
    *,
    http_status: int | None = None,
    error: str | None = None,
) -> None:
    values = {
        "message_id": message_id,
        "mailout_id": mailout_id,
        "started_at": started_at,
        "duration_ms": 12.5,
        "outcome": outcome,
        "http_status": http_status,
        "error": error,
    }
    async with db.begin() as conn:
        await conn.execute(insert(message_attempts).values(values))


async def count_rows(db: AsyncEngine, table: Any, *where: Any) -> int:
    async with db.connect() as conn:
        return int(await conn.scalar(select(func.count()).select_from(table).where(*where)) or 0)


@pytest.fixture
async def recorded(aiohttp_client: AiohttpClient, settings: Settings) -> tuple[Api, RecordingEngine]:
    """An authorised client whose app has a RecordingEngine for its engine."""
    app: web.Application = create_app(settings, with_engine=False)
    engine = RecordingEngine()
    app[keys.ENGINE] = engine
    client: TestClient[Any, Any] = await aiohttp_client(app)
    resp = await client.post("/auth/token", data={"username": "admin", "password": ADMIN_PASSWORD})
    token = (await resp.json())["access_token"]
    return Api(client, token), engine


# ---------------------------------------------------------------- create


async def test_create_answers_the_mailout_and_wakes_the_engine(recorded: tuple[Api, RecordingEngine]) -> None:
    api, engine = recorded
    before = datetime.now(UTC)
    body = await create_mailout(
        api,
        start_at="2030-01-31T09:00:00+03:00",
        end_at="2030-01-31T21:00:00+03:00",
        filter={"operator_codes": ["916", "912", "916"], "tags": ["b", "a", "b"]},
        send_window={"start": "22:00:00", "end": "06:30:15"},
    )
    assert set(body) == {
        "id",
        "start_at",
        "end_at",
        "text",
        "filter",
        "send_window",
        "status",
        "created_at",
        "updated_at",
    }
    assert body["start_at"] == "2030-01-31T06:00:00Z"
    assert body["end_at"] == "2030-01-31T18:00:00Z"
    assert body["filter"] == {"operator_codes": ["916", "912"], "tags": ["b", "a"]}
    assert body["send_window"] == {"start": "22:00", "end": "06:30:15"}
    assert body["status"] == "scheduled"
    assert datetime.fromisoformat(body["created_at"]) >= before
    assert body["created_at"] == body["updated_at"]
    assert engine.take() == [("changed", body["id"])]

    async with api.db.connect() as conn:
        row = (await conn.execute(select(mailouts).where(mailouts.c.id == body["id"]))).mappings().one()
    assert (row["window_start_s"], row["window_end_s"]) == (22 * 3600, 6 * 3600 + 30 * 60 + 15)

    resp = await api.get(f"/api/mailouts/{body['id']}")
    assert resp.status == 200
    assert await resp.json() == body


async def test_create_defaults(api: Api) -> None:
    body = await create_mailout(api)
    assert body["filter"] == {"operator_codes": [], "tags": []}
    assert body["send_window"] is None
    body = await create_mailout(api, filter=None, send_window=None)
    assert body["filter"] == {"operator_codes": [], "tags": []}
    assert body["send_window"] is None
    # An empty window is not "no window": a client sending it would silently get any time of day.
    resp = await api.post("/api/mailouts/", json=mailout_body(send_window={}))
    assert resp.status == 422
    assert (await resp.json())["errors"][0]["loc"] == ["body", "send_window"]


async def test_a_mailout_that_already_ended_is_accepted(api: Api) -> None:
    body = await create_mailout(
        api, start_at=iso(NOW - timedelta(days=2)), end_at=iso(NOW - timedelta(days=1))
    )
    assert body["status"] == "scheduled"


BAD_BODIES: list[tuple[str, dict[str, Any], list[str | int]]] = [
    ("naive start", mailout_body(start_at="2030-01-01T09:00:00"), ["body", "start_at"]),
    ("naive end", mailout_body(end_at="2030-01-01T09:00:00"), ["body", "end_at"]),
    ("number as time", mailout_body(start_at=1893456000), ["body", "start_at"]),
    ("start == end", mailout_body(end_at=iso(START)), ["body", "end_at"]),
    ("start > end", mailout_body(end_at=iso(START - timedelta(seconds=1))), ["body", "end_at"]),
    ("empty text", mailout_body(text=""), ["body", "text"]),
    ("long text", mailout_body(text="x" * 10_001), ["body", "text"]),
    ("no text", {"start_at": iso(START), "end_at": iso(END)}, ["body", "text"]),
    ("short code", mailout_body(filter={"operator_codes": ["12"]}), ["body", "filter", "operator_codes", 0]),
    ("letters", mailout_body(filter={"operator_codes": ["91a"]}), ["body", "filter", "operator_codes", 0]),
    ("int code", mailout_body(filter={"operator_codes": [912]}), ["body", "filter", "operator_codes", 0]),
    (
        "many codes",
        mailout_body(filter={"operator_codes": ["912"] * 1001}),
        ["body", "filter", "operator_codes"],
    ),
    ("empty tag", mailout_body(filter={"tags": [""]}), ["body", "filter", "tags", 0]),
    ("long tag", mailout_body(filter={"tags": ["x" * 65]}), ["body", "filter", "tags", 0]),
    ("unknown filter key", mailout_body(filter={"codes": []}), ["body", "filter", "codes"]),
    (
        "empty window",
        mailout_body(send_window={"start": "09:00", "end": "09:00:00"}),
        ["body", "send_window"],
    ),
    (
        "bad hour",
        mailout_body(send_window={"start": "24:00", "end": "09:00"}),
        ["body", "send_window", "start"],
    ),
    (
        "one digit",
        mailout_body(send_window={"start": "9:00", "end": "10:00"}),
        ["body", "send_window", "start"],
    ),
    ("no end", mailout_body(send_window={"start": "09:00"}), ["body", "send_window", "end"]),
    ("unknown field", mailout_body(colour="red"), ["body", "colour"]),
    ("NUL in text", mailout_body(text="a\x00b"), ["body", "text"]),
    ("lone surrogate", mailout_body(text="a\ud800"), ["body", "text"]),
    ("NUL in tag", mailout_body(filter={"tags": ["\x00"]}), ["body", "filter", "tags", 0]),
]


@pytest.mark.parametrize(("case", "body", "loc"), BAD_BODIES, ids=[c[0] for c in BAD_BODIES])
async def test_create_refuses_bad_input(
    recorded: tuple[Api, RecordingEngine], case: str, body: dict[str, Any], loc: list[str | int]
) -> None:
    api, engine = recorded
    resp = await api.post("/api/mailouts/", json=body)
    assert resp.status == 422, case
    assert resp.content_type == "application/problem+json"
    problem = await resp.json()
    assert loc in [e["loc"] for e in problem["errors"]], problem
    assert await count_rows(api.db, mailouts) == 0
    assert engine.calls == []


async def test_malformed_json_is_400(api: Api) -> None:
    resp = await api.post("/api/mailouts/", data="{not json", headers={"Content-Type": "application/json"})
    assert resp.status == 400
    assert resp.content_type == "application/problem+json"
    resp = await api.post("/api/mailouts/", json=[1, 2])
    assert resp.status == 400
    assert await count_rows(api.db, mailouts) == 0


# ---------------------------------------------------------------- read and list


@pytest.mark.parametrize(
    "path", ["/api/mailouts/999", f"/api/mailouts/{2**63}", "/api/mailouts/0", "/api/mailouts/x"]
)
async def test_unknown_ids_are_404(api: Api, path: str) -> None:
    for method in ("GET", "PUT", "PATCH", "DELETE"):
        resp = await api.request(method, path, json=mailout_body() if method in ("PUT", "PATCH") else None)
        assert resp.status == 404, (method, path)
        assert resp.content_type == "application/problem+json"
    for action in ("cancel", "pause", "resume"):
        resp = await api.post(f"{path}/{action}")
        assert resp.status == 404, (action, path)


async def test_list_pages_by_id_and_filters_by_status(api: Api) -> None:
    ids = [(await create_mailout(api, text=f"m{i}"))["id"] for i in range(5)]
    await set_status(api.db, ids[1], MailoutStatus.RUNNING)
    await set_status(api.db, ids[3], MailoutStatus.RUNNING)

    resp = await api.get("/api/mailouts/")
    page = await resp.json()
    assert [m["id"] for m in page["items"]] == ids
    assert page["next_after"] is None

    seen: list[int] = []
    after = 0
    while True:
        page = await (await api.get("/api/mailouts/", params={"limit": 2, "after": after})).json()
        seen += [m["id"] for m in page["items"]]
        if page["next_after"] is None:
            break
        after = page["next_after"]
    assert seen == ids

    page = await (await api.get("/api/mailouts/", params={"status": "running"})).json()
    assert [m["id"] for m in page["items"]] == [ids[1], ids[3]]
    page = await (await api.get("/api/mailouts/", params={"status": "running", "limit": 1})).json()
    assert [m["id"] for m in page["items"]] == [ids[1]]
    assert page["next_after"] == ids[1]


@pytest.mark.parametrize(
    ("params", "loc"),
    [
        ({"status": "done"}, ["query", "status"]),
        ({"limit": "0"}, ["query", "limit"]),
        ({"limit": "1001"}, ["query", "limit"]),
        ({"limit": "x"}, ["query", "limit"]),
        ({"after": "-1"}, ["query", "after"]),
        ({"after": str(2**64)}, ["query", "after"]),
    ],
)
async def test_bad_list_queries_are_422(api: Api, params: dict[str, str], loc: list[str]) -> None:
    resp = await api.get("/api/mailouts/", params=params)
    assert resp.status == 422
    assert [e["loc"] for e in (await resp.json())["errors"]] == [loc]


# ---------------------------------------------------------------- change


async def test_put_replaces_a_scheduled_mailout(recorded: tuple[Api, RecordingEngine]) -> None:
    api, engine = recorded
    created = await create_mailout(
        api, filter={"tags": ["vip"]}, send_window={"start": "09:00", "end": "18:00"}
    )
    engine.take()
    new_start = START + timedelta(hours=1)
    resp = await api.put(
        f"/api/mailouts/{created['id']}",
        json={"start_at": iso(new_start), "end_at": iso(END), "text": "replaced"},
    )
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["start_at"] == z(new_start)
    assert body["text"] == "replaced"
    assert body["filter"] == {"operator_codes": [], "tags": []}
    assert body["send_window"] is None
    assert body["created_at"] == created["created_at"]
    assert body["updated_at"] >= created["updated_at"]
    assert engine.take() == [("changed", created["id"])]


async def test_patch_changes_only_given_fields(recorded: tuple[Api, RecordingEngine]) -> None:
    api, engine = recorded
    created = await create_mailout(
        api,
        filter={"operator_codes": ["912"], "tags": ["vip"]},
        send_window={"start": "09:00", "end": "18:00"},
    )
    engine.take()
    path = f"/api/mailouts/{created['id']}"

    body = await (await api.patch(path, json={"text": "patched"})).json()
    assert body["text"] == "patched"
    assert {k: v for k, v in body.items() if k not in ("text", "updated_at")} == {
        k: v for k, v in created.items() if k not in ("text", "updated_at")
    }
    body = await (await api.patch(path, json={"filter": {"tags": ["new"]}})).json()
    assert body["filter"] == {"operator_codes": [], "tags": ["new"]}, "filter is replaced as a whole"
    body = await (await api.patch(path, json={"filter": None, "send_window": None})).json()
    assert body["filter"] == {"operator_codes": [], "tags": []}
    assert body["send_window"] is None
    body = await (
        await api.patch(path, json={"filter": {}, "send_window": {"start": "20:00", "end": "08:00"}})
    ).json()
    assert body["send_window"] == {"start": "20:00", "end": "08:00"}
    assert (await api.patch(path, json={"send_window": {}})).status == 422
    body = await (await api.patch(path, json={"send_window": None})).json()
    assert body["send_window"] is None
    assert engine.take() == [("changed", created["id"])] * 5

    # Nothing different: nothing written, nobody woken.
    resp = await api.patch(path, json={})
    assert resp.status == 200
    assert await resp.json() == body
    assert engine.take() == []


@pytest.mark.parametrize(
    ("patch", "loc"),
    [
        ({"text": None}, ["body", "text"]),
        ({"start_at": None}, ["body", "start_at"]),
        ({"end_at": "2030-01-01T00:00:00"}, ["body", "end_at"]),
        ({"send_window": {"start": "10:00", "end": "10:00"}}, ["body", "send_window"]),
        ({"status": "running"}, ["body", "status"]),
        ({"end_at": iso(START)}, ["body", "end_at"]),
        ({"start_at": iso(END + timedelta(days=1))}, ["body", "end_at"]),
        (
            {"start_at": iso(START + timedelta(hours=2)), "end_at": iso(START + timedelta(hours=1))},
            ["body", "end_at"],
        ),
    ],
)
async def test_bad_patches_are_422_and_change_nothing(
    recorded: tuple[Api, RecordingEngine], patch: dict[str, Any], loc: list[str]
) -> None:
    api, engine = recorded
    created = await create_mailout(api)
    engine.take()
    resp = await api.patch(f"/api/mailouts/{created['id']}", json=patch)
    assert resp.status == 422
    assert loc in [e["loc"] for e in (await resp.json())["errors"]]
    assert await (await api.get(f"/api/mailouts/{created['id']}")).json() == created
    assert engine.calls == []


@pytest.mark.parametrize("status", [MailoutStatus.RUNNING, MailoutStatus.PAUSED])
async def test_an_active_mailout_changes_only_what_is_ahead(
    recorded: tuple[Api, RecordingEngine], status: MailoutStatus
) -> None:
    api, engine = recorded
    created = await create_mailout(api, filter={"operator_codes": ["912", "916"]})
    await set_status(api.db, created["id"], status)
    engine.take()
    path = f"/api/mailouts/{created['id']}"

    new_end = END + timedelta(hours=1)
    resp = await api.patch(
        path,
        json={"text": "later", "end_at": iso(new_end), "send_window": {"start": "10:00", "end": "12:00"}},
    )
    assert resp.status == 200
    body = await resp.json()
    assert (body["text"], body["end_at"], body["status"]) == ("later", z(new_end), status)
    assert engine.take() == [("changed", created["id"])]

    for patch in (
        {"filter": {"operator_codes": ["912"]}},
        {"filter": None},
        {"start_at": iso(START + timedelta(minutes=5))},
        {"text": "x", "start_at": iso(START - timedelta(minutes=5))},
    ):
        resp = await api.patch(path, json=patch)
        assert resp.status == 409, patch
        assert resp.content_type == "application/problem+json"

    # A PUT may repeat the filter (in any order) and the start.
    resp = await api.put(
        path,
        json={
            "start_at": created["start_at"],
            "end_at": iso(new_end),
            "text": "put",
            "filter": {"operator_codes": ["916", "912"]},
        },
    )
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["text"] == "put"
    resp = await api.put(path, json={"start_at": created["start_at"], "end_at": iso(new_end), "text": "put"})
    assert resp.status == 409, "omitting the filter in a PUT removes it"
    after = await (await api.get(path)).json()
    assert after["text"] == "put"
    assert after["filter"] == {"operator_codes": ["916", "912"], "tags": []}
    assert engine.take() == [("changed", created["id"])]


@pytest.mark.parametrize("status", [MailoutStatus.FINISHED, MailoutStatus.CANCELLED])
async def test_a_final_mailout_cannot_change(
    recorded: tuple[Api, RecordingEngine], status: MailoutStatus
) -> None:
    api, engine = recorded
    created = await create_mailout(api)
    await set_status(api.db, created["id"], status)
    engine.take()
    path = f"/api/mailouts/{created['id']}"
    for patch in (
        {"text": "x"},
        {"end_at": iso(END + timedelta(hours=1))},
        {"send_window": {"start": "01:00", "end": "02:00"}},
    ):
        resp = await api.patch(path, json=patch)
        assert resp.status == 409, patch
    resp = await api.put(path, json=mailout_body(text="other"))
    assert resp.status == 409
    assert (await api.patch(path, json={})).status == 200
    assert engine.calls == []


# ---------------------------------------------------------------- lifecycle


async def test_pause_and_resume_a_scheduled_mailout(recorded: tuple[Api, RecordingEngine]) -> None:
    api, engine = recorded
    mailout_id = (await create_mailout(api))["id"]
    engine.take()
    base = f"/api/mailouts/{mailout_id}"

    resp = await api.post(f"{base}/resume")
    assert (resp.status, (await resp.json())["status"]) == (200, "scheduled")
    assert engine.take() == []

    resp = await api.post(f"{base}/pause")
    assert (resp.status, (await resp.json())["status"]) == (200, "paused")
    assert engine.take() == [("changed", mailout_id)]
    resp = await api.post(f"{base}/pause")
    assert (resp.status, (await resp.json())["status"]) == (200, "paused")
    assert engine.take() == []

    resp = await api.post(f"{base}/resume")
    assert (resp.status, (await resp.json())["status"]) == (200, "scheduled"), "it never started"
    assert engine.take() == [("changed", mailout_id)]


async def test_pause_and_resume_a_running_mailout(recorded: tuple[Api, RecordingEngine]) -> None:
    api, engine = recorded
    mailout_id = (await create_mailout(api))["id"]
    await set_status(api.db, mailout_id, MailoutStatus.RUNNING)
    engine.take()
    base = f"/api/mailouts/{mailout_id}"

    assert (await (await api.post(f"{base}/pause")).json())["status"] == "paused"
    assert (await (await api.post(f"{base}/resume")).json())["status"] == "running"
    assert (await (await api.post(f"{base}/resume")).json())["status"] == "running"
    assert engine.take() == [("changed", mailout_id)] * 2


@pytest.mark.parametrize("status", [MailoutStatus.FINISHED, MailoutStatus.CANCELLED])
async def test_final_mailouts_cannot_pause_or_resume(
    recorded: tuple[Api, RecordingEngine], status: MailoutStatus
) -> None:
    api, engine = recorded
    mailout_id = (await create_mailout(api))["id"]
    await set_status(api.db, mailout_id, status)
    engine.take()
    for action in ("pause", "resume"):
        resp = await api.post(f"/api/mailouts/{mailout_id}/{action}")
        assert resp.status == 409
        assert resp.content_type == "application/problem+json"
    assert engine.calls == []


@pytest.mark.parametrize("status", [MailoutStatus.SCHEDULED, MailoutStatus.RUNNING, MailoutStatus.PAUSED])
async def test_cancel_stops_sending_and_cancels_pending_messages(
    recorded: tuple[Api, RecordingEngine], status: MailoutStatus
) -> None:
    api, engine = recorded
    mailout_id = (await create_mailout(api))["id"]
    other_id = (await create_mailout(api))["id"]
    await set_status(api.db, mailout_id, status)
    kept = {
        s: await insert_message(api.db, mailout_id, s)
        for s in MessageStatus
        if s is not MessageStatus.PENDING
    }
    pending = [await insert_message(api.db, mailout_id) for _ in range(3)]
    other_pending = await insert_message(api.db, other_id)
    engine.take()

    resp = await api.post(f"/api/mailouts/{mailout_id}/cancel")
    assert resp.status == 200
    assert (await resp.json())["status"] == "cancelled"
    assert engine.take() == [("stop", mailout_id), ("changed", mailout_id)]

    async with api.db.connect() as conn:
        rows = {i: s for i, s in await conn.execute(select(messages.c.id, messages.c.status))}
    assert all(rows[i] == "cancelled" for i in pending)
    assert {s: rows[i] for s, i in kept.items()} == {s: s.value for s in kept}, "only pending messages change"
    assert rows[other_pending] == "pending"

    resp = await api.post(f"/api/mailouts/{mailout_id}/cancel")
    assert resp.status == 200
    assert (await resp.json())["status"] == "cancelled"
    assert engine.take() == [("stop", mailout_id)]


async def test_a_finished_mailout_cannot_be_cancelled(recorded: tuple[Api, RecordingEngine]) -> None:
    api, engine = recorded
    mailout_id = (await create_mailout(api))["id"]
    await set_status(api.db, mailout_id, MailoutStatus.FINISHED)
    message_id = await insert_message(api.db, mailout_id)
    engine.take()
    resp = await api.post(f"/api/mailouts/{mailout_id}/cancel")
    assert resp.status == 409
    assert engine.calls == []
    assert (
        await count_rows(api.db, messages, messages.c.id == message_id, messages.c.status == "pending") == 1
    )


async def test_full_lifecycle(recorded: tuple[Api, RecordingEngine]) -> None:
    api, engine = recorded
    created = await create_mailout(api)
    mailout_id = created["id"]
    base = f"/api/mailouts/{mailout_id}"
    await set_status(api.db, mailout_id, MailoutStatus.RUNNING)
    sent = await insert_message(api.db, mailout_id, MessageStatus.SENT, sent_at=NOW)
    waiting = await insert_message(api.db, mailout_id)
    assert (await (await api.post(f"{base}/pause")).json())["status"] == "paused"
    assert (await (await api.patch(base, json={"text": "changed while paused"})).json())["status"] == "paused"
    assert (await (await api.post(f"{base}/resume")).json())["status"] == "running"
    assert (await (await api.post(f"{base}/cancel")).json())["status"] == "cancelled"
    assert (await api.post(f"{base}/resume")).status == 409
    assert (await api.patch(base, json={"text": "too late"})).status == 409
    final = await (await api.get(base)).json()
    assert (final["status"], final["text"]) == ("cancelled", "changed while paused")
    async with api.db.connect() as conn:
        rows = {i: s for i, s in await conn.execute(select(messages.c.id, messages.c.status))}
    assert rows == {sent: "sent", waiting: "cancelled"}
    assert engine.take() == [("changed", mailout_id)] * 4 + [("stop", mailout_id), ("changed", mailout_id)]


# ---------------------------------------------------------------- delete


async def test_delete_stops_sending_then_removes_everything(recorded: tuple[Api, RecordingEngine]) -> None:
    api, engine = recorded
    mailout_id = (await create_mailout(api))["id"]
    other_id = (await create_mailout(api))["id"]
    await set_status(api.db, mailout_id, MailoutStatus.RUNNING)
    message_id = await insert_message(api.db, mailout_id, MessageStatus.SENT, sent_at=NOW)
    await insert_attempt(api.db, message_id, mailout_id, Outcome.SENT, http_status=200)
    other_message = await insert_message(api.db, other_id)
    engine.take()

    resp = await api.delete(f"/api/mailouts/{mailout_id}")
    assert resp.status == 204
    assert engine.take() == [("stop", mailout_id), ("changed", mailout_id)]
    assert (await api.get(f"/api/mailouts/{mailout_id}")).status == 404
    assert await count_rows(api.db, messages) == 1
    assert await count_rows(api.db, messages, messages.c.id == other_message) == 1
    assert await count_rows(api.db, message_attempts) == 0
    assert await count_rows(api.db, customers) == 2, "customers stay"

    resp = await api.delete(f"/api/mailouts/{mailout_id}")
    assert resp.status == 404
    assert engine.calls == [], "nothing to stop for an unknown mailout"


# ---------------------------------------------------------------- routes


async def test_fixed_paths_are_not_ids(api: Api) -> None:
    for path in ("/api/mailouts/stats", "/api/mailouts/status/stats"):
        resp = await api.get(path)
        assert resp.status == 200, path
        assert await resp.json() == {"items": [], "next_after": None}
    assert (await api.delete("/api/mailouts/stats")).status == 405
