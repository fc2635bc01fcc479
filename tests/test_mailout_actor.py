"""The mailout actor over an in-memory store, with the real sender pool and recorder and a fake provider:
activation once and not before the start, claims held back by a full queue, the end expiring what is left,
finishing early once every message is final, and a window change handed to the rescheduler."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, time, timedelta

import pytest

from mailer.domain.breaker import CircuitBreaker
from mailer.domain.retry import RetryPolicy
from mailer.domain.sending import ClaimedMessage, MailoutPlan, MessageOutcome
from mailer.domain.statuses import MailoutStatus, MessageStatus, Outcome
from mailer.domain.windows import SendWindow
from mailer.engine.attempt import SenderConfig
from mailer.engine.mailout_actor import MailoutActor
from mailer.engine.recorder import Recorder
from mailer.engine.sender import QUEUE_JOBS_PER_WORKER, SenderPool
from mailer.provider.client import SendResult
from mailer.store.activation import Activation
from tests.polling import eventually

CONCURRENCY = 2
CLAIM_BATCH = 100
MESSAGES = 20
NOW = datetime(2026, 12, 1, 12, tzinfo=UTC)
# When the messages made "due later" become due.
LATER = timedelta(hours=1)
# Loop turns given to an actor that should be asleep or blocked: a busy loop would query many times in them.
IDLE_TURNS = 200


class Provider:
    """Answers every send at once with 200 OK."""

    def __init__(self) -> None:
        self.sent: list[int] = []

    def url_for(self, msg_id: int) -> str:
        return f"http://provider.invalid/send/{msg_id}"

    async def send(self, msg_id: int, phone: str, text: str, timeout_s: float) -> SendResult:
        self.sent.append(msg_id)
        return SendResult(Outcome.SENT, 200, 0.001, None, None)


@dataclass
class Store:
    """One mailout and its messages in memory, with the statements the actor uses counted."""

    plan: MailoutPlan
    # How many messages an activation creates, and how many of those (the last) are due only an hour later.
    created: int = MESSAGES
    later: int = 0
    messages: dict[int, MessageStatus] = field(default_factory=dict)
    due: dict[int, datetime] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)
    claim_limits: list[int] = field(default_factory=list)
    windows: list[SendWindow | None] = field(default_factory=list)

    def count(self, name: str) -> int:
        return self.calls.count(name)

    def statuses(self) -> set[MessageStatus]:
        return set(self.messages.values())

    async def load_mailout(self, mailout_id: int) -> MailoutPlan | None:
        self.calls.append("load")
        await asyncio.sleep(0)  # a real query gives the loop a turn
        return self.plan

    async def activate(self, plan: MailoutPlan, now: datetime, list_max: int = 0) -> Activation | None:
        self.calls.append("activate")
        if self.plan.activated_at is not None or now < self.plan.start_at:
            return None
        self.plan = replace(self.plan, status=MailoutStatus.RUNNING, activated_at=now)
        ids = range(1, self.created + 1)
        self.messages = dict.fromkeys(ids, MessageStatus.PENDING)
        self.due = {i: now if i <= self.created - self.later else now + LATER for i in ids}
        return Activation(self.created, 1, self.created, [(i, i) for i in ids])

    async def finish_unstarted(self, mailout_id: int, now: datetime) -> bool:
        self.calls.append("finish_unstarted")
        self.plan = replace(self.plan, status=MailoutStatus.FINISHED)
        return True

    async def claim(self, mailout_id: int, now: datetime, limit: int, lease_s: float) -> list[ClaimedMessage]:
        self.calls.append("claim")
        self.claim_limits.append(limit)
        await asyncio.sleep(0)
        ids = [i for i in self._pending() if self.due[i] <= now][:limit]
        for message_id in ids:
            self.messages[message_id] = MessageStatus.SENDING
        return [ClaimedMessage(i, mailout_id, f"7900{i:07d}", "UTC", 0, customer_id=i) for i in ids]

    async def next_due(self, mailout_id: int) -> datetime | None:
        self.calls.append("next_due")
        return min((self.due[i] for i in self._pending()), default=None)

    async def expire_pending(self, mailout_id: int, now: datetime) -> int:
        self.calls.append("expire_pending")
        pending = self._pending()
        for message_id in pending:
            self.messages[message_id] = MessageStatus.EXPIRED
        return len(pending)

    async def finish(self, mailout_id: int, now: datetime) -> bool:
        self.calls.append("finish")
        self.plan = replace(self.plan, status=MailoutStatus.FINISHED)
        return True

    async def finish_done(self, mailout_id: int, now: datetime) -> bool:
        self.calls.append("finish_done")
        if self.statuses() & {MessageStatus.PENDING, MessageStatus.SENDING}:
            return False
        self.plan = replace(self.plan, status=MailoutStatus.FINISHED)
        return True

    async def reschedule_chunk(
        self, mailout_id: int, window: SendWindow | None, now: datetime, after_id: int, limit: int
    ) -> tuple[int, int] | None:
        self.windows.append(window)
        return None

    def _pending(self) -> list[int]:
        return [i for i, status in self.messages.items() if status is MessageStatus.PENDING]

    async def write(self, outcomes: Sequence[MessageOutcome], _now: datetime) -> None:
        """The recorder's write: only rows still in `sending` change, as in the real UPDATE."""
        for o in outcomes:
            if self.messages.get(o.message_id) is MessageStatus.SENDING:
                self.messages[o.message_id] = o.status


def scheduled(start_at: datetime, end_at: datetime) -> MailoutPlan:
    return MailoutPlan(
        id=1,
        status=MailoutStatus.SCHEDULED,
        start_at=start_at,
        end_at=end_at,
        text="hello",
        window=None,
        operator_codes=(),
        tags=(),
        activated_at=None,
        created_at=NOW - timedelta(days=1),
    )


@dataclass
class Rig:
    store: Store
    provider: Provider
    pool: SenderPool
    recorder: Recorder
    actor: MailoutActor
    now: list[datetime]
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    actor_task: asyncio.Task[None] | None = None

    def start_workers(self) -> None:
        self.tasks += [asyncio.create_task(self.pool.run_worker()) for _ in range(CONCURRENCY)]

    def start_actor(self) -> None:
        self.actor_task = asyncio.create_task(self.actor.run())

    async def actor_done(self) -> None:
        assert self.actor_task is not None
        async with asyncio.timeout(5):
            await self.actor_task


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    now = [NOW]

    def clock() -> datetime:
        return now[0]

    store = Store(scheduled(NOW - timedelta(minutes=1), NOW + timedelta(hours=1)))
    recorder = Recorder(store.write, clock, lambda _batch: actor.nudge())
    provider = Provider()
    # No rate limit, quick retries, a breaker that never opens: the actor is under test, not the pool.
    config = SenderConfig(CONCURRENCY, 5.0, 0.0, RetryPolicy(0.01, 0.1, 3), 1.0, 1.0)
    breaker = CircuitBreaker(1000, 1.0, 10, 1.0, lambda: 0.0)
    ignore = lambda *_: None  # noqa: E731 (the auth pause and resume hooks)
    pool = SenderPool(
        provider, recorder, breaker, config, on_auth_pause=ignore, on_auth_resume=ignore, clock=clock
    )
    actor = MailoutActor(1, store, pool, recorder, claim_batch=CLAIM_BATCH, lease_s=60.0, clock=clock)
    rig = Rig(store, provider, pool, recorder, actor, now, [asyncio.create_task(recorder.run())])
    yield rig
    if rig.actor_task is not None:
        rig.actor_task.cancel()
        await asyncio.wait([rig.actor_task])
    await pool.drain(0)
    for task in rig.tasks:
        task.cancel()
    await asyncio.wait(rig.tasks)


async def idle() -> None:
    for _ in range(IDLE_TURNS):
        await asyncio.sleep(0)


async def _true(value: bool) -> bool:
    return value


async def test_a_due_mailout_is_activated_once_sent_whole_and_finished_when_all_are_final(rig: Rig) -> None:
    rig.start_workers()
    rig.start_actor()
    await rig.actor_done()
    assert rig.store.count("activate") == 1
    assert sorted(rig.provider.sent) == list(range(1, MESSAGES + 1))
    assert rig.store.statuses() == {MessageStatus.SENT}
    assert rig.store.plan.status is MailoutStatus.FINISHED
    assert rig.store.count("finish") == 0, "finished early by finish_done, not by the end"
    assert rig.store.count("expire_pending") == 0


async def test_a_mailout_not_yet_due_sleeps_until_its_start_without_querying(rig: Rig) -> None:
    rig.store.plan = scheduled(NOW + timedelta(hours=1), NOW + timedelta(hours=2))
    rig.start_workers()
    rig.start_actor()
    await eventually(lambda: _true(rig.store.count("load") == 1), 5, "the plan read")
    await idle()
    assert rig.store.calls == ["load"], "no activation before the start, and no polling"
    # The start comes (a change of the clock, then the wake a due start gets from the scheduler's side).
    rig.now[0] = NOW + timedelta(hours=1)
    rig.actor.wake()
    await rig.actor_done()
    assert rig.store.count("activate") == 1
    assert rig.store.statuses() == {MessageStatus.SENT}


async def test_claims_stop_while_the_queue_is_full_and_go_on_once_workers_take_jobs(rig: Rig) -> None:
    queue_size = QUEUE_JOBS_PER_WORKER * CONCURRENCY
    rig.start_actor()  # no workers yet: nothing leaves the queue
    await eventually(lambda: _true(rig.store.count("claim") >= 1), 5, "the first claim")
    await idle()
    assert rig.store.count("claim") == 1, "a full queue blocks the next claim instead of spinning"
    assert rig.store.claim_limits == [queue_size], "never more claimed than the queue has room for"
    assert list(rig.store.messages.values()).count(MessageStatus.SENDING) == queue_size
    rig.start_workers()
    await rig.actor_done()
    assert all(limit <= queue_size for limit in rig.store.claim_limits)
    assert sorted(rig.provider.sent) == list(range(1, MESSAGES + 1))


async def test_at_the_end_what_is_still_pending_expires_and_the_mailout_finishes(rig: Rig) -> None:
    # Fewer due messages than the queue holds, so that the actor sleeps rather than waits for room.
    rig.store.created, rig.store.later = 3, 2
    rig.store.plan = replace(rig.store.plan, end_at=NOW + LATER / 2)
    rig.start_actor()  # no workers: the claimed message stays queued, the later ones stay pending
    await eventually(lambda: _true(rig.store.count("next_due") == 1), 5, "the actor asleep")
    await idle()
    assert rig.store.count("claim") == 2, "claimed the due one, found nothing more due, went to sleep"
    rig.now[0] = rig.store.plan.end_at
    rig.actor.wake()
    await rig.actor_done()
    assert rig.store.count("expire_pending") == 1
    assert rig.store.count("finish") == 1
    assert rig.provider.sent == []
    # Pending ones expired in the store; the queued ones came back from the pool as expired too.
    assert rig.store.statuses() == {MessageStatus.EXPIRED}


async def test_a_mailout_whose_end_came_before_its_start_finishes_unstarted(rig: Rig) -> None:
    rig.store.plan = scheduled(NOW - timedelta(hours=2), NOW - timedelta(hours=1))
    rig.start_actor()
    await rig.actor_done()
    assert rig.store.count("activate") == 0
    assert rig.store.count("finish_unstarted") == 1
    assert rig.store.messages == {}


async def test_a_window_change_while_running_starts_a_rewrite_with_the_new_window(rig: Rig) -> None:
    rig.store.created, rig.store.later = 3, 2
    rig.start_actor()  # no workers: the actor stays running, asleep until the later messages are due
    await eventually(lambda: _true(rig.store.count("next_due") == 1), 5, "the actor asleep")
    window = SendWindow(time(9), time(18))
    rig.store.plan = replace(rig.store.plan, window=window)
    rig.actor.wake()
    await eventually(lambda: _true(rig.store.windows == [window]), 5, "the rewrite for the new window")
    assert rig.actor.running


async def test_a_deleted_mailout_lets_its_queued_jobs_go_as_cancelled(rig: Rig) -> None:
    rig.store.created = 2  # at most half the queue, so that the actor sleeps rather than waits for room
    rig.start_actor()  # no workers: both stay queued
    await eventually(lambda: _true(rig.store.count("next_due") == 1), 5, "the actor asleep")
    rig.store.plan = replace(rig.store.plan, status=MailoutStatus.CANCELLED)
    rig.actor.wake()
    await rig.actor_done()
    await rig.recorder.flush()  # the jobs given back are written like any outcome, by the recorder
    assert rig.provider.sent == []
    assert MessageStatus.SENDING not in rig.store.statuses(), "nothing queued is left behind"
    assert MessageStatus.CANCELLED in rig.store.statuses()
