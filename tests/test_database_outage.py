"""PostgreSQL goes away mid-mailout: every session of the service's database is terminated, again and again
for a few seconds (what a restart looks like from the client side). /readyz answers 503 meanwhile, the pool
reconnects, the supervisor restarts what failed, and sending resumes by itself: nothing is lost, and the
statistics say exactly what the sandbox accepted."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from tests.conftest import scratch_postgres
from tests.polling import eventually
from tests.process_support import (
    POLL_S,
    Processes,
    Service,
    database_name,
    delivery,
    finished,
    terminate_backends_for,
)

TOTAL = 10_000
OUTAGE_AFTER = TOTAL // 5
OUTAGE_S = 3.0
SANDBOX_LATENCY_MS = 5.0
# Sending must be back well within this after the database is: a few supervisor restarts and one lease.
RESUME_TIMEOUT_S = 30.0
DELIVERY_TIMEOUT_S = 120.0
# New sends after the outage, beyond what was in flight or queued when it ended: the engine claims again.
RESUMED_SENDS = 200


@pytest.fixture(scope="module")
def pg_database() -> Iterator[str]:
    with scratch_postgres("mailer_outage") as url:
        yield url


async def _watch_readiness(service: Service, seen: set[int | None], stop: asyncio.Event) -> None:
    while not stop.is_set():
        seen.add(await service.ready_status())
        await asyncio.sleep(POLL_S)  # a sampling period, not synchronisation


@pytest.mark.timeout(240)
async def test_sending_resumes_by_itself_after_the_database_comes_back(
    procs: Processes, pg_database: str
) -> None:
    sandbox = await procs.start_sandbox(latency_ms=SANDBOX_LATENCY_MS)
    service = await procs.start_service("service", pg_database, sandbox.url)
    await service.import_customers(TOTAL)
    mailout_id = await service.create_mailout("outage test")

    async def started() -> int:
        accepted = await sandbox.accepted()
        return accepted if accepted >= OUTAGE_AFTER else 0

    await eventually(started, DELIVERY_TIMEOUT_S, f"{OUTAGE_AFTER} messages accepted")

    seen: set[int | None] = set()
    stop_watching = asyncio.Event()
    watcher = asyncio.create_task(_watch_readiness(service, seen, stop_watching))
    try:
        killed = await terminate_backends_for(database_name(pg_database), OUTAGE_S)
        back_at = time.monotonic()
        accepted_when_back = await sandbox.accepted()
        ready_s = await service.wait_ready(RESUME_TIMEOUT_S)
    finally:
        stop_watching.set()
        await watcher
    assert service.child.alive(), service.child.log_tail()
    assert killed > 0

    async def resumed() -> bool:
        return await sandbox.accepted() >= accepted_when_back + RESUMED_SENDS

    await eventually(resumed, RESUME_TIMEOUT_S, "sending resumed")
    resume_s = time.monotonic() - back_at
    stats = await eventually(lambda: finished(service, mailout_id, TOTAL), DELIVERY_TIMEOUT_S, "all sent")

    result = delivery(await sandbox.counts(), stats)
    summary = (
        f"database outage: {killed} sessions killed in {OUTAGE_S} s; /readyz saw {sorted(map(str, seen))}; "
        f"ready {ready_s:.1f} s and {RESUMED_SENDS} new sends {resume_s:.1f} s after the database was back; "
        f"duplicates {result.duplicates}"
    )
    assert 503 in seen, f"/readyz never said 503 during the outage: {seen}"
    assert result.unique == TOTAL, summary
    assert result.stats_sent == result.unique, summary
