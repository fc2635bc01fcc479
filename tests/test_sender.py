"""The sender pool on its own: a fake provider, the real recorder over an in-memory write. Holds belong to one
live mailout (never to an id), and sends not yet recorded never exceed 2 x the concurrency."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from mailer.domain.breaker import CircuitBreaker
from mailer.domain.retry import RetryPolicy
from mailer.domain.sending import ClaimedMessage, MailoutPlan, MessageOutcome
from mailer.domain.statuses import MailoutStatus, MessageStatus, Outcome
from mailer.engine.attempt import SenderConfig
from mailer.engine.jobs import LiveMailout, SendJob
from mailer.engine.recorder import Recorder
from mailer.engine.sender import UNRECORDED_PER_WORKER, SenderPool
from mailer.provider.client import SendResult

CONCURRENCY = 4
NOW = datetime(2026, 12, 1, 12, tzinfo=UTC)


class FakeProvider:
    """Answers every send at once with 200 OK, remembering the ids."""

    def __init__(self) -> None:
        self.sent: list[int] = []
        # Set once `watch_for` sends have been made.
        self.watch_for = 0
        self.reached = asyncio.Event()

    def url_for(self, msg_id: int) -> str:
        return f"http://provider.invalid/send/{msg_id}"

    async def send(self, msg_id: int, phone: str, text: str, timeout_s: float) -> SendResult:
        self.sent.append(msg_id)
        if len(self.sent) >= self.watch_for:
            self.reached.set()
        return SendResult(Outcome.SENT, 200, 0.001, None, None)


@dataclass
class Store:
    """The recorder's write: outcomes kept in memory; `gate` cleared makes every write wait."""

    written: list[MessageOutcome] = field(default_factory=list)
    gate: asyncio.Event = field(default_factory=asyncio.Event)

    async def write(self, outcomes: Sequence[MessageOutcome], _now: datetime) -> None:
        await self.gate.wait()
        self.written.extend(outcomes)

    def statuses(self) -> dict[int, MessageStatus]:
        return {o.message_id: o.status for o in self.written}


@dataclass
class Rig:
    pool: SenderPool
    provider: FakeProvider
    store: Store
    recorder: Recorder


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    store = Store()
    store.gate.set()
    recorder = Recorder(store.write, lambda: NOW)
    provider = FakeProvider()
    config = SenderConfig(
        concurrency=CONCURRENCY,
        timeout_s=5.0,
        rate_per_s=0.0,
        retry=RetryPolicy(0.01, 0.1, 3),
        breaker_cooldown_s=1.0,
        auth_probe_interval_s=1.0,
    )
    breaker = CircuitBreaker(1000, 1.0, 10, 1.0, lambda: 0.0)
    pool = SenderPool(
        provider,
        recorder,
        breaker,
        config,
        on_auth_pause=lambda _: None,
        on_auth_resume=lambda: None,
        clock=lambda: NOW,
    )
    tasks = [asyncio.create_task(recorder.run())]
    tasks += [asyncio.create_task(pool.run_worker()) for _ in range(CONCURRENCY)]
    yield Rig(pool, provider, store, recorder)
    store.gate.set()
    await pool.drain(0)
    for task in tasks:
        task.cancel()
    await asyncio.wait(tasks)


def plan(mailout_id: int, created_at: datetime) -> MailoutPlan:
    return MailoutPlan(
        id=mailout_id,
        status=MailoutStatus.RUNNING,
        start_at=NOW - timedelta(hours=1),
        end_at=NOW + timedelta(hours=1),
        text="hello",
        window=None,
        operator_codes=(),
        tags=(),
        activated_at=NOW - timedelta(hours=1),
        created_at=created_at,
    )


def message(message_id: int, mailout_id: int) -> ClaimedMessage:
    return ClaimedMessage(message_id, mailout_id, f"7900{message_id:07d}", "UTC", 0, customer_id=message_id)


async def settle(rig: Rig, count: int) -> None:
    """Until `count` outcomes are written (bounded by a deadline, never by a sleep)."""
    async with asyncio.timeout(5):
        while len(rig.store.written) < count:
            await rig.recorder.flush()
            await asyncio.sleep(0)


async def test_a_cancel_hold_on_mailout_n_does_not_touch_a_later_mailout_with_id_n(rig: Rig) -> None:
    old = rig.pool.open(plan(7, created_at=NOW - timedelta(days=1)))
    await rig.pool.stop_mailout(7)
    assert old.hold is MessageStatus.CANCELLED
    await rig.pool.submit(SendJob(message(1, 7), old))
    await settle(rig, 1)
    assert rig.store.statuses() == {1: MessageStatus.CANCELLED}
    assert rig.provider.sent == []

    # The old mailout's actor lets go (it was deleted); a new mailout gets the same id.
    await rig.pool.close(old, MessageStatus.CANCELLED)
    new = rig.pool.open(plan(7, created_at=NOW))
    assert new.hold is None
    await rig.pool.submit(SendJob(message(2, 7), new))
    await settle(rig, 2)
    assert rig.store.statuses()[2] is MessageStatus.SENT
    assert rig.provider.sent == [2]


async def test_a_hold_stays_with_its_own_mailout_even_while_both_are_known(rig: Rig) -> None:
    # The old actor has not let go yet when the new mailout's first job arrives: only the object decides.
    old = rig.pool.open(plan(7, created_at=NOW - timedelta(days=1)))
    await rig.pool.hold(old, MessageStatus.CANCELLED)
    new = rig.pool.open(plan(7, created_at=NOW))
    await rig.pool.submit(SendJob(message(3, 7), new))
    await rig.pool.submit(SendJob(message(4, 7), old))
    await settle(rig, 2)
    assert rig.store.statuses() == {3: MessageStatus.SENT, 4: MessageStatus.CANCELLED}
    # Closing the old one leaves the new one open and unheld: a cancel now reaches the new one's jobs only.
    await rig.pool.close(old, MessageStatus.CANCELLED)
    await rig.pool.stop_mailout(7)
    assert new.hold is MessageStatus.CANCELLED


async def test_stopping_a_mailout_no_actor_feeds_is_a_no_op(rig: Rig) -> None:
    await rig.pool.stop_mailout(99)
    live = rig.pool.open(plan(99, created_at=NOW))
    assert live.hold is None


async def test_sends_not_yet_recorded_never_exceed_twice_the_concurrency(rig: Rig) -> None:
    live = rig.pool.open(plan(1, created_at=NOW))
    rig.store.gate.clear()  # the database stops answering
    total = 5 * CONCURRENCY
    bound = UNRECORDED_PER_WORKER * CONCURRENCY
    rig.provider.watch_for = bound
    submitting = asyncio.create_task(_submit_all(rig, live, total))
    async with asyncio.timeout(5):
        await rig.provider.reached.wait()
    # Let every worker run as far as it can: with the writes stuck, none may start another send.
    for _ in range(200):
        await asyncio.sleep(0)
    assert len(rig.provider.sent) == bound
    assert set(rig.pool.held_ids()) >= set(rig.provider.sent), "unrecorded sends keep their leases"
    rig.store.gate.set()
    await submitting
    await settle(rig, total)
    assert sorted(rig.provider.sent) == list(range(1, total + 1))
    assert set(rig.store.statuses().values()) == {MessageStatus.SENT}
    assert rig.recorder.unwritten_ids() == []


async def _submit_all(rig: Rig, live: LiveMailout, total: int) -> None:
    for message_id in range(1, total + 1):
        await rig.pool.submit(SendJob(message(message_id, 1), live))
