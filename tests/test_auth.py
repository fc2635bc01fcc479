"""Login, tokens, and the rule that every /api route needs one."""

from __future__ import annotations

from typing import Any

import jwt
from aiohttp.test_utils import TestClient

from tests.conftest import ADMIN_PASSWORD, JWT_SECRET, Api


async def test_form_login_returns_a_bearer_token(client: TestClient[Any, Any]) -> None:
    resp = await client.post(
        "/auth/token", data={"grant_type": "password", "username": "admin", "password": ADMIN_PASSWORD}
    )
    assert resp.status == 200
    body = await resp.json()
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 3600
    claims = jwt.decode(body["access_token"], JWT_SECRET, algorithms=["HS256"], issuer="mailer")
    assert claims["sub"] == "admin"
    assert claims["exp"] - claims["iat"] == 3600


async def test_json_login(client: TestClient[Any, Any]) -> None:
    resp = await client.post("/auth/token", json={"username": "admin", "password": ADMIN_PASSWORD})
    assert resp.status == 200


async def test_wrong_password_is_401_problem(client: TestClient[Any, Any]) -> None:
    resp = await client.post("/auth/token", data={"username": "admin", "password": "nope"})
    assert resp.status == 401
    assert resp.content_type == "application/problem+json"
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")


async def test_missing_fields_are_422(client: TestClient[Any, Any]) -> None:
    resp = await client.post("/auth/token", json={"username": "admin"})
    assert resp.status == 422
    body = await resp.json()
    assert body["errors"] == [{"loc": ["body", "password"], "msg": "field required (a string)"}]


async def test_logins_are_rate_limited_per_address(client: TestClient[Any, Any]) -> None:
    statuses = []
    for _ in range(12):
        resp = await client.post("/auth/token", data={"username": "admin", "password": "guess"})
        statuses.append(resp.status)
    assert statuses[:10] == [401] * 10
    assert statuses[10:] == [429, 429]
    assert int(resp.headers["Retry-After"]) >= 1


async def test_api_needs_a_token(client: TestClient[Any, Any]) -> None:
    resp = await client.get("/api/customers/")
    assert resp.status == 401
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")


async def test_forged_and_expired_tokens_are_refused(client: TestClient[Any, Any]) -> None:
    forged = jwt.encode(
        {"sub": "admin", "iat": 0, "exp": 2**40, "iss": "mailer"}, "x" * 40, algorithm="HS256"
    )
    expired = jwt.encode({"sub": "admin", "iat": 0, "exp": 1, "iss": "mailer"}, JWT_SECRET, algorithm="HS256")
    for token in (forged, expired, "not-a-jwt"):
        resp = await client.get("/api/customers/", headers={"Authorization": f"Bearer {token}"})
        assert resp.status == 401, token


async def test_every_api_route_refuses_anonymous_requests(client: TestClient[Any, Any], api: Api) -> None:
    """Walk the router: any /api route that answers without a token is a hole."""
    checked = 0
    for resource in client.app.router.resources():
        info = resource.get_info()
        path = info.get("path") or info.get("formatter", "")
        if not path.startswith("/api"):
            continue
        concrete = path.replace("{id}", "1").replace("{mailout_id}", "1")
        for route in resource:
            method = route.method if route.method != "*" else "GET"
            methods = (
                sorted(getattr(route.handler, "allowed_methods", {method}))
                if route.method == "*"
                else [method]
            )
            for m in methods:
                resp = await client.request(m, concrete)
                assert resp.status == 401, f"{m} {path} answered {resp.status} without a token"
                checked += 1
    assert checked >= 1
