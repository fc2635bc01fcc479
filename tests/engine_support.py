"""Helpers for the engine tests: a sandbox provider on its own loopback server, the service with its engine,
customers and mailouts made through the API, and `eventually` for polling with a deadline."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from mailer import keys
from mailer.app import create_app
from mailer.engine.engine import Engine
from mailer.settings import Settings
from mailer.store.tables import message_attempts, messages
from sandbox.app import create_sandbox_app
from sandbox.faults import SandboxFaults
from sandbox.state import SANDBOX_STATE, SandboxState
from tests.conftest import ADMIN_PASSWORD, AiohttpClient, Api

SANDBOX_TOKEN = "sandbox-token"

# Small delays so that retries, breakers and probes happen within a test's lifetime.
FAST_ENGINE: dict[str, Any] = {
    "retry_base_s": 0.01,
    "retry_cap_s": 0.1,
    "breaker_cooldown_s": 0.2,
    "send_timeout_s": 2.0,
    "send_concurrency": 8,
    "shutdown_grace_s": 0.5,
    "provider_token": SANDBOX_TOKEN,
}


def now() -> datetime:
    return datetime.now(UTC)


def iso(at: datetime) -> str:
    return at.isoformat()


@dataclass
class Sandbox:
    """The sandbox provider served on its own loopback port; `deny` makes it answer 401 to everything."""

    server: TestServer
    faults: SandboxFaults
    deny: dict[str, bool]

    @property
    def url(self) -> str:
        return str(self.server.make_url("/v1")).rstrip("/")

    @property
    def state(self) -> SandboxState:
        sub: web.Application = self.server.app[SANDBOX_APP]
        return sub[SANDBOX_STATE]

    def counts(self) -> dict[int, int]:
        return dict(self.state.counts)

    def received_at(self) -> dict[int, datetime]:
        """The first time each id was accepted."""
        first: dict[int, datetime] = {}
        for entry in self.state.journal:
            first.setdefault(entry.id, datetime.fromtimestamp(entry.received_at_s, UTC))
        return first


SANDBOX_APP = web.AppKey("sandbox_app", web.Application)


async def start_sandbox(faults: SandboxFaults | None = None) -> Sandbox:
    faults = faults or SandboxFaults(seed=7)
    sandbox_app = create_sandbox_app(faults, SANDBOX_TOKEN)
    deny = {"on": False}

    @web.middleware
    async def refuse(request: web.Request, handler: Any) -> web.StreamResponse:
        if deny["on"] and "/send/" in request.path:
            return web.json_response({"code": 401, "message": "token expired"}, status=401)
        response: web.StreamResponse = await handler(request)
        return response

    root = web.Application(middlewares=[refuse])
    root[SANDBOX_APP] = sandbox_app
    root.add_subapp("/v1", sandbox_app)
    server = TestServer(root)
    await server.start_server()
    return Sandbox(server, faults, deny)


class Service:
    """The service under test: API client plus direct access to its database and engine."""

    def __init__(self, api: Api) -> None:
        self.api = api

    @property
    def db(self) -> AsyncEngine:
        return self.api.db

    @property
    def engine(self) -> Engine:
        engine = self.api.client.app[keys.ENGINE]
        assert isinstance(engine, Engine)
        return engine

    async def customer(
        self, phone: str, *, tag: str | None = None, zone: str = "UTC", code: str | None = None
    ) -> int:
        body: dict[str, Any] = {"phone": phone, "tag": tag, "timezone": zone}
        if code is not None:
            body["operator_code"] = code
        resp = await self.api.post("/api/customers/", json=body)
        assert resp.status == 201, await resp.text()
        return int((await resp.json())["id"])

    async def customers(
        self, count: int, *, start: int = 0, tag: str | None = None, zone: str = "UTC"
    ) -> list[int]:
        return [await self.customer(f"7900{start + i:07d}", tag=tag, zone=zone) for i in range(count)]

    async def mailout(
        self,
        *,
        start_at: datetime | None = None,
        end_at: datetime | None = None,
        text: str = "hello",
        tags: list[str] | None = None,
        codes: list[str] | None = None,
        window: tuple[str, str] | None = None,
    ) -> dict[str, Any]:
        start_at = start_at or now() - timedelta(seconds=1)
        end_at = end_at or now() + timedelta(minutes=10)
        body = {
            "start_at": iso(start_at),
            "end_at": iso(end_at),
            "text": text,
            "filter": {"operator_codes": codes or [], "tags": tags or []},
            "send_window": {"start": window[0], "end": window[1]} if window else None,
        }
        resp = await self.api.post("/api/mailouts/", json=body)
        assert resp.status == 201, await resp.text()
        result: dict[str, Any] = await resp.json()
        return result

    async def get(self, path: str) -> Any:
        resp = await self.api.get(path)
        assert resp.status == 200, await resp.text()
        return await resp.json()

    async def post(self, path: str) -> Any:
        resp = await self.api.post(path)
        assert resp.status == 200, await resp.text()
        return await resp.json()

    async def stats(self, mailout_id: int) -> dict[str, Any]:
        result: dict[str, Any] = await self.get(f"/api/mailouts/{mailout_id}/stats")
        return result

    async def messages(self, mailout_id: int) -> list[Any]:
        async with self.db.connect() as conn:
            rows = await conn.execute(
                select(messages).where(messages.c.mailout_id == mailout_id).order_by(messages.c.id)
            )
            return list(rows.all())

    async def attempts(self, mailout_id: int) -> list[Any]:
        async with self.db.connect() as conn:
            rows = await conn.execute(
                select(message_attempts)
                .where(message_attempts.c.mailout_id == mailout_id)
                .order_by(message_attempts.c.id)
            )
            return list(rows.all())

    async def statuses(self, mailout_id: int) -> dict[str, int]:
        counts: dict[str, int] = {}
        for row in await self.messages(mailout_id):
            counts[row.status] = counts.get(row.status, 0) + 1
        return counts


async def start_service(aiohttp_client: AiohttpClient, settings: Settings) -> Service:
    client = await aiohttp_client(create_app(settings, with_engine=True))
    resp = await client.post("/auth/token", data={"username": "admin", "password": ADMIN_PASSWORD})
    assert resp.status == 200, await resp.text()
    token = (await resp.json())["access_token"]
    return Service(Api(client, token))
