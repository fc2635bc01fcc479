"""kill -9 a service process a quarter into a 20,000-message mailout, start it again on the same database:
every message is delivered, the sandbox sees at most 2 x `send_concurrency` duplicates (what was in flight
plus what was sent but not yet recorded), and the statistics say exactly what the sandbox accepted. On
PostgreSQL and on SQLite (where a second process is refused)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import scratch_postgres
from tests.polling import eventually
from tests.process_support import (
    BASE_SERVICE_ENV,
    Processes,
    delivery,
    finished,
)

TOTAL = 20_000
KILL_AFTER = TOTAL // 4
CONCURRENCY = int(BASE_SERVICE_ENV["MAILER_SEND_CONCURRENCY"])
# The bound of docs/reliability.md: requests in flight plus outcomes not yet written, one of each per worker.
DUPLICATES_MAX = 2 * CONCURRENCY
# A few milliseconds per request: the mailout lasts seconds, long enough to kill it a quarter of the way.
SANDBOX_LATENCY_MS = 5.0
# Generous: a loaded CI machine with two cores runs this next to the rest of the suite.
DELIVERY_TIMEOUT_S = 120.0


@pytest.fixture(scope="module")
def pg_database() -> Iterator[str]:
    with scratch_postgres("mailer_crash") as url:
        yield url


@pytest.fixture(params=["postgresql", "sqlite"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'crash.db'}"
    url: str = request.getfixturevalue("pg_database")
    return url


@pytest.mark.timeout(240)
async def test_kill_9_mid_mailout_then_restart_delivers_everything(
    procs: Processes, database_url: str
) -> None:
    sandbox = await procs.start_sandbox(latency_ms=SANDBOX_LATENCY_MS)
    first = await procs.start_service("first", database_url, sandbox.url)
    await first.import_customers(TOTAL)
    mailout_id = await first.create_mailout()

    async def quarter_sent() -> int:
        accepted = await sandbox.accepted()
        return accepted if accepted >= KILL_AFTER else 0

    await eventually(quarter_sent, DELIVERY_TIMEOUT_S, f"{KILL_AFTER} messages accepted")
    first.child.kill()
    assert first.child.wait() == -9
    killed_at = time.monotonic()
    accepted_at_kill = await sandbox.accepted()
    assert accepted_at_kill < TOTAL, "the mailout finished before the kill: make the sandbox slower"

    second = await procs.start_service("second", database_url, sandbox.url)

    async def resumed() -> bool:
        return await sandbox.accepted() > accepted_at_kill

    await eventually(resumed, DELIVERY_TIMEOUT_S, "sending resumed after the restart")
    resume_s = time.monotonic() - killed_at
    await eventually(lambda: finished(second, mailout_id, TOTAL), DELIVERY_TIMEOUT_S, "all delivered")

    result = delivery(await sandbox.counts(), await second.stats(mailout_id))
    summary = (
        f"kill -9 ({database_url.split(':')[0]}): accepted at kill {accepted_at_kill}, "
        f"duplicates {result.duplicates}, resumed {resume_s:.1f} s after the kill"
    )
    assert result.unique == TOTAL, summary
    assert result.duplicates <= DUPLICATES_MAX, summary
    # Exactly-once accounting: one `sent` per message the provider took, whatever it took twice.
    assert result.stats_sent == result.unique, summary
    assert result.by_status["sent"] == TOTAL, summary


async def test_a_second_process_on_one_sqlite_file_is_refused(procs: Processes, tmp_path: Path) -> None:
    sandbox = await procs.start_sandbox()
    url = f"sqlite:///{tmp_path / 'one.db'}"
    first = await procs.start_service("owner", url, sandbox.url)
    second = procs.spawn_service("intruder", url, sandbox.url)
    assert await second.child.wait_exit(30) == 1
    assert "another mailer process is using the SQLite database" in second.child.log_tail()
    assert await first.ready_status() == 200
