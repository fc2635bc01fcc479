"""Ids are never reused: a deleted record's id never comes back, on either database (migration 0005)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from mailer.settings import Settings
from mailer.store.db import migrate_sync
from tests.conftest import AiohttpClient, Api
from tests.engine_support import FAST_ENGINE, start_sandbox, start_service
from tests.polling import eventually

PHONES = [f"7900100{i:04d}" for i in range(10)]


def iso(at: datetime) -> str:
    return at.isoformat()


def mailout_body(minutes: int = 10) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        "start_at": iso(now + timedelta(minutes=minutes)),
        "end_at": iso(now + timedelta(minutes=minutes + 10)),
        "text": "hello",
        "filter": {"operator_codes": [], "tags": []},
    }


async def created_id(api: Api, path: str, body: dict[str, Any]) -> int:
    resp = await api.post(path, json=body)
    assert resp.status == 201, await resp.text()
    return int((await resp.json())["id"])


async def test_a_deleted_customers_id_is_not_given_to_the_next(api: Api) -> None:
    first = await created_id(api, "/api/customers/", {"phone": PHONES[0]})
    newest = await created_id(api, "/api/customers/", {"phone": PHONES[1]})
    assert (await api.delete(f"/api/customers/{newest}")).status == 204
    after = await created_id(api, "/api/customers/", {"phone": PHONES[2]})
    assert after > newest > first
    assert (await api.get(f"/api/customers/{newest}")).status == 404


async def test_a_deleted_mailouts_id_is_not_given_to_the_next(api: Api) -> None:
    newest = await created_id(api, "/api/mailouts/", mailout_body())
    assert (await api.delete(f"/api/mailouts/{newest}")).status == 204
    after = await created_id(api, "/api/mailouts/", mailout_body())
    assert after > newest
    assert (await api.get(f"/api/mailouts/{newest}")).status == 404


async def test_a_new_mailout_after_a_cancelled_and_deleted_one_sends_everything(
    aiohttp_client: AiohttpClient, settings_factory: Callable[..., Settings]
) -> None:
    """The reported bug: on SQLite the new mailout took the deleted one's id, and the sender's cancel hold for
    that id cancelled all its messages at once with no attempt while it showed `running`."""
    sandbox = await start_sandbox()
    try:
        settings = settings_factory(provider_url=sandbox.url, **FAST_ENGINE)
        service = await start_service(aiohttp_client, settings)
        await service.customers(5)
        old = await service.mailout()
        await service.post(f"/api/mailouts/{old['id']}/cancel")
        assert (await service.api.delete(f"/api/mailouts/{old['id']}")).status == 204
        old_message_ids = set(sandbox.counts())

        new = await service.mailout()
        assert new["id"] != old["id"]

        async def all_sent() -> dict[str, int] | None:
            statuses = await service.statuses(new["id"])
            return statuses if statuses.get("sent") == 5 else None

        await eventually(all_sent, what="every message of the new mailout sent")
        new_ids = {row.id for row in await service.messages(new["id"])}
        assert not new_ids & old_message_ids
        assert all(sandbox.counts()[message_id] >= 1 for message_id in new_ids)
    finally:
        await sandbox.server.close()


def _rows(path: Path, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as conn:
        return conn.execute(sql).fetchall()


def _schema_objects(path: Path) -> list[tuple[Any, ...]]:
    return _rows(
        path,
        "SELECT type, name, tbl_name FROM sqlite_master WHERE type IN ('index', 'trigger') "
        "ORDER BY type, name",
    )


def test_migration_keeps_data_indexes_and_triggers_on_sqlite(tmp_path: Path) -> None:
    """An existing SQLite database (schema 0004, with data) keeps every row, index and counter trigger."""
    old = tmp_path / "old.db"
    migrate_sync(f"sqlite:///{old}", "0004")
    now = "2026-12-01 09:00:00.000000"
    with sqlite3.connect(old) as conn:
        conn.execute(
            "INSERT INTO customers (id, phone, operator_code, tag, timezone, created_at, updated_at) "
            "VALUES (1, '79001000001', '900', 't', 'UTC', ?, ?), "
            "(2, '79001000002', '900', NULL, 'UTC', ?, ?)",
            (now, now, now, now),
        )
        conn.execute(
            "INSERT INTO mailouts (id, start_at, end_at, text, operator_codes, tags, status, created_at, "
            "updated_at) VALUES (7, ?, ?, 'x', '[]', '[]', 'running', ?, ?)",
            (now, now, now, now),
        )
        conn.execute(
            "INSERT INTO messages (id, mailout_id, customer_id, phone, timezone, status, attempts, "
            "created_at, updated_at) VALUES (40, 7, 1, '79001000001', 'UTC', 'pending', 0, ?, ?)",
            (now, now),
        )
    migrate_sync(f"sqlite:///{old}")

    fresh = tmp_path / "fresh.db"
    migrate_sync(f"sqlite:///{fresh}")
    assert _schema_objects(old) == _schema_objects(fresh)
    customers = _rows(old, "SELECT id, phone FROM customers ORDER BY id")
    assert customers == [(1, "79001000001"), (2, "79001000002")]
    assert _rows(old, "SELECT mailout_id, status, n FROM mailout_message_counts") == [(7, "pending", 1)]
    with sqlite3.connect(old) as conn:
        conn.execute("PRAGMA foreign_keys=ON")
        # The counter triggers still fire, and foreign keys still point at the rebuilt tables.
        conn.execute("UPDATE messages SET status = 'sent' WHERE id = 40")
        conn.execute("DELETE FROM customers WHERE id = 2")
        conn.execute(
            "INSERT INTO customers (phone, operator_code, timezone, created_at, updated_at) "
            "VALUES ('79001000003', '900', 'UTC', ?, ?)",
            (now, now),
        )
        assert conn.execute("SELECT max(id) FROM customers").fetchone() == (3,)
        conn.execute("DELETE FROM customers WHERE id = 1")
        assert conn.execute("SELECT customer_id FROM messages WHERE id = 40").fetchone() == (None,)
        conn.execute("DELETE FROM mailouts WHERE id = 7")
        assert conn.execute("SELECT count(*) FROM messages").fetchone() == (0,)
    assert _rows(old, "SELECT count(*) FROM mailout_message_counts") == [(0,)]
