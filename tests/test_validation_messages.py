"""Bad input says what is expected, with an example; datetimes are RFC 3339 text with an offset, inside the
range every time zone can represent (POST, PUT and PATCH, on both databases)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from mailer.schemas.common import EARLIEST, LATEST, RFC3339_PATTERN, parse_rfc3339
from mailer.store.tables import mailouts
from tests.conftest import Api

NOW = datetime.now(UTC)
START = (NOW + timedelta(days=1)).isoformat()
END = (NOW + timedelta(days=2)).isoformat()
# An example in a message: "such as …" or "like …".
EXAMPLE = re.compile(r"\b(such as|like)\b")

OVERFLOWING = [
    ("start_at", "0001-01-01T00:00:00+14:00"),
    ("end_at", "9999-12-31T23:59:59.999999-14:00"),
]
NOT_RFC3339: list[Any] = [
    "0",
    "1900000000",
    1900000000,
    0,
    1.5,
    True,
    "2026-12-01T09:00:00",
    "2026-12-01",
    "",
]


def body(**overrides: Any) -> dict[str, Any]:
    return {"start_at": START, "end_at": END, "text": "hello", **overrides}


async def _mailout_count(api: Api) -> int:
    async with api.db.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(mailouts))).scalar_one())


def _errors(problem: dict[str, Any]) -> dict[tuple[str | int, ...], str]:
    return {tuple(e["loc"]): e["msg"] for e in problem["errors"]}


# --- pure ------------------------------------------------------------------------------------------------


def test_rfc3339_parsing_accepts_offsets_and_refuses_everything_else() -> None:
    assert parse_rfc3339("2026-12-01T09:00:00+03:00") == datetime(2026, 12, 1, 6, tzinfo=UTC)
    assert parse_rfc3339("2026-12-01t06:00:00.25z") == datetime(2026, 12, 1, 6, 0, 0, 250000, tzinfo=UTC)
    assert parse_rfc3339(EARLIEST.isoformat()) == EARLIEST
    assert parse_rfc3339(LATEST.isoformat()) == LATEST
    for bad in [*NOT_RFC3339, "2026-02-30T00:00:00Z", "2026-12-01T09:00+03:00", *(v for _, v in OVERFLOWING)]:
        with pytest.raises(ValueError, match=EXAMPLE.pattern + "|between"):
            parse_rfc3339(bad)


def test_the_documented_pattern_is_the_one_the_server_uses() -> None:
    pattern = re.compile(RFC3339_PATTERN)
    for good in ("2026-12-01T09:00:00+03:00", "0001-01-02T00:00:00Z", "2026-12-01t09:00:00.123456789z"):
        assert pattern.fullmatch(good), good
    for bad in ("0000-01-01T00:00:00Z", "2026-13-01T00:00:00Z", "2026-12-01T24:00:00Z", "1900000000"):
        assert not pattern.fullmatch(bad), bad


# --- over HTTP, both databases ---------------------------------------------------------------------------


@pytest.mark.parametrize(("field", "value"), OVERFLOWING)
async def test_datetimes_that_overflow_in_utc_are_422_on_post_put_and_patch(
    api: Api, field: str, value: str
) -> None:
    created = await (await api.post("/api/mailouts/", json=body())).json()
    path = f"/api/mailouts/{created['id']}"
    for method, path_, payload in (
        ("POST", "/api/mailouts/", body(**{field: value})),
        ("PUT", path, body(**{field: value})),
        ("PATCH", path, {field: value}),
    ):
        resp = await api.request(method, path_, json=payload)
        assert resp.status == 422, (method, await resp.text())
        msg = _errors(await resp.json())[("body", field)]
        assert "between 0001-01-02T00:00:00Z and 9999-12-30T23:59:59Z" in msg
    assert await _mailout_count(api) == 1
    unchanged = await (await api.get(path)).json()
    assert unchanged["start_at"] == created["start_at"]
    assert unchanged["end_at"] == created["end_at"]


@pytest.mark.parametrize("value", NOT_RFC3339, ids=repr)
async def test_datetimes_are_rfc3339_text_with_an_offset(api: Api, value: Any) -> None:
    resp = await api.post("/api/mailouts/", json=body(start_at=value))
    assert resp.status == 422
    msg = _errors(await resp.json())[("body", "start_at")]
    assert msg == "must be an RFC 3339 date-time with an offset, such as 2026-12-01T09:00:00+03:00"
    assert await _mailout_count(api) == 0


async def test_the_widest_accepted_range_is_stored_and_read_back(api: Api) -> None:
    resp = await api.post(
        "/api/mailouts/", json=body(start_at="0001-01-02T00:00:00Z", end_at=LATEST.isoformat())
    )
    assert resp.status == 201, await resp.text()
    created = await resp.json()
    read = await (await api.get(f"/api/mailouts/{created['id']}")).json()
    assert read["start_at"] == "0001-01-02T00:00:00Z"
    assert read["end_at"] == "9999-12-30T23:59:59.999999Z"


@pytest.mark.parametrize(
    ("payload", "loc", "expected"),
    [
        ({"send_window": {"start": 9, "end": 21}}, ("body", "send_window", "start"), '"09:00"'),
        ({"send_window": {"start": "9:00", "end": "21:00"}}, ("body", "send_window", "start"), '"09:00"'),
        ({"send_window": {"start": "09:00", "end": "24:00"}}, ("body", "send_window", "end"), '"09:00"'),
        ({"send_window": {}}, ("body", "send_window"), '{"start": "09:00", "end": "21:00"}'),
        ({"send_window": "09:00-21:00"}, ("body", "send_window"), '{"start": "09:00", "end": "21:00"}'),
        ({"send_window": {"start": "09:00", "end": "09:00"}}, ("body", "send_window"), '"end": "09:00"'),
        ({"text": 42}, ("body", "text"), '"Our shop is open late tonight"'),
        ({"text": ""}, ("body", "text"), '"Our shop is open late tonight"'),
        ({"filter": {"tags": [7]}}, ("body", "filter", "tags", 0), '"vip"'),
        ({"filter": {"tags": "vip"}}, ("body", "filter", "tags"), '["vip"]'),
        ({"filter": {"operator_codes": ["12"]}}, ("body", "filter", "operator_codes", 0), "900"),
        ({"filter": {"operator_codes": 912}}, ("body", "filter", "operator_codes"), '["912", "916"]'),
    ],
)
async def test_mailout_messages_say_what_is_expected(
    api: Api, payload: dict[str, Any], loc: tuple[str | int, ...], expected: str
) -> None:
    resp = await api.post("/api/mailouts/", json=body(**payload))
    assert resp.status == 422, await resp.text()
    msg = _errors(await resp.json())[loc]
    assert EXAMPLE.search(msg), msg
    assert expected in msg, msg


async def test_patch_null_says_to_leave_the_field_out(api: Api) -> None:
    created = await (await api.post("/api/mailouts/", json=body())).json()
    resp = await api.patch(f"/api/mailouts/{created['id']}", json={"start_at": None})
    assert resp.status == 422
    assert "leave the field out" in _errors(await resp.json())[("body", "start_at")]


@pytest.mark.parametrize(
    ("payload", "loc"),
    [
        ({"phone": "8900"}, ("body", "phone")),
        ({"phone": "79001234567", "operator_code": "9"}, ("body", "operator_code")),
        ({"phone": "79001234567", "timezone": "Mars/Olympus"}, ("body", "timezone")),
    ],
)
async def test_customer_messages_say_what_is_expected(
    api: Api, payload: dict[str, Any], loc: tuple[str, ...]
) -> None:
    resp = await api.post("/api/customers/", json=payload)
    assert resp.status == 422
    assert EXAMPLE.search(_errors(await resp.json())[loc])


async def test_an_integral_float_phone_is_the_integer_json_schema_says_it_is(api: Api) -> None:
    resp = await api.post("/api/customers/", json={"phone": 79001234567.0})
    assert resp.status == 201
    assert (await resp.json())["phone"] == "79001234567"


async def test_an_empty_phone_filter_is_422_as_the_document_says(api: Api) -> None:
    resp = await api.get("/api/customers/", params={"phone": ""})
    assert resp.status == 422
    assert EXAMPLE.search(_errors(await resp.json())[("query", "phone")])
