"""The supervisor: a crashed child is logged and restarted with backoff, reported down meanwhile."""

from __future__ import annotations

import asyncio

import pytest

from mailer.engine.supervisor import Supervisor
from tests.polling import eventually


class FlakyActor:
    """Crashes `crashes` times, then runs until told to finish."""

    def __init__(self, crashes: int) -> None:
        self.crashes_left = crashes
        self.runs = 0
        self.finish = asyncio.Event()

    async def run(self) -> None:
        self.runs += 1
        if self.crashes_left:
            self.crashes_left -= 1
            raise RuntimeError("boom")
        await self.finish.wait()


async def test_a_crashed_actor_is_restarted() -> None:
    supervisor = Supervisor(restart_base_s=0.01, restart_cap_s=0.05)
    actor = FlakyActor(crashes=3)
    supervisor.spawn("flaky", actor.run)

    async def running_again() -> bool:
        return actor.runs == 4 and supervisor.is_running("flaky") and not supervisor.down()

    await eventually(running_again, timeout_s=2, what="restarted")
    assert supervisor.crashes("flaky") == 3
    assert await supervisor.health_check() is None
    actor.finish.set()
    await supervisor.wait("flaky")
    assert not supervisor.is_running("flaky")


async def test_a_child_down_fails_the_health_check() -> None:
    supervisor = Supervisor(restart_base_s=5.0)
    actor = FlakyActor(crashes=1)
    supervisor.spawn("flaky", actor.run)

    async def reported() -> str | None:
        return await supervisor.health_check()

    problem = await eventually(reported, timeout_s=2, what="reported down")
    assert "flaky" in problem
    assert "RuntimeError: boom" in problem
    await supervisor.stop(0)
    assert not supervisor.is_running("flaky")


async def test_stop_waits_for_the_grace_period_then_cancels() -> None:
    supervisor = Supervisor()
    quick, slow = asyncio.Event(), asyncio.Event()

    async def finishes() -> None:
        await asyncio.sleep(0.01)
        quick.set()

    async def never() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            slow.set()
            raise

    supervisor.spawn("quick", finishes)
    supervisor.spawn("slow", never)
    await supervisor.stop(0.1)
    assert quick.is_set()
    assert slow.is_set()
    assert supervisor.names() == []


async def test_duplicate_names_are_refused() -> None:
    supervisor = Supervisor()
    actor = FlakyActor(crashes=0)
    supervisor.spawn("one", actor.run)
    with pytest.raises(RuntimeError, match="already"):
        supervisor.spawn("one", actor.run)
    await supervisor.stop(0)
