"""While the database is away, every API request is 503 problem+json with Retry-After (never 500), /readyz
is 503, and the API answers again by itself once the database is back.

On PostgreSQL the outage is real: the service's sessions are terminated and new ones refused (a scratch
database with ALLOW_CONNECTIONS false), as during a restart. On SQLite the curable failure is "database is
locked": another process holds the write lock longer than the busy timeout.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import exc as sa_exc

from mailer.api.problems import DATABASE_RETRY_AFTER_S, database_unavailable
from mailer.app import create_app
from mailer.settings import Settings
from tests.conftest import ADMIN_PASSWORD, PG_ADMIN_URL, AiohttpClient, scratch_postgres
from tests.polling import eventually

DEADLINE_S = 20.0
# Short, so that a locked SQLite answers within the test's patience (the service's default is 15 s).
TEST_BUSY_TIMEOUT_MS = 200
NEW_CUSTOMER = {"phone": "79005550000"}


# --- which errors a retry can cure ---------------------------------------------------------------------


class _Orig(Exception):
    """A driver error as SQLAlchemy wraps it, with the SQLSTATE asyncpg's adapter exposes."""

    def __init__(self, message: str, sqlstate: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


def _wrapped(
    cls: type[sa_exc.DBAPIError], orig: Exception, *, invalidated: bool = False
) -> sa_exc.DBAPIError:
    return cls("SELECT 1", {}, orig, connection_invalidated=invalidated)


@pytest.mark.parametrize(
    "error",
    [
        ConnectionRefusedError(111, "Connection refused"),
        ConnectionResetError(104, "Connection reset by peer"),
        TimeoutError(),
        asyncpg.exceptions.CannotConnectNowError("the database system is starting up"),
        asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
        _wrapped(sa_exc.OperationalError, sqlite3.OperationalError("database is locked")),
        _wrapped(sa_exc.OperationalError, _Orig("server closed the connection unexpectedly")),
        _wrapped(sa_exc.InterfaceError, _Orig("connection is closed")),
        _wrapped(sa_exc.DBAPIError, _Orig("terminating connection", "57P01")),
        _wrapped(sa_exc.DBAPIError, _Orig("connection failure", "08006")),
        _wrapped(sa_exc.DBAPIError, _Orig("anything"), invalidated=True),
        sa_exc.TimeoutError("QueuePool limit of size 10 overflow 10 reached, connection timed out"),
        # Connecting failed (no statement): "not currently accepting connections", "too many clients".
        sa_exc.DBAPIError(None, None, _Orig("database is not currently accepting connections", "55000")),
        _wrapped(sa_exc.DBAPIError, _Orig("sorry, too many clients already", "53300")),
    ],
    ids=repr,
)
def test_curable_errors_are_recognised(error: BaseException) -> None:
    assert database_unavailable(error)


@pytest.mark.parametrize(
    "error",
    [
        _wrapped(sa_exc.IntegrityError, _Orig("duplicate key value", "23505")),
        _wrapped(sa_exc.ProgrammingError, _Orig("syntax error", "42601")),
        _wrapped(sa_exc.DataError, _Orig("value out of range", "22003")),
        ValueError("a bug"),
        KeyError("a bug"),
    ],
    ids=repr,
)
def test_other_errors_are_not_taken_for_an_outage(error: BaseException) -> None:
    assert not database_unavailable(error)


# --- a real outage ---------------------------------------------------------------------------------------


@asynccontextmanager
async def postgres_away(database: str) -> AsyncIterator[None]:
    """New sessions of `database` refused and its current ones terminated, until the block ends."""
    conn = await asyncpg.connect(PG_ADMIN_URL, timeout=5)
    try:
        await conn.execute(f'ALTER DATABASE "{database}" WITH ALLOW_CONNECTIONS false')
        await conn.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = $1 AND pid <> pg_backend_pid()",
            database,
        )
        try:
            yield
        finally:
            await conn.execute(f'ALTER DATABASE "{database}" WITH ALLOW_CONNECTIONS true')
    finally:
        await conn.close()


@asynccontextmanager
async def sqlite_locked(path: Path) -> AsyncIterator[None]:
    """Another process's write lock on the file (an exclusive transaction) until the block ends."""
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        try:
            yield
        finally:
            holder.execute("ROLLBACK")
    finally:
        holder.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def outage_target(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[str, Callable[[], Any]]]:
    """(database URL, a context manager that makes it unavailable) for a database of each kind."""
    if request.param == "sqlite":
        monkeypatch.setattr("mailer.store.db.SQLITE_BUSY_TIMEOUT_MS", TEST_BUSY_TIMEOUT_MS)
        path = tmp_path / "mailer.db"
        yield f"sqlite:///{path}", lambda: sqlite_locked(path)
        return
    with scratch_postgres("mailer_api_outage") as url:
        yield url, lambda: postgres_away(url.rsplit("/", 1)[1])


async def _assert_503(resp: Any) -> None:
    assert resp.status == 503, await resp.text()
    assert resp.content_type == "application/problem+json"
    assert resp.headers["Retry-After"] == str(DATABASE_RETRY_AFTER_S)
    body = await resp.json()
    assert body["status"] == 503
    assert "retry" in body["detail"]


@pytest.mark.timeout(120)
async def test_while_the_database_is_away_the_api_answers_503_and_recovers(
    aiohttp_client: AiohttpClient, outage_target: tuple[str, Callable[[], Any]]
) -> None:
    url, outage = outage_target
    settings = Settings(database_url=url, admin_password=ADMIN_PASSWORD, log_format="json")
    client: TestClient[Any, Any] = await aiohttp_client(create_app(settings, with_engine=False))
    resp = await client.post("/auth/token", data={"username": "admin", "password": ADMIN_PASSWORD})
    headers = {"Authorization": f"Bearer {(await resp.json())['access_token']}"}
    created = await client.post("/api/customers/", json={"phone": "79001234567"}, headers=headers)
    assert created.status == 201
    customer_id = (await created.json())["id"]

    async with outage():
        # Writes on both databases; on PostgreSQL, whose every session is gone, reads too.
        await _assert_503(await client.post("/api/customers/", json=NEW_CUSTOMER, headers=headers))
        await _assert_503(
            await client.patch(f"/api/customers/{customer_id}", json={"tag": "x"}, headers=headers)
        )
        if url.startswith("postgresql"):
            await _assert_503(await client.get("/api/customers/", headers=headers))
            await _assert_503(await client.get(f"/api/mailouts/{customer_id}", headers=headers))
            ready = await client.get("/readyz")
            assert ready.status == 503
            assert (await ready.json())["checks"]["database"].startswith("unavailable")

    async def answers_again() -> bool:
        resp = await client.post("/api/customers/", json=NEW_CUSTOMER, headers=headers)
        return resp.status == 201

    await eventually(answers_again, DEADLINE_S, "the API answering again")
    listed = await client.get("/api/customers/", headers=headers)
    assert [c["phone"] for c in (await listed.json())["items"]] == ["79001234567", NEW_CUSTOMER["phone"]]
    assert (await client.get("/readyz")).status == 200
