"""The mailout actor: activates one mailout, feeds its due messages to the sender pool, finishes it."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta
from typing import Protocol

import structlog

from mailer.domain.clock import Clock, utc_now
from mailer.domain.sending import ClaimedMessage, MailoutPlan
from mailer.domain.statuses import MAILOUT_FINAL, MailoutStatus, MessageStatus
from mailer.engine.jobs import LiveMailout, SendJob
from mailer.engine.recorder import Recorder
from mailer.engine.rescheduler import Rescheduler, RescheduleStore
from mailer.engine.sender import SenderPool
from mailer.observability import metrics
from mailer.store.activation import Activation

log = structlog.get_logger(__name__)

# When a claim finds nothing although something is due (rows another process holds, a status that changed
# between two queries), wait this long before looking again instead of spinning.
IDLE_RETRY_S = 0.05
# Longest single sleep: a safety net for a wake-up lost to a bug or another process; cheap at one query.
MAX_SLEEP_S = 30.0
# An activation that creates at most this many messages logs one `message.created` line per message. Beyond
# it, per-message lines would cost seconds of CPU and the memory of every id at activation, so ONE
# `messages.created` line with the count and the first and last id is logged instead.
CREATED_LINES_MAX = 10_000
# The plan is read again on every `wake` (a change here or, by NOTIFY, in another process) and at least this
# often: a safety net for a lost wake that costs one query per second, not one per claim.
PLAN_MAX_AGE_S = 1.0


class MailoutStore(RescheduleStore, Protocol):
    """What a mailout actor needs of the store: its plan, activation, claims and the end of the mailout."""

    async def load_mailout(self, mailout_id: int) -> MailoutPlan | None: ...

    async def activate(self, plan: MailoutPlan, now: datetime, list_max: int = 0) -> Activation | None: ...

    async def finish_unstarted(self, mailout_id: int, now: datetime) -> bool: ...

    async def claim(
        self, mailout_id: int, now: datetime, limit: int, lease_s: float
    ) -> list[ClaimedMessage]: ...

    async def next_due(self, mailout_id: int) -> datetime | None: ...

    async def expire_pending(self, mailout_id: int, now: datetime) -> int: ...

    async def finish(self, mailout_id: int, now: datetime) -> bool: ...

    async def finish_done(self, mailout_id: int, now: datetime) -> bool: ...


class MailoutActor:
    """One per live mailout in this process; `wake` is called on every change of its mailout."""

    def __init__(
        self,
        mailout_id: int,
        store: MailoutStore,
        pool: SenderPool,
        recorder: Recorder,
        *,
        claim_batch: int,
        lease_s: float,
        clock: Clock = utc_now,
    ) -> None:
        self.mailout_id = mailout_id
        self._store = store
        self._pool = pool
        self._recorder = recorder
        self._claim_batch = claim_batch
        self._lease_s = lease_s
        self._clock = clock
        self._wake = asyncio.Event()
        self._debug = log.is_enabled_for(logging.DEBUG)
        self._plan_stale = True
        self._plan_read_at_s = 0.0
        self._live: LiveMailout | None = None
        # A window change rewrites due times in chunks beside the sending, so that sending goes on at once.
        self._rescheduler = Rescheduler(store, mailout_id, clock, self.nudge)

    def wake(self) -> None:
        """The mailout may have changed: read it again and look at what is due."""
        self._plan_stale = True
        self._wake.set()

    def nudge(self) -> None:
        """Something of the mailout became due (a retry) or final (maybe the last): look again."""
        self._wake.set()

    @property
    def running(self) -> bool:
        """Whether the mailout was running when last read (for the running-mailouts gauge)."""
        return self._live is not None and self._live.plan.status is MailoutStatus.RUNNING

    async def run(self) -> None:
        """Until the mailout is final or gone."""
        structlog.contextvars.bind_contextvars(mailout_id=self.mailout_id)
        try:
            await self._run()
        finally:
            await self._rescheduler.halt()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            # Cleared before reading: a change made after this point wakes the next wait at once.
            self._wake.clear()
            self._rescheduler.check()
            if self._live is None or self._plan_stale or loop.time() - self._plan_read_at_s > PLAN_MAX_AGE_S:
                self._plan_stale = False
                self._plan_read_at_s = loop.time()
                plan = await self._store.load_mailout(self.mailout_id)
            else:
                plan = self._live.plan
            if plan is None or plan.status in MAILOUT_FINAL:
                await self._let_go(plan)
                return
            if self._live is not None and self._live.plan.created_at != plan.created_at:
                # Our mailout was deleted and a new one got its id: nothing of the old may touch it.
                await self._let_go(None)
            previous = self._live.plan if self._live is not None else None
            if self._live is None:
                self._live = self._pool.open(plan)
            else:
                self._live.plan = plan
            live = self._live
            now = self._clock()
            if now >= plan.end_at:
                await self._finish(plan)
                self._plan_stale = True
                continue
            if plan.status is MailoutStatus.SCHEDULED or (
                plan.status is MailoutStatus.RUNNING and plan.activated_at is None
            ):
                if plan.start_at > now:
                    await self._sleep_until(plan.start_at)
                else:
                    await self._activate(plan, now)
                    self._plan_stale = True
                continue
            if plan.status is MailoutStatus.PAUSED:
                if live.hold is None:
                    log.info("mailout.paused")
                    await self._pool.hold(live, MessageStatus.PENDING)
                await self._sleep_until(plan.end_at)
                continue
            # Running.
            self._pool.release(live)
            if previous is not None and previous.window != plan.window:
                self._rescheduler.start(plan.window)
            await self._feed(plan)

    async def _activate(self, plan: MailoutPlan, now: datetime) -> None:
        created = await self._store.activate(plan, now, CREATED_LINES_MAX)
        if created is None:
            return
        for message_id, customer_id in created.messages:
            log.info("message.created", message_id=message_id, customer_id=customer_id)
        if created.count > len(created.messages):
            log.info(
                "messages.created",
                count=created.count,
                first_message_id=created.first_id,
                last_message_id=created.last_id,
            )
        metrics.message_transition(MessageStatus.PENDING, created.count)
        log.info("mailout.started", messages=created.count)

    async def _feed(self, plan: MailoutPlan) -> None:
        """Claim what is due and queue it; when nothing is, sleep until something will be."""
        room = await self._pool.room()
        if room == 0:
            # The pool is stopping: claim nothing more, wait to be cancelled or woken.
            await self._sleep_until(plan.end_at)
            return
        limit = self._pool.claim_limit(min(self._claim_batch, room))
        now = self._clock()
        if limit > 0:
            claimed = await self._store.claim(plan.id, now, limit, self._lease_s)
            if claimed:
                lease_until = (now + timedelta(seconds=self._lease_s)).isoformat()
                # DEBUG: at INFO a message's journey is its creation and one line per attempt (the recorder),
                # and the loop is not even run.
                for message in claimed if self._debug else ():
                    log.debug(
                        "message.claimed",
                        message_id=message.id,
                        customer_id=message.customer_id,
                        attempt=message.attempts + 1,
                        lease_until=lease_until,
                    )
                metrics.message_transition(MessageStatus.SENDING, len(claimed))
                await self._queue(claimed)
                return
        wake_at = plan.end_at
        due = await self._store.next_due(plan.id)
        if due is None and await self._store.finish_done(plan.id, now):
            # Nothing pending and nothing in flight anywhere: done before its end.
            log.info("mailout.finished", reason="every message is final")
            self._plan_stale = True
            return
        if due is not None:
            if due > now:
                wake_at = min(wake_at, due)
            elif limit > 0:
                # Due but not claimable now (rows another process is taking, a status that just changed).
                wake_at = min(wake_at, now + timedelta(seconds=IDLE_RETRY_S))
        probe_in_s = self._pool.probe_in_s()
        if limit == 0 and probe_in_s is not None:
            # The provider refuses our token: nothing goes until the next probe (or a wake when it clears).
            wake_at = min(wake_at, now + timedelta(seconds=max(probe_in_s, IDLE_RETRY_S)))
        await self._sleep_until(wake_at)

    async def _queue(self, claimed: list[ClaimedMessage]) -> None:
        assert self._live is not None
        jobs = [SendJob(message, self._live) for message in claimed]
        queued = 0
        try:
            for job in jobs:
                await self._pool.submit(job)
                queued += 1
        finally:
            # Cancelled while the queue was full: the rest go back now rather than when their lease runs out.
            for job in jobs[queued:]:
                await self._pool.give_back(job, MessageStatus.PENDING)

    async def _finish(self, plan: MailoutPlan) -> None:
        """The end came: pending messages expire, requests in flight are cut and recorded, then finished."""
        now = self._clock()
        if plan.status is MailoutStatus.SCHEDULED or plan.activated_at is None:
            if await self._store.finish_unstarted(plan.id, now):
                log.info("mailout.finished", messages=0, reason="ended before it started")
            return
        expired = await self._store.expire_pending(plan.id, now)
        if expired:
            # A count, not a line per message: the UPDATE returns no ids, and reading them back would cost as
            # much as the expiry itself for a large mailout.
            log.info("messages.expired", count=expired)
            metrics.message_transition(MessageStatus.EXPIRED, expired)
        assert self._live is not None
        await self._pool.hold(self._live, MessageStatus.EXPIRED)
        # Requests in flight have the end as their deadline, so this wait is short.
        await self._pool.wait_idle(self._live)
        await self._recorder.flush()
        if await self._store.finish(plan.id, self._clock()):
            log.info("mailout.finished", expired=expired)

    async def _let_go(self, plan: MailoutPlan | None) -> None:
        """The mailout is final or deleted: nothing of it may stay queued."""
        await self._rescheduler.stop()
        if self._live is None:
            return
        status = MessageStatus.CANCELLED
        if plan is not None and plan.status is MailoutStatus.FINISHED:
            status = MessageStatus.EXPIRED
        await self._pool.close(self._live, status)
        self._live = None

    async def _sleep_until(self, at: datetime) -> None:
        delay_s = min((at - self._clock()).total_seconds(), MAX_SLEEP_S)
        if delay_s <= 0:
            return
        try:
            async with asyncio.timeout(delay_s):
                await self._wake.wait()
        except TimeoutError:
            pass
