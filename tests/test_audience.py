"""`POST /api/audience/count` and the window arithmetic behind `in_window_now`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from mailer.domain.windows import SendWindow
from mailer.operations.audience import in_window
from tests.conftest import Api

URL = "/api/audience/count"
# 09:00 UTC: 18:00 in Tokyo (UTC+9), 04:00 in New York (UTC-5 in January), 12:00 in Moscow (UTC+3).
AT = datetime(2031, 1, 15, 9, 0, tzinfo=UTC)
BY_ZONE = {"Asia/Tokyo": 5, "America/New_York": 7, "Europe/Moscow": 11}


def test_no_window_is_everyone() -> None:
    assert in_window(BY_ZONE, None, AT) == 23


def test_window_counts_the_zones_inside_it() -> None:
    assert in_window(BY_ZONE, SendWindow.parse("09:00", "21:00"), AT) == 5 + 11
    # Wrapping past midnight: 22:00-06:00 holds New York's 04:00 only.
    assert in_window(BY_ZONE, SendWindow.parse("22:00", "06:00"), AT) == 7
    # [start, end): Moscow's 12:00 is outside a window that ends at 12:00.
    assert in_window(BY_ZONE, SendWindow.parse("10:00", "12:00"), AT) == 0


async def customer(api: Api, phone: str, **fields: Any) -> None:
    resp = await api.post("/api/customers/", json={"phone": phone, **fields})
    assert resp.status == 201, await resp.text()


async def test_count_follows_the_filter(api: Api) -> None:
    await customer(api, "79120000001", tag="vip")
    await customer(api, "79120000002", tag="new")
    await customer(api, "79160000003", tag="vip")
    await customer(api, "79160000004")

    async def count(body: dict[str, Any]) -> dict[str, Any]:
        resp = await api.post(URL, json=body)
        assert resp.status == 200, await resp.text()
        answer: dict[str, Any] = await resp.json()
        return answer

    assert await count({}) == {"count": 4, "in_window_now": 4}
    assert await count({"filter": {"operator_codes": ["912"]}}) == {"count": 2, "in_window_now": 2}
    assert await count({"filter": {"tags": ["vip"]}, "send_window": None}) == {"count": 2, "in_window_now": 2}
    assert (await count({"filter": {"operator_codes": ["916"], "tags": ["vip", "new"]}}))["count"] == 1
    assert (await count({"filter": {"operator_codes": ["999"]}}))["count"] == 0


async def test_in_window_now_counts_by_each_customer_s_zone(api: Api) -> None:
    now = datetime.now(UTC)
    # A one-hour window around Tokyo's current hour.
    tokyo_hour = now.astimezone(ZoneInfo("Asia/Tokyo")).hour
    window = {"start": f"{tokyo_hour:02d}:00", "end": f"{(tokyo_hour + 1) % 24:02d}:00"}
    await customer(api, "79120000001", timezone="Asia/Tokyo")
    await customer(api, "79120000002", timezone="Asia/Tokyo")
    # Moscow is 6 hours behind Tokyo all year: never inside the same one-hour window.
    await customer(api, "79120000003", timezone="Europe/Moscow")
    body = await (await api.post(URL, json={"send_window": window})).json()
    assert body == {"count": 3, "in_window_now": 2}


@pytest.mark.parametrize(
    "body",
    [
        {"filter": {"operator_codes": ["91"]}},
        {"filter": {"tags": [""]}},
        {"send_window": {"start": "09:00", "end": "09:00"}},
        {"send_window": {"start": "25:00", "end": "09:00"}},
        {"unknown": 1},
        {"filter": {"operator_codes": ["912"] * 1001}},
    ],
)
async def test_bad_bodies_are_422(api: Api, body: dict[str, Any]) -> None:
    resp = await api.post(URL, json=body)
    assert resp.status == 422, await resp.text()
    assert resp.headers["Content-Type"].startswith("application/problem+json")


async def test_needs_the_token(api: Api) -> None:
    resp = await api.client.post(URL, json={})
    assert resp.status == 401
