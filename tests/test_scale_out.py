"""Three service processes on one PostgreSQL database share a 20,000-message mailout; one is killed with
SIGKILL mid-way. The mailout created through one process starts on all three (LISTEN/NOTIFY), each sends a
share, the survivors take over the dead one's leased messages, and the result is the same as with one
process: everything delivered, at most 2 x `send_concurrency` duplicates, statistics equal to what was
accepted.

Each process talks to its own sandbox, so that the sandboxes' counters tell who sent what; duplicates are
counted over the three sandboxes' per-id counts added together.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from tests.conftest import scratch_postgres
from tests.polling import eventually
from tests.process_support import (
    BASE_SERVICE_ENV,
    Processes,
    Sandbox,
    delivery,
    finished,
    merge_counts,
)

TOTAL = 20_000
KILL_AFTER = TOTAL // 4
PROCESSES = 3
CONCURRENCY = int(BASE_SERVICE_ENV["MAILER_SEND_CONCURRENCY"])
# The bound of docs/reliability.md: requests in flight plus outcomes not yet written, one of each per worker.
DUPLICATES_MAX = 2 * CONCURRENCY
SANDBOX_LATENCY_MS = 5.0
# Every process must have done at least this share of the work before the kill (an even split is a third).
MIN_SHARE = 0.05
# NOTIFY wakes the other processes at once; without it they would find the mailout at a safety re-scan
# (30 s). Anything under this proves the wake-up, with room for a loaded machine.
START_ON_ALL_S = 10.0
DELIVERY_TIMEOUT_S = 120.0


@pytest.fixture(scope="module")
def pg_database() -> Iterator[str]:
    with scratch_postgres("mailer_scale") as url:
        yield url


async def _accepted(sandboxes: list[Sandbox]) -> list[int]:
    return list(await asyncio.gather(*(s.accepted() for s in sandboxes)))


@pytest.mark.timeout(240)
async def test_three_processes_share_a_mailout_and_survive_losing_one(
    procs: Processes, pg_database: str
) -> None:
    sandboxes = [await procs.start_sandbox(latency_ms=SANDBOX_LATENCY_MS, name=f"sandbox{i}") for i in "abc"]
    services = [
        procs.spawn_service(f"service{i}", pg_database, sandbox.url)
        for i, sandbox in zip("abc", sandboxes, strict=True)
    ]
    await asyncio.gather(*(service.wait_ready() for service in services))
    creator, victim, survivor = services
    await creator.import_customers(TOTAL)
    created_at = time.monotonic()
    mailout_id = await creator.create_mailout("scale-out test")

    async def all_started() -> list[int] | None:
        accepted = await _accepted(sandboxes)
        return accepted if all(accepted) else None

    await eventually(all_started, START_ON_ALL_S, "every process sending")
    start_on_all_s = time.monotonic() - created_at

    async def quarter_sent() -> list[int] | None:
        accepted = await _accepted(sandboxes)
        return accepted if sum(accepted) >= KILL_AFTER else None

    await eventually(quarter_sent, DELIVERY_TIMEOUT_S, f"{KILL_AFTER} messages accepted")
    victim.child.kill()
    assert victim.child.wait() == -9
    killed_at = time.monotonic()
    shares = await _accepted(sandboxes)
    assert sum(shares) < TOTAL, "the mailout finished before the kill: make the sandbox slower"

    stats = await eventually(
        lambda: finished(survivor, mailout_id, TOTAL), DELIVERY_TIMEOUT_S, "all delivered"
    )
    finish_s = time.monotonic() - killed_at

    counts = merge_counts(*await asyncio.gather(*(s.counts() for s in sandboxes)))
    result = delivery(counts, stats)
    summary = (
        f"scale-out: every process sending {start_on_all_s:.2f} s after the create; shares at the kill "
        f"{shares}; duplicates {result.duplicates}; finished {finish_s:.1f} s after the kill"
    )
    assert all(share >= MIN_SHARE * sum(shares) for share in shares), shares
    assert result.unique == TOTAL, summary
    assert result.duplicates <= DUPLICATES_MAX, summary
    assert result.stats_sent == result.unique, summary
    # Both survivors kept sending after the kill: no leader, no hand-over.
    after = await _accepted(sandboxes)
    assert after[0] > shares[0], (shares, after)
    assert after[2] > shares[2], (shares, after)
