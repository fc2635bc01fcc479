"""Search: `GET /api/search` and the seed's `POST /search`, and what a typed query may mean."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from mailer.operations.search import terms_for
from mailer.store.search import SearchTerms
from tests.conftest import Api


async def customer(api: Api, phone: str, **fields: Any) -> dict[str, Any]:
    resp = await api.post("/api/customers/", json={"phone": phone, **fields})
    assert resp.status == 201, await resp.text()
    body: dict[str, Any] = await resp.json()
    return body


async def mailout(api: Api, text: str) -> dict[str, Any]:
    body = {"start_at": "2031-01-01T00:00:00Z", "end_at": "2031-01-02T00:00:00Z", "text": text}
    resp = await api.post("/api/mailouts/", json=body)
    assert resp.status == 201, await resp.text()
    created: dict[str, Any] = await resp.json()
    return created


def phones(body: dict[str, Any]) -> list[str]:
    return [c["phone"] for c in body["customers"]]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", SearchTerms()),
        ("vip", SearchTerms(tag="vip", text="vip")),
        ("912", SearchTerms(ident=912, operator_code="912", tag="912", text="912")),
        ("7912", SearchTerms(ident=7912, phone_prefix="7912", tag="7912", text="7912")),
        (
            "+7 (912) 000-00",
            SearchTerms(phone_prefix="791200000", tag="+7 (912) 000-00", text="+7 (912) 000-00"),
        ),
        ("799999999999", SearchTerms(ident=799999999999, tag="799999999999", text="799999999999")),
        ("9" * 30, SearchTerms(tag="9" * 30, text="9" * 30)),
    ],
)
def test_terms_read_the_query_every_way_it_can_mean_something(query: str, expected: SearchTerms) -> None:
    assert terms_for(query) == expected


async def test_get_finds_customers_by_phone_prefix_code_tag_and_id(api: Api) -> None:
    first = await customer(api, "79120000001", tag="vip")
    await customer(api, "79120000002", tag="new")
    await customer(api, "79260000003", tag="912")
    body = await (await api.get("/api/search", params={"q": "7912"})).json()
    assert phones(body) == ["79120000001", "79120000002"]
    # Three digits: an operator code, and also a tag (the third customer's tag is "912").
    body = await (await api.get("/api/search", params={"q": "912"})).json()
    assert phones(body) == ["79120000001", "79120000002", "79260000003"]
    body = await (await api.get("/api/search", params={"q": "vip"})).json()
    assert phones(body) == ["79120000001"]
    body = await (await api.get("/api/search", params={"q": str(first["id"])})).json()
    assert first["phone"] in phones(body)
    body = await (await api.get("/api/search", params={"q": "+7 912 000-00-02"})).json()
    assert phones(body) == ["79120000002"]


async def test_mailouts_by_id_and_text_newest_first_and_limit_holds(api: Api) -> None:
    a = await mailout(api, "Winter SALE starts")
    b = await mailout(api, "Another sale, 50% off")
    await mailout(api, "Nothing to see")
    body = await (await api.get("/api/search", params={"q": "sale"})).json()
    assert [m["id"] for m in body["mailouts"]] == [b["id"], a["id"]]
    body = await (await api.get("/api/search", params={"q": "sale", "limit": "1"})).json()
    assert [m["id"] for m in body["mailouts"]] == [b["id"]]
    # LIKE's wildcards in the query are literal characters.
    body = await (await api.get("/api/search", params={"q": "50%"})).json()
    assert [m["id"] for m in body["mailouts"]] == [b["id"]]
    body = await (await api.get("/api/search", params={"q": "_"})).json()
    assert body["mailouts"] == []
    body = await (await api.get("/api/search", params={"q": str(a["id"])})).json()
    assert a["id"] in [m["id"] for m in body["mailouts"]]


async def test_seed_post_search_answers_the_same_and_needs_the_token(
    api: Api, client: TestClient[Any, Any]
) -> None:
    await customer(api, "79120000001", tag="vip")
    seed = await (await api.post("/search", json={"q": "vip"})).json()
    get = await (await api.get("/api/search", params={"q": "vip"})).json()
    assert seed == get
    assert phones(seed) == ["79120000001"]
    resp = await client.post("/search", json={"q": "vip"})
    assert resp.status == 401
    assert resp.headers["Content-Type"].startswith("application/problem+json")
    # Without a token even a malformed body is a 401, not a 422 that would confirm the route's shape.
    assert (await client.post("/search", json={"nope": 1})).status == 401
    assert (await client.get("/api/search", params={"q": "vip"})).status == 401


@pytest.mark.parametrize(
    "params",
    [{}, {"q": "x" * 201}, {"q": "a\x00b"}, {"q": "vip", "limit": "0"}, {"q": "vip", "limit": "1001"}],
)
async def test_bad_queries_are_422(api: Api, params: dict[str, str]) -> None:
    resp = await api.get("/api/search", params=params)
    assert resp.status == 422, await resp.text()
    assert resp.headers["Content-Type"].startswith("application/problem+json")


async def test_seed_body_is_checked(api: Api) -> None:
    for body in ({}, {"q": 5}, {"q": "vip", "extra": 1}):
        resp = await api.post("/search", json=body)
        assert resp.status == 422, await resp.text()
    assert (await api.post("/search", data=b"{", headers={"Content-Type": "application/json"})).status == 400
