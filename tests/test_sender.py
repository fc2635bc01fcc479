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
        # While cleared, every send waits for it (a request in flight that a cut can reach).
        self.answer = asyncio.Event()
        self.answer.set()

    def url_for(self, msg_id: int) -> str:
        return f"http://provider.invalid/send/{msg_id}"

    async def send(self, msg_id: int, phone: str, text: str, timeout_s: float) -> SendResult:
        self.sent.append(msg_id)
        if len(self.sent) >= self.watch_for:
            self.reached.set()
        await self.answer.wait()
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
    workers: list[asyncio.Task[None]]


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
    workers = [asyncio.create_task(pool.run_worker()) for _ in range(CONCURRENCY)]
    tasks += workers
    yield Rig(pool, provider, store, recorder, workers)
    store.gate.set()
    provider.answer.set()
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


# --- cuts: a request in flight is cut by cancelling its worker inside the attempt ---------------------------


async def _in_flight(rig: Rig, live: LiveMailout, count: int) -> None:
    """Submit `count` jobs whose requests then hang, and wait until all of them are in flight."""
    rig.provider.answer.clear()
    rig.provider.watch_for = count
    for message_id in range(1, count + 1):
        await rig.pool.submit(SendJob(message(message_id, live.id), live))
    async with asyncio.timeout(5):
        await rig.provider.reached.wait()


def _attempt_outcomes(rig: Rig) -> dict[int, str | None]:
    return {o.message_id: o.attempt.outcome if o.attempt else None for o in rig.store.written}


async def test_a_cancel_cuts_requests_in_flight_and_the_workers_go_on_sending(rig: Rig) -> None:
    live = rig.pool.open(plan(1, created_at=NOW))
    await _in_flight(rig, live, CONCURRENCY)
    await rig.pool.stop_mailout(1)
    await settle(rig, CONCURRENCY)
    assert rig.store.statuses() == dict.fromkeys(range(1, CONCURRENCY + 1), MessageStatus.CANCELLED)
    assert set(_attempt_outcomes(rig).values()) == {Outcome.CUT.value}
    assert rig.pool.in_flight() == 0
    # Every worker took its cut back: none stopped, and they all send again (one job each, still hanging).
    assert not any(worker.done() for worker in rig.workers)
    other = rig.pool.open(plan(2, created_at=NOW))
    rig.provider.sent.clear()
    rig.provider.reached.clear()
    rig.provider.watch_for = CONCURRENCY
    for message_id in range(101, 101 + CONCURRENCY):
        await rig.pool.submit(SendJob(message(message_id, 2), other))
    async with asyncio.timeout(5):
        await rig.provider.reached.wait()
    assert rig.pool.in_flight(2) == CONCURRENCY
    rig.provider.answer.set()
    await settle(rig, 2 * CONCURRENCY)
    assert {rig.store.statuses()[i] for i in range(101, 101 + CONCURRENCY)} == {MessageStatus.SENT}


async def test_a_drain_without_grace_cuts_requests_back_to_pending_and_the_workers_end(rig: Rig) -> None:
    live = rig.pool.open(plan(1, created_at=NOW))
    await _in_flight(rig, live, CONCURRENCY)
    await rig.pool.drain(0)
    await settle(rig, CONCURRENCY)
    assert set(rig.store.statuses().values()) == {MessageStatus.PENDING}
    assert set(_attempt_outcomes(rig).values()) == {Outcome.CUT.value}
    async with asyncio.timeout(5):
        await asyncio.wait(rig.workers)
    # They returned (the queue is closed), none was left cancelled by its cut.
    assert [worker.cancelled() for worker in rig.workers] == [False] * CONCURRENCY


async def test_a_drain_with_grace_lets_requests_in_flight_finish(rig: Rig) -> None:
    live = rig.pool.open(plan(1, created_at=NOW))
    await _in_flight(rig, live, CONCURRENCY)
    draining = asyncio.create_task(rig.pool.drain(5.0))
    await asyncio.sleep(0)
    assert not draining.done()
    rig.provider.answer.set()
    async with asyncio.timeout(5):
        await draining
    await settle(rig, CONCURRENCY)
    assert set(rig.store.statuses().values()) == {MessageStatus.SENT}


async def test_a_worker_stopped_mid_request_records_the_cut_and_stops(rig: Rig) -> None:
    live = rig.pool.open(plan(1, created_at=NOW))
    await _in_flight(rig, live, CONCURRENCY)
    worker = rig.workers[0]
    worker.cancel()
    async with asyncio.timeout(5):
        await asyncio.wait([worker])
    assert worker.cancelled()
    await settle(rig, 1)
    (outcome,) = rig.store.written
    assert outcome.status is MessageStatus.PENDING  # a shutdown cut: back to pending at once
    assert outcome.attempt is not None
    assert outcome.attempt.outcome == Outcome.CUT.value
    assert rig.pool.in_flight() == CONCURRENCY - 1


async def test_a_cut_and_a_stop_of_the_same_worker_at_once_record_the_cut_and_stop_it(rig: Rig) -> None:
    live = rig.pool.open(plan(1, created_at=NOW))
    await _in_flight(rig, live, CONCURRENCY)
    # The supervisor stops every worker while a cancel of the mailout cuts their requests: the cut is
    # recorded, and no worker swallows its own stop by taking the cut back.
    stopping = asyncio.create_task(rig.pool.stop_mailout(1))
    await asyncio.sleep(0)
    for worker in rig.workers:
        worker.cancel()
    async with asyncio.timeout(5):
        await stopping
        await asyncio.wait(rig.workers)
    assert [worker.cancelled() for worker in rig.workers] == [True] * CONCURRENCY
    await settle(rig, CONCURRENCY)
    assert set(rig.store.statuses().values()) == {MessageStatus.CANCELLED}
