"""The scheduler: sleeps until the next start, wakes early on a change, starts an actor per live mailout."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from typing import Protocol

import structlog

from mailer.domain.clock import Clock, utc_now
from mailer.store.scans import ScanResult

log = structlog.get_logger(__name__)

# A slow safety re-scan: catches a mailout whose wake-up was lost (another process without NOTIFY, a clock
# jump). One cheap indexed query per 30 s; starts and changes never wait for it.
SAFETY_RESCAN_S = 30.0


class ScanStore(Protocol):
    """The one query the scheduler needs: the mailouts that need an actor now, and the next start."""

    async def scan(self, now: datetime) -> ScanResult: ...


class Scheduler:
    """Makes sure every live mailout has an actor in this process, and that due ones start on time."""

    def __init__(
        self,
        store: ScanStore,
        ensure_actor: Callable[[int], None],
        *,
        clock: Clock = utc_now,
    ) -> None:
        self._store = store
        self._ensure_actor = ensure_actor
        self._clock = clock
        self._wake = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        while True:
            # Cleared before the scan: a change made during it wakes the next wait at once.
            self._wake.clear()
            now = self._clock()
            scan = await self._store.scan(now)
            for mailout_id in scan.active_ids:
                self._ensure_actor(mailout_id)
            delay_s = SAFETY_RESCAN_S
            if scan.next_start_at is not None:
                # The actor's conditional activation refuses to start early, so waking early is harmless;
                # the loop just sleeps the rest.
                delay_s = min(delay_s, (scan.next_start_at - self._clock()).total_seconds())
            if delay_s > 0:
                try:
                    async with asyncio.timeout(delay_s):
                        await self._wake.wait()
                except TimeoutError:
                    pass
