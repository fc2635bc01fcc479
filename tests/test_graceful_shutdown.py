"""SIGTERM mid-mailout, with every request in flight hanging at the provider: the process cuts them when
the grace period is over and exits within it (plus the interpreter's own teardown); started again, it sends
everything that was left, and the cut requests (which the provider never took) are not duplicates."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.polling import eventually
from tests.process_support import (
    BASE_SERVICE_ENV,
    Processes,
    delivery,
    finished,
)

TOTAL = 8_000
SIGTERM_AFTER = TOTAL // 4
CONCURRENCY = int(BASE_SERVICE_ENV["MAILER_SEND_CONCURRENCY"])
GRACE_S = 2.0
# Past the grace period: closing the database pool, the HTTP server and the interpreter itself.
EXIT_SLACK_S = 3.0
SANDBOX_LATENCY_MS = 5.0
DELIVERY_TIMEOUT_S = 120.0


@pytest.mark.timeout(240)
async def test_sigterm_exits_within_the_grace_period_and_nothing_is_lost(
    procs: Processes, tmp_path: Path
) -> None:
    database_url = f"sqlite:///{tmp_path / 'shutdown.db'}"
    env = {"MAILER_SHUTDOWN_GRACE_S": str(GRACE_S)}
    sandbox = await procs.start_sandbox(latency_ms=SANDBOX_LATENCY_MS)
    first = await procs.start_service("first", database_url, sandbox.url, **env)
    await first.import_customers(TOTAL)
    mailout_id = await first.create_mailout("shutdown test")

    async def quarter_sent() -> int:
        accepted = await sandbox.accepted()
        return accepted if accepted >= SIGTERM_AFTER else 0

    await eventually(quarter_sent, DELIVERY_TIMEOUT_S, f"{SIGTERM_AFTER} messages accepted")
    # From now on the provider answers nothing: only the grace period can end the requests in flight.
    await sandbox.set_faults(hang_rate=1.0)

    async def all_hanging() -> int:
        hung = int((await sandbox.stats())["hung"])
        return hung if hung >= CONCURRENCY else 0

    await eventually(all_hanging, DELIVERY_TIMEOUT_S, "every sender waiting on a hung request")
    first.child.terminate()
    terminated_at = time.monotonic()
    exit_code = await first.child.wait_exit(GRACE_S + EXIT_SLACK_S + 5)
    exit_s = time.monotonic() - terminated_at
    assert exit_code == 0, first.child.log_tail()
    assert exit_s <= GRACE_S + EXIT_SLACK_S, f"took {exit_s:.1f} s to exit"

    await sandbox.set_faults(hang_rate=0.0)
    accepted_before = await sandbox.accepted()
    second = await procs.start_service("second", database_url, sandbox.url, **env)
    stats = await eventually(lambda: finished(second, mailout_id, TOTAL), DELIVERY_TIMEOUT_S, "all sent")

    result = delivery(await sandbox.counts(), stats)
    summary = (
        f"SIGTERM: exited {exit_s:.1f} s after the signal (grace {GRACE_S} s); accepted before the restart "
        f"{accepted_before}; duplicates {result.duplicates}; cut requests {stats['errors_by_kind']['cut']}"
    )
    assert result.unique == TOTAL, summary
    assert result.stats_sent == result.unique, summary
    # The requests cut at shutdown never reached the provider's books: nothing was taken twice.
    assert result.duplicates == 0, summary
    assert stats["errors_by_kind"]["cut"] >= CONCURRENCY, summary
