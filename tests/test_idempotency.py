"""Idempotency-Key on every create: the store's decisions, the API on both databases, and two real processes
on one PostgreSQL answering concurrent retries with exactly one mailout."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from mailer.api import idempotency
from mailer.api.idempotency import HEADER, LIFETIMES, REPLAYED_HEADER, check_key, fingerprint
from mailer.domain.errors import InvalidError
from mailer.store import idempotency as store
from mailer.store.db import create_engine
from mailer.store.tables import idempotency_keys, mailouts
from tests.conftest import ADMIN_PASSWORD, Api, scratch_postgres
from tests.polling import eventually
from tests.process_support import Processes, Service

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
OK = store.StoredResponse(201, "application/json; charset=utf-8", b'{"id": 1}')
JSON = "application/json"


def mailout_body(text: str = "hello") -> bytes:
    now = datetime.now(UTC)
    return json.dumps(
        {
            "start_at": (now + timedelta(hours=1)).isoformat(),
            "end_at": (now + timedelta(hours=2)).isoformat(),
            "text": text,
        }
    ).encode()


# --- pure parts ------------------------------------------------------------------------------------------


def test_fingerprint_tells_requests_apart_by_every_part() -> None:
    base = fingerprint("POST", "/api/mailouts/", JSON, b"{}")
    assert base == fingerprint("POST", "/api/mailouts/", JSON, b"{}")
    assert base != fingerprint("PUT", "/api/mailouts/", JSON, b"{}")
    assert base != fingerprint("POST", "/api/customers/", JSON, b"{}")
    assert base != fingerprint("POST", "/api/mailouts/", "text/csv", b"{}")
    assert base != fingerprint("POST", "/api/mailouts/", JSON, b"{ }")
    # Lengths are part of the hash: moving bytes from one part to the next is another request.
    assert fingerprint("POST", "/a", "b", b"") != fingerprint("POST", "/ab", "", b"")


def test_key_is_one_to_255_characters() -> None:
    assert check_key("k" * 255) == "k" * 255
    assert check_key("a b~!") == "a b~!"
    for bad in ("", "k" * 256, " k", "k ", "kéy", "k\tk"):
        with pytest.raises(InvalidError) as caught:
            check_key(bad)
        assert caught.value.errors[0].loc == ("header", HEADER)
        assert "such as" in caught.value.errors[0].msg


def test_every_create_is_covered() -> None:
    assert {path for _, path in idempotency.ROUTES} >= {
        "/api/customers/",
        "/api/customers/import",
        "/api/mailouts/",
        "/api/mailouts/{id}/messages",
    }


# --- the store, on both databases ------------------------------------------------------------------------


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[AsyncEngine]:
    db = create_engine(db_url)
    try:
        yield db
    finally:
        await db.dispose()


async def test_first_runs_then_in_progress_then_replay(db: AsyncEngine) -> None:
    assert (await store.begin(db, "admin", "k", "fp", T0, LIFETIMES)).verdict is store.Verdict.RUN
    again = await store.begin(db, "admin", "k", "fp", T0 + timedelta(seconds=1), LIFETIMES)
    assert again.verdict is store.Verdict.IN_PROGRESS
    await store.finish(db, "admin", "k", OK)
    replay = await store.begin(db, "admin", "k", "fp", T0 + timedelta(hours=23), LIFETIMES)
    assert replay == store.Decision(store.Verdict.REPLAY, OK)


async def test_another_body_is_a_mismatch_running_or_done(db: AsyncEngine) -> None:
    await store.begin(db, "admin", "k", "fp", T0, LIFETIMES)
    assert (await store.begin(db, "admin", "k", "other", T0, LIFETIMES)).verdict is store.Verdict.MISMATCH
    await store.finish(db, "admin", "k", OK)
    assert (await store.begin(db, "admin", "k", "other", T0, LIFETIMES)).verdict is store.Verdict.MISMATCH


async def test_keys_are_per_user(db: AsyncEngine) -> None:
    await store.begin(db, "admin", "k", "fp", T0, LIFETIMES)
    await store.finish(db, "admin", "k", OK)
    assert (await store.begin(db, "bob", "k", "other", T0, LIFETIMES)).verdict is store.Verdict.RUN
    long_a, long_b = "a" * 300, "a" * 299 + "b"
    assert (await store.begin(db, long_a, "k", "fp", T0, LIFETIMES)).verdict is store.Verdict.RUN
    assert (await store.begin(db, long_b, "k", "fp", T0, LIFETIMES)).verdict is store.Verdict.RUN


async def test_a_lapsed_lease_lets_exactly_one_retry_take_over(db: AsyncEngine) -> None:
    await store.begin(db, "admin", "k", "fp", T0, LIFETIMES)
    # The first request's process died: nothing was stored, and the lease has run out.
    later = T0 + LIFETIMES.lease + timedelta(seconds=1)
    verdicts = await asyncio.gather(
        *(store.begin(db, "admin", "k", "fp", later, LIFETIMES) for _ in range(5))
    )
    assert [v.verdict for v in verdicts].count(store.Verdict.RUN) == 1
    assert {v.verdict for v in verdicts} == {store.Verdict.RUN, store.Verdict.IN_PROGRESS}


async def test_an_expired_key_is_free_again(db: AsyncEngine) -> None:
    await store.begin(db, "admin", "k", "fp", T0, LIFETIMES)
    await store.finish(db, "admin", "k", OK)
    # Ignored once expired, even before any purge: another body may use it.
    expired = T0 + LIFETIMES.ttl
    assert (await store.begin(db, "admin", "k", "new", expired, LIFETIMES)).verdict is store.Verdict.RUN


async def test_purge_deletes_expired_keys_only(db: AsyncEngine) -> None:
    await store.begin(db, "admin", "old", "fp", T0, LIFETIMES)
    await store.finish(db, "admin", "old", OK)
    await store.begin(db, "admin", "young", "fp", T0 + timedelta(hours=12), LIFETIMES)
    assert await store.purge(db, T0 + LIFETIMES.ttl) == 1
    async with db.connect() as conn:
        left = (await conn.execute(select(idempotency_keys.c.idem_key))).scalars().all()
    assert left == ["young"]


async def test_release_frees_a_running_key_but_never_a_stored_one(db: AsyncEngine) -> None:
    await store.begin(db, "admin", "k", "fp", T0, LIFETIMES)
    await store.release(db, "admin", "k")
    assert (await store.begin(db, "admin", "k", "other", T0, LIFETIMES)).verdict is store.Verdict.RUN
    await store.finish(db, "admin", "k", OK)
    await store.release(db, "admin", "k")
    assert (await store.begin(db, "admin", "k", "fp", T0, LIFETIMES)).verdict is store.Verdict.MISMATCH


# --- the API, on both databases --------------------------------------------------------------------------


async def _count_mailouts(api: Api) -> int:
    async with api.db.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(mailouts))).scalar_one())


async def _post(api: Api, path: str, body: bytes, key: str, content_type: str = JSON) -> Any:
    return await api.post(path, data=body, headers={HEADER: key, "Content-Type": content_type})


async def test_a_retried_mailout_create_answers_the_first_response(api: Api) -> None:
    body = mailout_body()
    first = await _post(api, "/api/mailouts/", body, "retry-1")
    assert first.status == 201, await first.text()
    second = await _post(api, "/api/mailouts/", body, "retry-1")
    assert second.status == 201
    assert await second.read() == await first.read()
    assert second.headers[REPLAYED_HEADER] == "true"
    assert REPLAYED_HEADER not in first.headers
    assert second.content_type == first.content_type
    assert await _count_mailouts(api) == 1
    # Another key is another request.
    assert (await _post(api, "/api/mailouts/", body, "retry-2")).status == 201
    assert await _count_mailouts(api) == 2


async def test_the_same_key_with_another_body_is_422_and_creates_nothing(api: Api) -> None:
    assert (await _post(api, "/api/mailouts/", mailout_body("a"), "k")).status == 201
    other = await _post(api, "/api/mailouts/", mailout_body("b"), "k")
    assert other.status == 422
    problem = await other.json()
    assert problem["errors"][0]["loc"] == ["header", HEADER]
    assert await _count_mailouts(api) == 1


async def test_a_key_whose_first_request_runs_is_409(api: Api) -> None:
    body = mailout_body()
    # As if another process were running the first request right now.
    now = datetime.now(UTC)
    print_ = fingerprint("POST", "/api/mailouts/", JSON, body)
    await store.begin(api.db, "admin", "busy", print_, now, LIFETIMES)
    resp = await _post(api, "/api/mailouts/", body, "busy")
    assert resp.status == 409
    assert resp.content_type == "application/problem+json"
    assert await _count_mailouts(api) == 0


async def test_a_key_left_by_a_crashed_process_runs_once_its_lease_lapsed(api: Api) -> None:
    body = mailout_body()
    print_ = fingerprint("POST", "/api/mailouts/", JSON, body)
    crashed_at = datetime.now(UTC) - LIFETIMES.lease - timedelta(seconds=1)
    await store.begin(api.db, "admin", "orphan", print_, crashed_at, LIFETIMES)
    resp = await _post(api, "/api/mailouts/", body, "orphan")
    assert resp.status == 201
    replay = await _post(api, "/api/mailouts/", body, "orphan")
    assert replay.headers[REPLAYED_HEADER] == "true"
    assert await _count_mailouts(api) == 1


async def test_customer_create_and_its_alias_replay(api: Api) -> None:
    body = b'{"phone": "79001234567"}'
    first = await _post(api, "/api/customers/", body, "c")
    assert first.status == 201
    assert (await _post(api, "/api/customers/", body, "c")).headers[REPLAYED_HEADER] == "true"
    # Without a key the same body is a new attempt: the phone exists, 409.
    assert (await api.post("/api/customers/", data=body, headers={"Content-Type": JSON})).status == 409
    # The path is part of the request: the alias without the slash is another request for the key.
    assert (await _post(api, "/api/customers", body, "c")).status == 422


async def test_import_replays_and_the_view_still_reads_the_whole_body(api: Api) -> None:
    ndjson = b'{"phone": "79001234567"}\n{"phone": "79001234568"}\n'
    first = await _post(api, "/api/customers/import", ndjson, "imp", "application/x-ndjson")
    assert first.status == 200, await first.text()
    assert (await first.json())["created"] == 2, await first.text()
    second = await _post(api, "/api/customers/import", ndjson, "imp", "application/x-ndjson")
    assert second.headers[REPLAYED_HEADER] == "true"
    assert await second.json() == await first.json()
    csv = b"phone\n79001234569\n"
    assert (await _post(api, "/api/customers/import", csv, "imp", "text/csv")).status == 422
    fresh = await _post(api, "/api/customers/import", csv, "imp-csv", "text/csv")
    assert (await fresh.json())["created"] == 1


async def test_adding_a_message_replays_and_a_failure_releases_the_key(api: Api) -> None:
    customer = await (await api.post("/api/customers/", json={"phone": "79001234567"})).json()
    mailout = await (
        await api.post("/api/mailouts/", data=mailout_body(), headers={"Content-Type": JSON})
    ).json()
    path = f"/api/mailouts/{mailout['id']}/messages"
    body = json.dumps({"customer_id": customer["id"]}).encode()
    first = await _post(api, path, body, "m")
    assert first.status == 201, await first.text()
    assert await (await _post(api, path, body, "m")).read() == await first.read()
    # An unknown mailout raises in the view: nothing was created and the key is not kept.
    missing = await _post(api, "/api/mailouts/999999/messages", body, "gone")
    assert missing.status == 404
    async with api.db.connect() as conn:
        keys = (await conn.execute(select(idempotency_keys.c.idem_key))).scalars().all()
    assert sorted(keys) == ["m"]


async def test_a_refused_create_keeps_no_key_so_the_corrected_retry_runs(api: Api) -> None:
    refused = await _post(api, "/api/mailouts/", b'{"text": "no dates"}', "fix-me")
    assert refused.status == 422
    assert REPLAYED_HEADER not in refused.headers
    corrected = await _post(api, "/api/mailouts/", mailout_body(), "fix-me")
    assert corrected.status == 201
    assert await _count_mailouts(api) == 1


async def test_a_bad_key_is_422_and_the_header_is_ignored_elsewhere(api: Api) -> None:
    resp = await _post(api, "/api/mailouts/", mailout_body(), "k" * 256)
    assert resp.status == 422
    assert (await resp.json())["errors"][0]["loc"] == ["header", HEADER]
    # Not a create: the header changes nothing.
    listing = await api.get("/api/mailouts/", headers={HEADER: "k"})
    assert listing.status == 200
    assert REPLAYED_HEADER not in (await api.get("/api/mailouts/", headers={HEADER: "k"})).headers
    assert await _count_mailouts(api) == 0


async def test_no_token_is_401_before_any_key_is_taken(api: Api) -> None:
    resp = await api.client.post(
        "/api/mailouts/", data=mailout_body(), headers={HEADER: "k", "Content-Type": JSON}
    )
    assert resp.status == 401
    async with api.db.connect() as conn:
        assert (await conn.execute(select(func.count()).select_from(idempotency_keys))).scalar_one() == 0


# --- two processes, one PostgreSQL -----------------------------------------------------------------------

RETRIES_PER_PROCESS = 8
SETTLE_TIMEOUT_S = 30.0


@pytest.fixture
def pg_database() -> Iterator[str]:
    with scratch_postgres("mailer_idem") as url:
        yield url


async def _token(service: Service, session: aiohttp.ClientSession) -> str:
    form = {"username": "admin", "password": ADMIN_PASSWORD}
    async with session.post(f"{service.url}/auth/token", data=form) as resp:
        assert resp.status == 200
        return str((await resp.json())["access_token"])


@pytest.mark.timeout(180)
async def test_concurrent_retries_on_two_processes_create_one_mailout(
    procs: Processes, pg_database: str
) -> None:
    sandbox = await procs.start_sandbox()
    services = [procs.spawn_service(f"service{i}", pg_database, sandbox.url) for i in "ab"]
    for service in services:
        await service.wait_ready()
    body = mailout_body("only once")
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        token = await _token(services[0], session)
        headers = {"Authorization": f"Bearer {token}", HEADER: "one-mailout", "Content-Type": JSON}

        async def post(service: Service) -> tuple[int, bytes]:
            async with session.post(f"{service.url}/api/mailouts/", data=body, headers=headers) as resp:
                return resp.status, await resp.read()

        burst = await asyncio.gather(*(post(s) for s in services for _ in range(RETRIES_PER_PROCESS)))
        statuses = [status for status, _ in burst]
        assert set(statuses) <= {201, 409}, statuses
        created = {payload for status, payload in burst if status == 201}

        async def settled() -> set[bytes] | None:
            # A client that got 409 retries until the first request's answer is stored.
            answers = await asyncio.gather(*(post(s) for s in services))
            if any(status != 201 for status, _ in answers):
                return None
            return {payload for _, payload in answers}

        replays = await eventually(settled, SETTLE_TIMEOUT_S, "every retry answered 201")
        assert len(created | replays) == 1, created | replays
        async with session.get(
            f"{services[1].url}/api/mailouts/", headers={"Authorization": f"Bearer {token}"}
        ) as resp:
            listing = await resp.json()
    assert [m["text"] for m in listing["items"]] == ["only once"]


async def test_migration_0006_creates_the_table_as_declared(db: AsyncEngine) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from mailer.store.tables import metadata

    def diff(sync_conn: Any) -> list[Any]:
        found = compare_metadata(MigrationContext.configure(sync_conn), metadata)
        return [d for d in found if "idempotency_keys" in repr(d)]

    async with db.connect() as conn:
        assert await conn.run_sync(diff) == []
