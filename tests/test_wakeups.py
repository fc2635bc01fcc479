"""Cross-process wake-ups: the publisher coalesces a burst into one NOTIFY per mailout and survives a failed
one; the listener delivers ids, looks at everything after each (re)connect, and reconnects with backoff."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import pytest
from structlog.testing import capture_logs

from mailer.engine import wakeups as wakeups_module
from mailer.engine.wakeups import CHANNEL, PgWakeups
from tests.conftest import PG_ADMIN_URL, scratch_postgres
from tests.polling import eventually
from tests.process_support import database_name

# Tiny reconnect delays so that a test sees several attempts in milliseconds; the doubling is what is checked.
BASE_S = 0.001
CAP_S = 0.004


@dataclass
class NotifyStore:
    """Remembers each NOTIFY; fails those whose payload is in `failing`; `sent` is set after each."""

    notified: list[tuple[str, str]] = field(default_factory=list)
    failing: set[str] = field(default_factory=set)
    sent: asyncio.Event = field(default_factory=asyncio.Event)

    async def notify(self, channel: str, payload: str) -> None:
        self.sent.set()
        if payload in self.failing:
            raise OSError("connection reset")
        self.notified.append((channel, payload))


@dataclass
class Heard:
    """What the listener delivered, in order."""

    ids: list[int | None] = field(default_factory=list)

    def __call__(self, mailout_id: int | None) -> None:
        self.ids.append(mailout_id)


@pytest.fixture
def fast_reconnect(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wakeups_module, "RECONNECT_BASE_S", BASE_S)
    monkeypatch.setattr(wakeups_module, "RECONNECT_CAP_S", CAP_S)


async def stopped(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.wait([task])


async def test_a_burst_of_changes_is_one_notify_per_mailout() -> None:
    store = NotifyStore()
    wakeups = PgWakeups("postgresql://unused", store, Heard())
    for mailout_id in (3, 1, 3, 3, 1):
        wakeups.publish(mailout_id)
    task = asyncio.create_task(wakeups.run_publisher())
    try:
        await eventually(lambda: _async(len(store.notified) == 2), 5, "two NOTIFYs")
        assert store.notified == [(CHANNEL, "1"), (CHANNEL, "3")]
        # Idle: the publisher waits for the next change rather than polling.
        store.sent.clear()
        for _ in range(100):
            await asyncio.sleep(0)
        assert not store.sent.is_set()
        wakeups.publish(7)
        await eventually(lambda: _async(len(store.notified) == 3), 5, "the next NOTIFY")
        assert store.notified[-1] == (CHANNEL, "7")
    finally:
        await stopped(task)


async def test_a_failed_notify_is_logged_and_the_others_still_go() -> None:
    store = NotifyStore(failing={"1"})
    wakeups = PgWakeups("postgresql://unused", store, Heard())
    wakeups.publish(1)
    wakeups.publish(2)
    with capture_logs() as logs:
        task = asyncio.create_task(wakeups.run_publisher())
        try:
            await eventually(lambda: _async(store.notified == [(CHANNEL, "2")]), 5, "the second NOTIFY")
        finally:
            await stopped(task)
    assert [line["mailout_id"] for line in logs if line["event"] == "NOTIFY failed"] == [1]


class FakeConnection:
    """Enough of an asyncpg connection for the listener; `lose` ends it as a dropped socket would."""

    def __init__(self) -> None:
        self.on_lost: Callable[[object], None] | None = None
        self.deliver: Callable[..., None] | None = None
        self.terminated = False

    def add_termination_listener(self, callback: Callable[[object], None]) -> None:
        self.on_lost = callback

    async def add_listener(self, channel: str, callback: Callable[..., None]) -> None:
        assert channel == CHANNEL
        self.deliver = callback

    async def fetchval(self, _sql: str, timeout: float) -> int:  # noqa: ASYNC109 (asyncpg's signature)
        return 1

    def terminate(self) -> None:
        self.terminated = True

    def lose(self) -> None:
        assert self.on_lost is not None
        self.on_lost(self)


@dataclass
class Connector:
    """Stands in for `asyncpg.connect`: refuses while `refusals` is positive, else hands out a fake."""

    refusals: int = 0
    attempts: int = 0
    connections: list[FakeConnection] = field(default_factory=list)

    async def __call__(self, _dsn: str, timeout: float) -> Any:  # noqa: ASYNC109 (asyncpg's signature)
        self.attempts += 1
        if self.refusals > 0:
            self.refusals -= 1
            raise ConnectionRefusedError("connection refused")
        self.connections.append(FakeConnection())
        return self.connections[-1]


@pytest.fixture
def connector(monkeypatch: pytest.MonkeyPatch, fast_reconnect: None) -> Connector:
    connector = Connector()
    monkeypatch.setattr(asyncpg, "connect", connector)
    return connector


def retry_delays(logs: list[MutableMapping[str, Any]]) -> list[float]:
    return [line["retry_in_s"] for line in logs if line["event"] == "LISTEN connection lost; reconnecting"]


async def test_reconnect_delays_double_up_to_the_cap(connector: Connector) -> None:
    connector.refusals = 5
    heard = Heard()
    with capture_logs() as logs:
        task = asyncio.create_task(PgWakeups("postgresql://x", NotifyStore(), heard).run_listener())
        try:
            await eventually(lambda: _async(heard.ids == [None]), 5, "the first connection")
        finally:
            await stopped(task)
    assert retry_delays(logs) == [BASE_S, 2 * BASE_S, CAP_S, CAP_S, CAP_S]
    assert connector.attempts == 6


async def test_a_lost_connection_reconnects_quickly_and_looks_at_everything_again(
    connector: Connector,
) -> None:
    connector.refusals = 3
    heard = Heard()
    with capture_logs() as logs:
        task = asyncio.create_task(PgWakeups("postgresql://x", NotifyStore(), heard).run_listener())
        try:
            await eventually(lambda: _async(heard.ids == [None]), 5, "the first connection")
            first = connector.connections[0]
            assert first.deliver is not None
            first.deliver(first, 1, CHANNEL, "42")
            first.deliver(first, 1, CHANNEL, "not-an-id")
            assert heard.ids == [None, 42, None]
            first.lose()
            await eventually(lambda: _async(len(connector.connections) == 2), 5, "a new connection")
            await eventually(lambda: _async(heard.ids == [None, 42, None, None]), 5, "a fresh look")
            assert first.terminated
        finally:
            await stopped(task)
    # After a connection that worked, the next reconnect starts from the base delay again: a process whose
    # database restarted a few times in its life must not wait the cap (losing wake-ups) on every restart.
    assert retry_delays(logs) == [BASE_S, 2 * BASE_S, CAP_S, BASE_S]


async def test_stopping_the_listener_lets_its_connection_go(connector: Connector) -> None:
    heard = Heard()
    task = asyncio.create_task(PgWakeups("postgresql://x", NotifyStore(), heard).run_listener())
    await eventually(lambda: _async(heard.ids == [None]), 5, "the connection")
    await stopped(task)
    assert connector.connections[0].terminated


@pytest.fixture
def pg_dsn() -> Iterator[str]:
    with scratch_postgres("wakeups", migrate=False) as url:
        yield url


@pytest.fixture
async def listening(pg_dsn: str, fast_reconnect: None) -> AsyncIterator[Heard]:
    heard = Heard()
    task = asyncio.create_task(PgWakeups(pg_dsn, NotifyStore(), heard).run_listener())
    await eventually(lambda: _async(heard.ids == [None]), 10, "LISTEN connected")
    yield heard
    await stopped(task)


async def test_a_real_notify_reaches_the_listener_and_a_killed_session_is_replaced(
    pg_dsn: str, listening: Heard
) -> None:
    conn = await asyncpg.connect(pg_dsn, timeout=5)
    try:
        await conn.execute(f"NOTIFY {CHANNEL}, '17'")
        await eventually(lambda: _async(listening.ids == [None, 17]), 10, "the NOTIFY delivered")
    finally:
        await conn.close()
    # What a PostgreSQL restart looks like to the listener: its session is killed.
    await eventually(lambda: kill_sessions(database_name(pg_dsn)), 10, "the listener's session killed")
    await eventually(lambda: _async(listening.ids.count(None) == 2), 10, "a fresh look after the reconnect")
    conn = await asyncpg.connect(pg_dsn, timeout=5)
    try:
        await conn.execute(f"NOTIFY {CHANNEL}, '18'")
        await eventually(lambda: _async(listening.ids[-1] == 18), 10, "a NOTIFY after the reconnect")
    finally:
        await conn.close()


async def kill_sessions(database: str) -> int:
    """Terminate every session of `database` once; returns how many there were."""
    conn = await asyncpg.connect(PG_ADMIN_URL, timeout=5)
    try:
        return int(
            await conn.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = $1 AND pid <> pg_backend_pid()",
                database,
            )
        )
    finally:
        await conn.close()


async def _async(value: bool) -> bool:
    return value
