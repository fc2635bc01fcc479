"""Index, liveness, readiness."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient


async def test_index_names_the_service(client: TestClient[Any, Any]) -> None:
    resp = await client.get("/")
    body = await resp.json()
    assert body["service"] == "mailer"
    assert body["links"]["docs"] == "/docs/"


async def test_healthz(client: TestClient[Any, Any]) -> None:
    resp = await client.get("/healthz")
    assert resp.status == 200


async def test_readyz_reports_the_database(client: TestClient[Any, Any]) -> None:
    resp = await client.get("/readyz")
    assert resp.status == 200
    body = await resp.json()
    assert body["checks"]["database"] == "ok"


async def test_unknown_route_is_problem_json(client: TestClient[Any, Any]) -> None:
    resp = await client.get("/nowhere")
    assert resp.status == 404
    assert resp.content_type == "application/problem+json"
