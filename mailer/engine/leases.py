"""The lease keeper: renews the leases of the messages this process holds, so none is taken back while alive.

A claimed message carries `lease_until`; when it passes, lease recovery (in any process) returns the message
to `pending` and it is sent again. That is right after a crash and wrong while the claiming process is alive
and merely slow: a request with a long timeout, a queue behind a slow provider, a recorder waiting for the
database. So every `lease_s / RENEWALS_PER_LEASE` this actor pushes the leases of everything the sender pool
holds (queued, in flight, awaiting its write) one lease further, in one UPDATE per round. A process that dies
stops renewing, and its messages come back within one lease.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection, Sequence
from datetime import datetime, timedelta
from typing import Protocol

import structlog

from mailer.domain.clock import Clock, utc_now
from mailer.store.outage import is_disconnect

log = structlog.get_logger(__name__)

# Three renewals per lease: a round delayed by a busy event loop or lost to a dropped connection still
# leaves two more chances before the lease runs out.
RENEWALS_PER_LEASE = 3


class LeaseStore(Protocol):
    """The one query the keeper needs."""

    async def renew_leases(self, ids: Sequence[int], until: datetime) -> int: ...


class LeaseKeeper:
    """Renews, every `lease_s / 3`, the leases of the message ids `held()` returns."""

    def __init__(
        self,
        store: LeaseStore,
        held: Callable[[], Collection[int]],
        lease_s: float,
        *,
        clock: Clock = utc_now,
    ) -> None:
        self._store = store
        self._held = held
        self._lease = timedelta(seconds=lease_s)
        self._interval_s = lease_s / RENEWALS_PER_LEASE
        self._clock = clock

    async def run(self) -> None:
        """Renew until cancelled; while the database is away, each round logs and the next tries again."""
        while True:
            await asyncio.sleep(self._interval_s)
            try:
                await self.renew_once()
            except Exception as exc:
                if not is_disconnect(exc):
                    raise
                # Not a crash: the database is away (/readyz says so). Escalating supervisor backoff would
                # delay the renewal that matters most, the first one after it comes back.
                log.warning("lease renewal failed; retrying next round", error=f"{type(exc).__name__}: {exc}")

    async def renew_once(self) -> int:
        """One round: how many leases were renewed."""
        ids = sorted(set(self._held()))
        if not ids:
            return 0
        return await self._store.renew_leases(ids, self._clock() + self._lease)
