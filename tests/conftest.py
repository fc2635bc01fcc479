"""Fixtures shared by the whole suite: a migrated database of each kind, the app, an authorised client."""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from mailer.app import create_app
from mailer.settings import Settings
from mailer.store.db import create_engine, migrate_sync
from mailer.store.dispatch import DispatchStore
from mailer.store.tables import metadata
from tests.harness import create_database, drop_database

if TYPE_CHECKING:
    from tests.process_support import Processes

PG_ADMIN_URL = os.environ.get("MAILER_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
ADMIN_PASSWORD = "correct horse battery staple"
JWT_SECRET = "test-secret-that-is-long-enough-for-hs256"

AiohttpClient = Callable[[web.Application], Awaitable[TestClient[Any, Any]]]


@contextmanager
def scratch_postgres(prefix: str, *, migrate: bool = True) -> Iterator[str]:
    """A fresh PostgreSQL database (migrated unless told otherwise), dropped with its sessions afterwards.

    Without PostgreSQL the test is skipped, except in CI, where that is a failure.
    """
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    try:
        url = asyncio.run(create_database(PG_ADMIN_URL, name))
    except (OSError, asyncpg.PostgresError) as exc:
        if IN_CI:
            pytest.fail(f"PostgreSQL is required in CI and is not reachable at {PG_ADMIN_URL}: {exc}")
        pytest.skip(f"PostgreSQL not reachable at {PG_ADMIN_URL}: {exc}")
    try:
        if migrate:
            migrate_sync(url)
        yield url
    finally:
        asyncio.run(drop_database(PG_ADMIN_URL, name))


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for this test run, dropped at the end."""
    with scratch_postgres("mailer_test") as url:
        yield url


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file, copied for each test (migrating once is much faster than per test)."""
    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
    migrate_sync(f"sqlite:///{path}")
    return path


async def _truncate_all(url: str) -> None:
    engine = create_engine(url, pool_size=1)
    try:
        async with engine.begin() as conn:
            names = ", ".join(t.name for t in metadata.sorted_tables)
            await conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    finally:
        await engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each test that uses the database runs once on SQLite and once on PostgreSQL, from empty tables."""
    # A sync fixture on purpose: the session fixtures it pulls in run their own event loops (asyncio.run,
    # alembic), which they cannot do from inside the test's running loop.
    if request.param == "sqlite":
        path = tmp_path / "mailer.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        return f"sqlite:///{path}"
    url: str = request.getfixturevalue("pg_url")
    asyncio.run(_truncate_all(url))
    return url


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine on the test's database, as the store tests use it (two connections: a test may hold one)."""
    engine = create_engine(db_url, pool_size=2)
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture
def store(db: AsyncEngine) -> DispatchStore:
    """The engine's store on that engine."""
    return DispatchStore(db)


@pytest.fixture
def settings_factory(db_url: str) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "database_url": db_url,
            "admin_password": ADMIN_PASSWORD,
            "jwt_secret": JWT_SECRET,
            "log_format": "json",
        }
        values.update(overrides)
        return Settings(**values)

    return make


@pytest.fixture
def settings(settings_factory: Callable[..., Settings]) -> Settings:
    return settings_factory()


@pytest.fixture
async def client(aiohttp_client: AiohttpClient, settings: Settings) -> TestClient[Any, Any]:
    """The API without the sending engine, over real HTTP on loopback."""
    return await aiohttp_client(create_app(settings, with_engine=False))


@pytest.fixture
async def token(client: TestClient[Any, Any]) -> str:
    resp = await client.post("/auth/token", data={"username": "admin", "password": ADMIN_PASSWORD})
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    return str(body["access_token"])


class Api:
    """A test client that sends the bearer token with every request."""

    def __init__(self, client: TestClient[Any, Any], token: str) -> None:
        self.client = client
        self.headers = {"Authorization": f"Bearer {token}"}

    def _merge(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        kwargs["headers"] = {**self.headers, **kwargs.get("headers", {})}
        return kwargs

    async def request(self, method: str, path: str, **kwargs: Any) -> Any:
        return await self.client.request(method, path, **self._merge(kwargs))

    async def get(self, path: str, **kwargs: Any) -> Any:
        return await self.request("GET", path, **kwargs)

    async def post(self, path: str, **kwargs: Any) -> Any:
        return await self.request("POST", path, **kwargs)

    async def put(self, path: str, **kwargs: Any) -> Any:
        return await self.request("PUT", path, **kwargs)

    async def patch(self, path: str, **kwargs: Any) -> Any:
        return await self.request("PATCH", path, **kwargs)

    async def delete(self, path: str, **kwargs: Any) -> Any:
        return await self.request("DELETE", path, **kwargs)

    @property
    def db(self) -> AsyncEngine:
        from mailer import keys

        app = self.client.app
        assert app is not None
        engine: AsyncEngine = app[keys.DB]
        return engine


@pytest.fixture
async def api(client: TestClient[Any, Any], token: str) -> Api:
    return Api(client, token)


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Processes]:
    """Service and sandbox processes for one test, all stopped (by pid) at its end."""
    # Imported here: process_support imports this module.
    from tests.process_support import processes

    with processes(tmp_path) as group:
        yield group
