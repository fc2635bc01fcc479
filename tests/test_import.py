"""Bulk import of customers from NDJSON and CSV streams."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import func, select

from mailer.api.imports import BATCH_ROWS, MAX_LINE_BYTES, MAX_LISTED_ERRORS
from mailer.app import create_app
from mailer.operations.pacing import paced
from mailer.settings import Settings
from mailer.store.tables import customers
from tests.conftest import ADMIN_PASSWORD, AiohttpClient, Api

URL = "/api/customers/import"
NDJSON = {"Content-Type": "application/x-ndjson"}
CSV = {"Content-Type": "text/csv"}


def ndjson(*records: object) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in records)


async def run_import(api: Api, body: bytes, headers: dict[str, str] = NDJSON) -> dict[str, Any]:
    resp = await api.post(URL, data=body, headers=headers)
    assert resp.status == 200, await resp.text()
    result = dict(await resp.json())
    assert result["created"] + result["updated"] + result["failed"] == result["lines"]
    return result


async def stored(api: Api) -> dict[str, dict[str, Any]]:
    async with api.db.connect() as conn:
        rows = (await conn.execute(select(customers).order_by(customers.c.id))).all()
    return {r.phone: dict(r._mapping) for r in rows}


async def count(api: Api) -> int:
    async with api.db.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(customers))).scalar_one())


async def test_ndjson_mixed_lines(api: Api) -> None:
    body = (
        ndjson(
            {"phone": "79001111111", "tag": "vip", "timezone": "Europe/Moscow"},
            {"phone": 79162222222},
            {"phone": "89001111111"},
            {"phone": "79003333333", "operator_code": "12", "tag": "x" * 65},
        )
        + b"{not json\n"
        + b"\n   \n"  # blank lines are skipped, not counted
        + b'["79004444444"]\n'
        + ndjson({"phone": "79005555555", "colour": "red"}, {"phone": "79006666666", "operator_code": "321"})
    )
    result = await run_import(api, body)
    assert (result["created"], result["updated"], result["failed"], result["lines"]) == (3, 0, 5, 8)
    assert result["errors_truncated"] is False
    assert result["errors"] == [
        {
            "line": 3,
            "errors": [
                {
                    "loc": ["phone"],
                    "msg": "must be 7 followed by ten digits, like 79001234567 (a string or an integer)",
                }
            ],
        },
        {
            "line": 4,
            "errors": [
                {"loc": ["operator_code"], "msg": "must be three digits, like 900"},
                {"loc": ["tag"], "msg": "must be at most 64 characters long"},
            ],
        },
        {
            "line": 5,
            "errors": [{"loc": [], "msg": "not valid JSON: key must be a string at line 1 column 2"}],
        },
        {"line": 8, "errors": [{"loc": [], "msg": "must be a JSON object"}]},
        {"line": 9, "errors": [{"loc": ["colour"], "msg": "Extra inputs are not permitted"}]},
    ]
    rows = await stored(api)
    assert set(rows) == {"79001111111", "79162222222", "79006666666"}
    assert (rows["79001111111"]["operator_code"], rows["79001111111"]["tag"]) == ("900", "vip")
    assert rows["79001111111"]["timezone"] == "Europe/Moscow"
    assert (rows["79162222222"]["operator_code"], rows["79162222222"]["timezone"]) == ("916", "UTC")
    assert rows["79006666666"]["operator_code"] == "321"


async def test_upsert_updates_known_phones_and_counts(api: Api) -> None:
    resp = await api.post(
        "/api/customers/", json={"phone": "79001111111", "tag": "old", "timezone": "Asia/Tokyo"}
    )
    existing = await resp.json()
    body = ndjson(
        {"phone": "79001111111", "operator_code": "555", "tag": "new"},
        {"phone": "79002222222", "tag": "first"},
        {"phone": "79002222222", "tag": "second"},  # same body, same batch: the last line wins
    )
    result = await run_import(api, body, {"Content-Type": "application/jsonl"})
    assert (result["created"], result["updated"], result["failed"]) == (1, 2, 0)

    rows = await stored(api)
    assert len(rows) == 2
    updated = rows["79001111111"]
    assert updated["id"] == existing["id"]
    assert (updated["operator_code"], updated["tag"], updated["timezone"]) == ("555", "new", "UTC")
    assert updated["updated_at"] > updated["created_at"]
    assert rows["79002222222"]["tag"] == "second"

    again = await run_import(api, body, {"Content-Type": "application/json-lines; charset=utf-8"})
    assert (again["created"], again["updated"]) == (0, 3)
    assert await count(api) == 2


async def test_last_line_wins_across_batches(api: Api) -> None:
    lines = [{"phone": str(79000000000 + i), "tag": "a"} for i in range(BATCH_ROWS)]
    lines.append({"phone": "79000000000", "tag": "b"})
    result = await run_import(api, ndjson(*lines))
    assert (result["created"], result["updated"]) == (BATCH_ROWS, 1)
    assert (await stored(api))["79000000000"]["tag"] == "b"


async def test_csv_with_free_column_order_and_empty_cells(api: Api) -> None:
    body = (
        b"\xef\xbb\xbftag,timezone,phone,operator_code\r\n"  # a BOM and CRLF, as spreadsheets write them
        b"vip,Europe/Moscow,79001111111,\r\n"
        b",,79162222222,123\r\n"
        b'"quoted, tag",,79003333333,\r\n'
        b"x,Mars/Base,79004444444,\r\n"
        b"only,two\r\n"
        b",,,\r\n"
        b"y,UTC,79005555555,99\r\n"
    )
    result = await run_import(api, body, {"Content-Type": "text/csv; charset=UTF-8"})
    assert (result["created"], result["updated"], result["failed"], result["lines"]) == (3, 0, 4, 7)
    assert [(e["line"], [err["loc"] for err in e["errors"]]) for e in result["errors"]] == [
        (5, [["timezone"]]),
        (6, [[]]),
        (7, [["phone"]]),
        (8, [["operator_code"]]),
    ]
    assert result["errors"][1]["errors"][0]["msg"] == "expected 4 cells, found 2"
    rows = await stored(api)
    assert (rows["79001111111"]["tag"], rows["79001111111"]["operator_code"]) == ("vip", "900")
    assert rows["79001111111"]["timezone"] == "Europe/Moscow"
    assert (rows["79162222222"]["tag"], rows["79162222222"]["operator_code"]) == (None, "123")
    assert rows["79162222222"]["timezone"] == "UTC"
    assert rows["79003333333"]["tag"] == "quoted, tag"


async def test_csv_phone_only(api: Api) -> None:
    result = await run_import(api, b"phone\n79001111111\n79001111112\n", CSV)
    assert (result["created"], result["lines"]) == (2, 2)


@pytest.mark.parametrize(
    "header",
    [b"phone,name\n", b"tag,timezone\n", b"phone,phone\n", b"\xff\xfe,phone\n", b'"phone\n'],
)
async def test_csv_bad_header_refuses_the_import(api: Api, header: bytes) -> None:
    resp = await api.post(URL, data=header + b"79001111111,x\n", headers=CSV)
    assert resp.status == 422, await resp.text()
    assert resp.content_type == "application/problem+json"
    body = await resp.json()
    assert body["errors"][0]["loc"] == ["body", "header"]
    assert await count(api) == 0


async def test_bytes_that_are_not_text_fail_their_line_only(api: Api) -> None:
    body = b'{"phone": "79001111111", "tag": "\xff"}\n' + ndjson({"phone": "79002222222", "tag": "ok \u00e9"})
    body += b'{"phone": "79003333333", "tag": "\\u0000"}\n{"phone": 7' + b"0" * 5000 + b"}\n"
    body += b"[" * 5000 + b"]" * 5000 + b"\n"
    result = await run_import(api, body)
    assert (result["created"], result["failed"]) == (1, 4)
    found = [(e["line"], e["errors"][0]["loc"], e["errors"][0]["msg"]) for e in result["errors"]]
    assert found[:2] == [(1, [], "not valid UTF-8"), (3, ["tag"], "must not contain NUL characters")]
    assert [(line, loc) for line, loc, _ in found[2:]] == [(4, []), (5, [])]
    assert found[2][2].startswith("not valid JSON: number out of range")
    assert found[3][2].startswith("not valid JSON: recursion limit exceeded")
    assert (await stored(api))["79002222222"]["tag"] == "ok \u00e9"


async def test_overlong_line_fails_alone(api: Api) -> None:
    huge = b'{"phone": "79001111111", "tag": "' + b"x" * (MAX_LINE_BYTES * 3) + b'"}\n'
    body = ndjson({"phone": "79000000001"}) + huge + ndjson({"phone": "79000000002"})
    result = await run_import(api, body)
    assert (result["created"], result["failed"], result["lines"]) == (2, 1, 3)
    assert result["errors"][0]["line"] == 2
    assert "longer than" in result["errors"][0]["errors"][0]["msg"]


async def test_last_line_without_newline_counts(api: Api) -> None:
    result = await run_import(api, ndjson({"phone": "79000000001"}) + b'{"phone": "79000000002"}')
    assert result["created"] == 2


async def test_empty_body(api: Api) -> None:
    assert await run_import(api, b"") == {
        "created": 0,
        "updated": 0,
        "failed": 0,
        "lines": 0,
        "errors": [],
        "errors_truncated": False,
    }


async def test_error_list_is_capped(api: Api) -> None:
    bad = MAX_LISTED_ERRORS + 5
    body = ndjson(*([{"phone": "1"}] * bad), {"phone": "79001111111"})
    result = await run_import(api, body)
    assert (result["failed"], result["created"]) == (bad, 1)
    assert len(result["errors"]) == MAX_LISTED_ERRORS
    assert result["errors_truncated"] is True
    assert result["errors"][-1]["line"] == MAX_LISTED_ERRORS


async def test_many_bad_csv_lines_are_all_counted_and_the_first_listed(api: Api) -> None:
    """The shape of the import that froze the process (issue 13.3), at a test's size: every bad line is
    counted, only MAX_LISTED_ERRORS are described, and the good lines around them are written."""
    bad = 3 * MAX_LISTED_ERRORS
    body = b"phone,tag\n" + b"x,\n" * bad + b"79001111111,kept\n" + b"1,2,3\n" * 10
    result = await run_import(api, body, CSV)
    assert (result["failed"], result["created"], result["lines"]) == (bad + 10, 1, bad + 11)
    assert len(result["errors"]) == MAX_LISTED_ERRORS
    assert result["errors_truncated"] is True
    # Line numbers count the header: the first data line is line 2.
    assert [e["line"] for e in result["errors"][:2]] == [2, 3]
    assert (await stored(api))["79001111111"]["tag"] == "kept"


async def test_paced_cuts_chunks_and_keeps_every_byte() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b"a" * 10_000
        yield b""
        yield b"b" * 3

    sliced = [s async for s in paced(chunks(), slice_bytes=4096, slice_s=0.0)]
    assert [len(s) for s in sliced] == [4096, 4096, 1808, 3]
    assert b"".join(sliced) == b"a" * 10_000 + b"b" * 3


async def test_paced_gives_the_loop_a_turn_while_parsing() -> None:
    """With a slice time of zero every slice is preceded by a loop turn: another task runs in between."""
    turns = 0
    stop = asyncio.Event()

    async def other_task() -> None:
        nonlocal turns
        while not stop.is_set():
            turns += 1
            await asyncio.sleep(0)

    async def buffered() -> AsyncIterator[bytes]:
        yield b"x" * (64 * 1024)  # already there: reading it never waits

    task = asyncio.create_task(other_task())
    slices = 0
    async for _ in paced(buffered(), slice_bytes=1024, slice_s=0.0):
        slices += 1
    stop.set()
    await task
    assert slices == 64
    assert turns >= slices


@pytest.mark.parametrize(
    "content_type", ["application/json", "text/plain", "multipart/form-data", "text/csv; charset=latin-1"]
)
async def test_unknown_content_type_is_415(api: Api, content_type: str) -> None:
    resp = await api.post(URL, data=b"phone\n79001111111\n", headers={"Content-Type": content_type})
    assert resp.status == 415, await resp.text()
    assert resp.content_type == "application/problem+json"
    assert await count(api) == 0


async def test_import_needs_a_token(api: Api) -> None:
    resp = await api.client.post(URL, data=ndjson({"phone": "79001111111"}), headers=NDJSON)
    assert resp.status == 401
    assert await count(api) == 0


async def test_only_post(api: Api) -> None:
    resp = await api.get(URL)
    assert resp.status == 405


@pytest.fixture
async def small_api(aiohttp_client: AiohttpClient, settings_factory: Callable[..., Settings]) -> Api:
    """An API whose imports may be at most 1 KiB."""
    client: TestClient[Any, Any] = await aiohttp_client(
        create_app(settings_factory(import_max_bytes=1024), with_engine=False)
    )
    resp = await client.post("/auth/token", data={"username": "admin", "password": ADMIN_PASSWORD})
    return Api(client, (await resp.json())["access_token"])


async def test_body_over_the_limit_is_413_and_writes_nothing(small_api: Api) -> None:
    body = ndjson(*({"phone": str(79000000000 + i)} for i in range(60)))
    assert len(body) > 1024
    resp = await small_api.post(URL, data=body, headers=NDJSON)
    assert resp.status == 413, await resp.text()
    assert resp.content_type == "application/problem+json"
    assert await count(small_api) == 0

    fits = ndjson(*({"phone": str(79000000000 + i)} for i in range(20)))
    assert len(fits) <= 1024
    assert (await run_import(small_api, fits))["created"] == 20


async def test_chunked_body_over_the_limit_is_413(small_api: Api) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for i in range(60):
            yield ndjson({"phone": str(79000000000 + i)})

    resp = await small_api.post(URL, data=chunks(), headers=NDJSON)
    assert resp.status == 413, await resp.text()
    # Fewer lines than one batch arrived before the limit: none was written.
    assert await count(small_api) == 0


async def test_chunked_body_cut_at_the_limit_keeps_written_batches(
    small_api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("mailer.operations.imports.BATCH_ROWS", 5)

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(60):
            yield ndjson({"phone": str(79000000000 + i)})

    resp = await small_api.post(URL, data=chunks(), headers=NDJSON)
    assert resp.status == 413, await resp.text()
    # Whole batches that arrived before the limit are committed (documented); nothing after it.
    written = await count(small_api)
    assert written > 0
    assert written % 5 == 0
    assert written < 1024 // len(ndjson({"phone": "79000000000"}))


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_hundred_thousand_lines(api: Api) -> None:
    total = 100_000
    body = b"".join(
        b'{"phone": "%d", "tag": "t%d", "timezone": "Europe/Moscow"}\n' % (79000000000 + i, i % 7)
        for i in range(total)
    )
    # A file-like body streams in chunks (aiohttp warns about large raw bytes), as a real upload would.
    resp = await api.post(URL, data=io.BytesIO(body), headers=NDJSON)
    assert resp.status == 200, await resp.text()
    result = await resp.json()
    assert (result["created"], result["updated"], result["failed"], result["lines"]) == (total, 0, 0, total)
    assert await count(api) == total
    page = await (await api.get("/api/customers/", params={"tag": "t3", "limit": "1000"})).json()
    assert len(page["items"]) == 1000
    assert page["next_after"] is not None
