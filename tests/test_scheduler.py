"""The scheduler on its own, over a fake scan: an actor for every live mailout, a sleep until the next start
(never a poll), an early wake on a change, and a change made during a scan never lost."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from mailer.engine import scheduler as scheduler_module
from mailer.engine.scheduler import Scheduler
from mailer.store.scans import ScanResult

NOW = datetime(2026, 12, 1, 12, tzinfo=UTC)
# Loop turns given to a scheduler that should be asleep: a busy loop would scan many times in them.
IDLE_TURNS = 200


@dataclass
class ScanStore:
    """Answers each scan with `result`; `scanned` is set after every scan, `gate` cleared holds a scan."""

    result: ScanResult = field(default_factory=lambda: ScanResult([], None))
    scans: list[datetime] = field(default_factory=list)
    scanned: asyncio.Event = field(default_factory=asyncio.Event)
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    entered: asyncio.Event = field(default_factory=asyncio.Event)

    async def scan(self, now: datetime) -> ScanResult:
        self.entered.set()
        await self.gate.wait()
        await asyncio.sleep(0)  # a real query always gives the loop a turn
        self.scans.append(now)
        self.scanned.set()
        return self.result

    async def scanned_times(self, count: int) -> None:
        """Until `count` scans in all have been made."""
        async with asyncio.timeout(5):
            while len(self.scans) < count:
                self.scanned.clear()
                await self.scanned.wait()


@dataclass
class Rig:
    store: ScanStore
    scheduler: Scheduler
    ensured: list[int]
    now: list[datetime]


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    store = ScanStore()
    store.gate.set()
    ensured: list[int] = []
    now = [NOW]
    scheduler = Scheduler(store, ensured.append, clock=lambda: now[0])
    rig = Rig(store, scheduler, ensured, now)
    task = asyncio.create_task(scheduler.run())
    yield rig
    task.cancel()
    await asyncio.wait([task])


async def idle() -> None:
    for _ in range(IDLE_TURNS):
        await asyncio.sleep(0)


async def test_every_live_mailout_gets_an_actor_at_each_scan(rig: Rig) -> None:
    await rig.store.scanned_times(1)
    assert rig.ensured == []
    assert rig.store.scans == [NOW]
    rig.store.result = ScanResult([3, 5], None)
    rig.scheduler.wake()
    await rig.store.scanned_times(2)
    assert rig.ensured == [3, 5]
    rig.scheduler.wake()
    await rig.store.scanned_times(3)
    assert rig.ensured == [3, 5, 3, 5], "ensuring is the caller's to make idempotent"


async def test_with_a_start_far_ahead_it_sleeps_without_polling_and_wakes_on_a_change(rig: Rig) -> None:
    await rig.store.scanned_times(1)
    rig.store.result = ScanResult([], NOW + timedelta(hours=1))
    rig.scheduler.wake()
    await rig.store.scanned_times(2)
    await idle()
    assert len(rig.store.scans) == 2, "asleep until the start or a change: no scans in between"
    rig.now[0] = NOW + timedelta(minutes=1)
    rig.scheduler.wake()
    await rig.store.scanned_times(3)
    assert rig.store.scans[2] == NOW + timedelta(minutes=1), "each scan asks at the clock's now"


async def test_a_wake_during_a_scan_makes_the_next_wait_return_at_once(rig: Rig) -> None:
    await rig.store.scanned_times(1)
    rig.store.result = ScanResult([], NOW + timedelta(hours=1))
    rig.store.gate.clear()
    rig.store.entered.clear()
    rig.scheduler.wake()
    async with asyncio.timeout(5):
        await rig.store.entered.wait()
    # A mailout is created while the scan runs (its answer may not include it): the scheduler must look again.
    rig.scheduler.wake()
    rig.store.gate.set()
    await rig.store.scanned_times(3)
    assert len(rig.store.scans) == 3


async def test_a_start_already_due_is_scanned_again_at_once(rig: Rig) -> None:
    # The clock moved past the start the scan reported: the next scan must come without a wake.
    await rig.store.scanned_times(1)
    rig.store.result = ScanResult([], NOW - timedelta(seconds=1))
    rig.scheduler.wake()
    await rig.store.scanned_times(2)
    rig.store.result = ScanResult([8], None)
    await rig.store.scanned_times(len(rig.store.scans) + 1)
    assert rig.ensured == [8]


async def test_the_start_time_bounds_the_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    # A clock on the loop's time, so that the sleep the scheduler picks can be checked against it.
    loop = asyncio.get_running_loop()
    origin_s = loop.time()
    lead_s = 0.05

    def clock() -> datetime:
        return NOW + timedelta(seconds=loop.time() - origin_s)

    store = ScanStore(result=ScanResult([], NOW + timedelta(seconds=lead_s)))
    store.gate.set()
    task = asyncio.create_task(Scheduler(store, lambda _id: None, clock=clock).run())
    try:
        await store.scanned_times(1)
        store.result = ScanResult([], None)
        await store.scanned_times(2)
        assert store.scans[1] >= NOW + timedelta(seconds=lead_s), "not before the start"
    finally:
        task.cancel()
        await asyncio.wait([task])


async def test_with_nothing_ahead_the_safety_rescan_still_comes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scheduler_module, "SAFETY_RESCAN_S", 0.01)
    store = ScanStore()
    store.gate.set()
    task = asyncio.create_task(Scheduler(store, lambda _id: None, clock=lambda: NOW).run())
    try:
        await store.scanned_times(1)
        await store.scanned_times(2)
        assert len(store.scans) >= 2
    finally:
        task.cancel()
        await asyncio.wait([task])
