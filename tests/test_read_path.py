"""The API's hot reads (a customer, a mailout, a mailout's statistics) take shortcuts; each must answer what
the general path answers.

- JSON built directly (`mailout_data`, `stats_data`) is byte for byte what the documented models give;
- `fetch_one` (asyncpg under a pooled connection on PostgreSQL) reads what SQLAlchemy reads, on both
  databases;
- a connection survives a statement's own error, is discarded after a cancel mid-statement, and a
  disconnect renews the whole pool, as SQLAlchemy's execute does: after a restart one read fails, not one
  per pooled connection;
- a GET whose id the path validation refuses still gets that validation's 404.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, time, timedelta
from typing import Any

import asyncpg
import orjson
import pytest
from sqlalchemy import bindparam, func, literal, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from mailer.api.mailouts import mailout_data, stats_data
from mailer.domain.errors import NotFoundError
from mailer.domain.mailouts import AudienceFilter, Mailout, MailoutSpec
from mailer.domain.statuses import MailoutStatus, MessageStatus, Outcome
from mailer.domain.windows import SendWindow
from mailer.schemas.mailouts import ByStatus, ErrorsByKind, MailoutOut, MailoutStats
from mailer.store import mailouts as store
from mailer.store import stats as stats_store
from mailer.store.db import create_engine
from mailer.store.direct import DirectStatement, fetch_one
from mailer.store.stats import MailoutCounts, MailoutStatsData
from mailer.store.tables import mailout_message_counts, messages
from tests.conftest import PG_ADMIN_URL, Api
from tests.polling import eventually
from tests.test_mailouts_api import create_mailout

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
SPECS = [
    MailoutSpec(T0, T0 + timedelta(hours=2), "plain", AudienceFilter(), None),
    MailoutSpec(
        T0 + timedelta(microseconds=5),
        T0 + timedelta(days=1, seconds=1),
        'quotes " and \\ and ünïcode ✓',
        AudienceFilter(("912", "900"), ("vip", "new")),
        SendWindow(time(21, 0), time(9, 0, 30)),
    ),
    MailoutSpec(
        T0, T0 + timedelta(hours=1), "window", AudienceFilter((), ("x",)), SendWindow(time(9), time(21))
    ),
]


def _mailout(spec: MailoutSpec, status: MailoutStatus = MailoutStatus.RUNNING) -> Mailout:
    return Mailout(7, spec, status, T0 - timedelta(seconds=1), T0 + timedelta(microseconds=123), None)


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.text)
@pytest.mark.parametrize("status", list(MailoutStatus))
def test_the_mailout_body_is_the_models(spec: MailoutSpec, status: MailoutStatus) -> None:
    mailout = _mailout(spec, status)
    assert orjson.dumps(mailout_data(mailout)) == MailoutOut.from_domain(mailout).model_dump_json().encode()


@pytest.mark.parametrize(
    ("first", "last"), [(None, None), (T0, T0 + timedelta(minutes=3, microseconds=1))], ids=["none", "sent"]
)
def test_the_stats_body_is_the_models(first: datetime | None, last: datetime | None) -> None:
    counts = dict.fromkeys(MessageStatus, 0) | {MessageStatus.SENT: 5, MessageStatus.CANCELLED: 2}
    errors: dict[Outcome, int] = {
        kind: i for i, kind in enumerate(o for o in Outcome if o is not Outcome.SENT)
    }
    data = MailoutStatsData(MailoutCounts(_mailout(SPECS[1]), counts), first, last, 26, errors)
    model = MailoutStats(
        mailout=MailoutOut.from_domain(data.counts.mailout),
        total=data.counts.total,
        by_status=ByStatus(**{status.value: n for status, n in counts.items()}),
        first_sent_at=first,
        last_sent_at=last,
        attempts=data.attempts,
        errors_by_kind=ErrorsByKind(**{kind.value: n for kind, n in errors.items()}),
    )
    assert orjson.dumps(stats_data(data)) == model.model_dump_json().encode()


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[AsyncEngine]:
    # One connection at most (two on PostgreSQL, see create_engine), so that reads in turn share it.
    engine = create_engine(db_url, pool_size=1)
    yield engine
    await engine.dispose()


async def test_a_mailout_reads_the_same_both_ways(db: AsyncEngine) -> None:
    created = [await store.create(db, spec, T0) for spec in SPECS]
    for mailout in created:
        async with db.connect() as conn:
            through_sqlalchemy = await store.read(conn, mailout.id)
        assert await store.get(db, mailout.id) == through_sqlalchemy == mailout
    with pytest.raises(NotFoundError):
        await store.get(db, created[-1].id + 1)


async def test_statistics_ignore_a_status_this_version_does_not_know(api: Api) -> None:
    mailout_id = (await create_mailout(api))["id"]
    async with api.db.begin() as conn:
        row = {"mailout_id": mailout_id, "status": "from-the-future", "n": 4}
        await conn.execute(mailout_message_counts.insert().values(row))
    data = await stats_store.for_mailout(api.db, mailout_id)
    assert data.counts.by_status == dict.fromkeys(MessageStatus, 0)
    assert (data.attempts, data.first_sent_at) == (0, None)
    assert (await api.get(f"/api/mailouts/{mailout_id}/stats")).status == 200


# --- PostgreSQL: what happens to the connection ------------------------------------------------------------

_BACKEND = DirectStatement(select(func.pg_backend_pid().label("pid")))
_DIVIDE = DirectStatement(select((literal(1) / bindparam("divisor")).label("quotient")))
_SLEEP = DirectStatement(select(func.pg_sleep(bindparam("seconds")).label("slept")))


@pytest.fixture
async def pg(pg_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(pg_url, pool_size=1)
    yield engine
    await engine.dispose()


async def _backend(db: AsyncEngine) -> int:
    row = await fetch_one(db, _BACKEND, {})
    assert row is not None
    return int(row["pid"])


async def test_an_error_of_the_statement_keeps_the_connection(pg: AsyncEngine) -> None:
    before = await _backend(pg)
    with pytest.raises(DBAPIError) as raised:
        await fetch_one(pg, _DIVIDE, {"divisor": 0})
    # Raised as SQLAlchemy's execute would, with asyncpg's own error as the cause.
    assert isinstance(raised.value.__cause__, asyncpg.DivisionByZeroError)
    assert not raised.value.connection_invalidated
    assert await _backend(pg) == before


async def test_a_cancel_mid_statement_discards_the_connection(pg: AsyncEngine) -> None:
    before = await _backend(pg)
    read = asyncio.create_task(fetch_one(pg, _SLEEP, {"seconds": 30}))

    async def sleeping() -> bool:
        admin = await asyncpg.connect(PG_ADMIN_URL)
        try:
            state = await admin.fetchval("SELECT state FROM pg_stat_activity WHERE pid = $1", before)
        finally:
            await admin.close()
        return bool(state == "active")

    await eventually(sleeping, what="the read running")
    read.cancel()
    with pytest.raises(asyncio.CancelledError):
        await read
    # The connection may still be inside its statement: it is never handed to the next read.
    assert await _backend(pg) != before


async def _terminate_backends(pg_url: str) -> None:
    database = pg_url.rsplit("/", 1)[1]
    admin = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = $1 AND backend_type = 'client backend' AND pid <> pg_backend_pid()",
            database,
        )

        async def all_gone() -> bool:
            # Client sessions only: an autovacuum worker may come and go on the database meanwhile.
            left = await admin.fetchval(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = $1 AND backend_type = 'client backend'",
                database,
            )
            return bool(left == 0)

        await eventually(all_gone, what="every session of the database gone")
    finally:
        await admin.close()


@pytest.mark.parametrize("route", ["/api/mailouts/{id}", "/api/mailouts/{id}/stats"])
async def test_after_a_restart_one_read_fails_and_the_next_ones_answer(
    api: Api, db_url: str, route: str
) -> None:
    if not db_url.startswith("postgresql"):
        pytest.skip("a restart of the database server: PostgreSQL only")
    path = route.format(id=(await create_mailout(api))["id"])
    # Several pooled connections, all of which the "restart" kills.
    answers = await asyncio.gather(*(api.get(path) for _ in range(6)))
    assert [a.status for a in answers] == [200] * 6
    await _terminate_backends(db_url)

    failed = await api.get(path)
    assert failed.status == 503, await failed.text()
    assert failed.content_type == "application/problem+json"
    assert "Retry-After" in failed.headers
    for _ in range(6):
        assert (await api.get(path)).status == 200


@pytest.mark.parametrize(
    "path", ["/api/mailouts/0", "/api/mailouts/9223372036854775808/stats", "/api/customers/0"]
)
async def test_an_id_the_validation_refuses_is_its_404(api: Api, path: str) -> None:
    resp = await api.get(path)
    assert resp.status == 404
    assert resp.content_type == "application/problem+json"
    body: dict[str, Any] = await resp.json()
    assert body["detail"] == "no such resource"
    assert body["errors"][0]["loc"][0] == "path"


async def test_the_statistics_statement_reads_the_sent_at_index_without_sorting(
    api: Api, db_url: str
) -> None:
    """tests/test_stats_plan.py for the one statement PostgreSQL runs: it never passes through SQLAlchemy's
    execute, whose events that test listens to."""
    if not db_url.startswith("postgresql"):
        pytest.skip("SQLite runs the general statements, whose plans tests/test_stats_plan.py checks")
    mailout_id = (await create_mailout(api))["id"]
    now = datetime.now(UTC)
    rows = [
        {
            "mailout_id": mailout_id,
            "phone": f"7900{n:07d}",
            "timezone": "UTC",
            "status": MessageStatus.SENT if n % 2 else MessageStatus.PENDING,
            "sent_at": now + timedelta(seconds=n) if n % 2 else None,
            "created_at": now,
            "updated_at": now,
        }
        for n in range(4000)
    ]
    # No ANALYZE: the planner sees the table as the engine leaves it right after an activation.
    async with api.db.begin() as conn:
        await conn.execute(messages.insert(), rows)
    args = tuple(stats_store._PG_STATS.pg_args({"mailout_id": mailout_id}))
    async with api.db.connect() as conn:
        plan_rows = (await conn.exec_driver_sql("EXPLAIN " + stats_store._PG_STATS.pg_sql, args)).all()
    plan = "\n".join(row[0] for row in plan_rows)
    assert plan.count("ix_messages_mailout_id_sent_at") == 2, plan
    assert "Sort" not in plan, plan
