"""The sender pool: one bounded job queue, N workers sharing the provider client, deadlines, outcomes.

Each claimed message becomes a `SendJob`. A worker checks what may have changed since the claim (a hold on its
mailout, the end, the customer's window, the breaker, a paused provider token), sends with a deadline
(timeout, end, window closing), classifies the result and hands a `MessageOutcome` to the recorder.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Protocol
from zoneinfo import ZoneInfo

import structlog

from mailer.domain.breaker import CircuitBreaker
from mailer.domain.ratelimit import TokenBucket
from mailer.domain.retry import RetryPolicy, next_attempt_at
from mailer.domain.statuses import MessageStatus, Outcome
from mailer.domain.windows import closes_at, is_open, load_zone, next_open
from mailer.engine.recorder import Recorder
from mailer.observability import metrics
from mailer.provider.client import SendResult
from mailer.store.dispatch import AttemptRow, ClaimedMessage, MailoutPlan, MessageOutcome

log = structlog.get_logger(__name__)

# The job queue holds this many jobs per worker. Two: while the workers send one round, the next round is
# already claimed and waiting, so a claim's database round trip never leaves a worker idle; and no more,
# because every queued job is a message leased but not yet sent (memory stays flat, leases stay short).
QUEUE_JOBS_PER_WORKER = 2
# Jitter added to a breaker give-back, as a share of the delay: the messages of an outage come back spread out
# instead of all at the instant the breaker half-opens.
BREAKER_JITTER_SHARE = 0.2
# While half-open only the probe goes; the others come back after this share of the cooldown, by when the
# probe has usually answered.
HALF_OPEN_RETRY_SHARE = 0.1
# The token bucket lets this many seconds' worth of sends go at once (at least one).
RATE_BURST_S = 0.1


class CutReason(StrEnum):
    """Why a request in flight was cut."""

    END = "end"  # the mailout's end came
    WINDOW = "window"  # the customer's window closed
    CANCEL = "cancel"  # the mailout was cancelled or deleted
    SHUTDOWN = "shutdown"  # the process is stopping


class SendClient(Protocol):
    """The one provider call the pool needs, and the URL it goes to (for the log; never holds a secret)."""

    def url_for(self, msg_id: int) -> str: ...

    async def send(self, msg_id: int, phone: str, text: str, timeout_s: float) -> SendResult: ...


class LiveMailout:
    """The latest plan of a mailout, shared by its actor (who refreshes it) and its queued jobs."""

    __slots__ = ("plan",)

    def __init__(self, plan: MailoutPlan) -> None:
        self.plan = plan


@dataclass(eq=False, slots=True)
class SendJob:
    """One claimed message on its way to the provider."""

    message: ClaimedMessage
    mailout: LiveMailout
    started_at: datetime | None = None
    started_s: float | None = None
    cut: CutReason | None = None
    probe: bool = False
    # Set once the attempt has an outcome: from then on the job is only being recorded, never cut.
    settled: bool = False


@dataclass(frozen=True, slots=True)
class SenderConfig:
    """The pool's knobs, from settings."""

    concurrency: int
    timeout_s: float
    rate_per_s: float
    retry: RetryPolicy
    breaker_cooldown_s: float
    auth_probe_interval_s: float


class JobQueue:
    """A bounded FIFO of jobs from which a mailout's jobs can be taken out (cancel, pause, end).

    Overflow rule: `put` waits for room, so a slow provider slows claiming instead of growing memory.
    """

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._items: deque[SendJob] = deque()
        self._changed = asyncio.Condition()
        self._closed = False

    def __len__(self) -> int:
        return len(self._items)

    async def put(self, job: SendJob) -> bool:
        """Queue a job, waiting for room; False when the queue is closed (the job was not taken)."""
        async with self._changed:
            await self._changed.wait_for(lambda: self._closed or len(self._items) < self.maxsize)
            if self._closed:
                return False
            self._items.append(job)
            self._changed.notify_all()
            return True

    async def get(self) -> SendJob | None:
        """The next job; None once the queue is closed."""
        async with self._changed:
            await self._changed.wait_for(lambda: self._closed or bool(self._items))
            if self._closed:
                return None
            job = self._items.popleft()
            self._changed.notify_all()
            return job

    async def room(self) -> int:
        """Wait until at least half the queue is free, then say how much is (0 when closed).

        Waiting for half rather than for one free slot batches the claims: a claim per freed slot would cost
        a database transaction per message, and that, not the provider, would set the send rate.
        """
        async with self._changed:
            await self._changed.wait_for(lambda: self._closed or len(self._items) <= self.maxsize // 2)
            return 0 if self._closed else self.maxsize - len(self._items)

    def message_ids(self) -> list[int]:
        """The ids of the messages queued now."""
        return [job.message.id for job in self._items]

    async def take_mailout(self, mailout_id: int) -> list[SendJob]:
        """Remove and return the queued jobs of one mailout."""
        async with self._changed:
            taken = [job for job in self._items if job.message.mailout_id == mailout_id]
            if taken:
                self._items = deque(job for job in self._items if job.message.mailout_id != mailout_id)
                self._changed.notify_all()
            return taken

    async def close(self) -> list[SendJob]:
        """Refuse new jobs, wake every waiter, and return the jobs still queued."""
        async with self._changed:
            self._closed = True
            left = list(self._items)
            self._items.clear()
            self._changed.notify_all()
            return left


class AuthGate:
    """While the provider refuses our token, sending pauses; one probe request per interval tests it again."""

    def __init__(
        self,
        interval_s: float,
        clock: Callable[[], float],
        on_pause: Callable[[str], None],
        on_resume: Callable[[], None],
    ) -> None:
        self._interval_s = interval_s
        self._clock = clock
        self._on_pause = on_pause
        self._on_resume = on_resume
        self.paused = False
        self._probe_at = 0.0
        self._probing = False

    def claim_limit(self, wanted: int) -> int:
        """How many messages an actor may claim now: all it wants, one for a probe, or none."""
        if not self.paused:
            return wanted
        return 0 if self._probing or self._clock() < self._probe_at else 1

    def probe_in_s(self) -> float | None:
        """Seconds until the next probe may go while paused; None when not paused."""
        if not self.paused:
            return None
        if self._probing:
            # A probe is out: its answer either resumes sending (and wakes everyone) or sets a new time.
            return self._interval_s
        return max(0.0, self._probe_at - self._clock())

    def try_send(self) -> bool:
        """May a request go now? While paused, yes for exactly one probe per interval."""
        if not self.paused:
            return True
        if self._probing or self._clock() < self._probe_at:
            return False
        self._probing = True
        return True

    def refused(self, reason: str) -> None:
        self._probing = False
        self._probe_at = self._clock() + self._interval_s
        if not self.paused:
            self.paused = True
            self._on_pause(reason)

    def accepted(self) -> None:
        """The provider took our token (it answered a request on its merits)."""
        self._probing = False
        if self.paused:
            self.paused = False
            self._on_resume()

    def inconclusive(self, job: SendJob) -> None:
        """A probe ended without telling whether the token works: try again after the interval."""
        if job.probe and self.paused:
            self._probing = False
            self._probe_at = self._clock() + self._interval_s


@dataclass
class _Flight:
    """The jobs of one mailout a worker is handling now (between the queue and the recorder)."""

    tasks: dict[SendJob, asyncio.Task[None]] = field(default_factory=dict)


class SenderPool:
    """N workers taking jobs from one bounded queue; requests per mailout can be cut at once."""

    def __init__(
        self,
        client: SendClient,
        recorder: Recorder,
        breaker: CircuitBreaker,
        config: SenderConfig,
        *,
        on_auth_pause: Callable[[str], None],
        on_auth_resume: Callable[[], None],
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        monotonic: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self._client = client
        self._recorder = recorder
        self._breaker = breaker
        self._config = config
        self._clock = clock
        self._monotonic = monotonic
        self._rng = rng or random.Random()
        self.queue = JobQueue(QUEUE_JOBS_PER_WORKER * config.concurrency)
        self.auth = AuthGate(config.auth_probe_interval_s, monotonic, on_auth_pause, on_auth_resume)
        self._bucket = (
            TokenBucket(config.rate_per_s, max(1.0, config.rate_per_s * RATE_BURST_S), monotonic)
            if config.rate_per_s > 0
            else None
        )
        # While a mailout is held, its jobs are given back with that status instead of being sent.
        self._holds: dict[int, MessageStatus] = {}
        self._flights: dict[int, _Flight] = {}
        self._stopping = False

    # --- what actors and the engine call -------------------------------------------------------------------

    async def room(self) -> int:
        """Wait for room in the queue; how many jobs fit now (0 once the pool stops)."""
        return await self.queue.room()

    async def submit(self, job: SendJob) -> None:
        """Queue a job (waiting for room); a job that cannot be sent any more is given back at once."""
        status = self._holds.get(job.message.mailout_id)
        if status is None and await self.queue.put(job):
            return
        await self.give_back(job, status or MessageStatus.PENDING, self._clock())

    async def hold(self, mailout_id: int, status: MessageStatus) -> None:
        """Stop sending a mailout's queued jobs: they go back with `status` (requests in flight go on)."""
        self._holds[mailout_id] = status
        now = self._clock()
        for job in await self.queue.take_mailout(mailout_id):
            await self.give_back(job, status, now)

    def release(self, mailout_id: int) -> None:
        """Lift a pause or end hold (a resumed or extended mailout); a cancel hold stays for good."""
        if self._holds.get(mailout_id) not in (None, MessageStatus.CANCELLED):
            del self._holds[mailout_id]

    def held(self, mailout_id: int) -> MessageStatus | None:
        return self._holds.get(mailout_id)

    async def stop_mailout(self, mailout_id: int) -> None:
        """Cancel: queued jobs go back cancelled, requests in flight are cut; returns once all are handed
        to the recorder."""
        await self.hold(mailout_id, MessageStatus.CANCELLED)
        flight = self._flights.get(mailout_id)
        if flight is not None:
            for job, task in list(flight.tasks.items()):
                if not job.settled:
                    job.cut = CutReason.CANCEL
                    task.cancel()
        await self.wait_idle(mailout_id)

    async def wait_idle(self, mailout_id: int) -> None:
        """Until no job of this mailout is being handled (its outcomes are then with the recorder)."""
        while (flight := self._flights.get(mailout_id)) is not None and flight.tasks:
            await asyncio.wait(list(flight.tasks.values()))

    def held_ids(self) -> list[int]:
        """Messages this pool holds in `sending`: queued, in flight, or waiting for their outcome's write
        (the lease keeper renews their leases)."""
        flying = [job.message.id for flight in self._flights.values() for job in flight.tasks]
        return self.queue.message_ids() + flying

    def in_flight(self, mailout_id: int | None = None) -> int:
        if mailout_id is not None:
            flight = self._flights.get(mailout_id)
            return len(flight.tasks) if flight else 0
        return sum(len(f.tasks) for f in self._flights.values())

    async def drain(self, grace_s: float) -> None:
        """Shut down: queued jobs go back to pending, requests in flight get `grace_s`, then are cut."""
        self._stopping = True
        now = self._clock()
        for job in await self.queue.close():
            await self.give_back(job, MessageStatus.PENDING, now)
        tasks = [t for f in self._flights.values() for t in f.tasks.values()]
        if tasks and grace_s > 0:
            await asyncio.wait(tasks, timeout=grace_s)
        for flight in list(self._flights.values()):
            for job, task in list(flight.tasks.items()):
                if not job.settled:
                    job.cut = CutReason.SHUTDOWN
                    task.cancel()
        left = [t for f in self._flights.values() for t in f.tasks.values()]
        if left:
            await asyncio.wait(left)

    # --- the workers ---------------------------------------------------------------------------------------

    async def run_worker(self) -> None:
        """One worker: jobs from the queue until it closes."""
        while (job := await self.queue.get()) is not None:
            mailout_id = job.message.mailout_id
            flight = self._flights.setdefault(mailout_id, _Flight())
            task = asyncio.create_task(self._handle(job), name=f"send:{job.message.id}")
            flight.tasks[job] = task
            try:
                await asyncio.wait({task})
                await self._record_unstarted(job, task)
            except asyncio.CancelledError:
                # The worker itself is cancelled (a forced stop): cut the request and let it be recorded.
                job.cut = job.cut or CutReason.SHUTDOWN
                task.cancel()
                await asyncio.wait({task})
                await self._record_unstarted(job, task)
                raise
            finally:
                flight.tasks.pop(job, None)
                if not flight.tasks and self._flights.get(mailout_id) is flight:
                    del self._flights[mailout_id]
            if not task.cancelled():
                # A bug in _handle surfaces here, crashing the worker: the supervisor logs it and restarts us.
                task.result()

    async def _record_unstarted(self, job: SendJob, task: asyncio.Task[None]) -> None:
        """A task cut before its coroutine ever ran has recorded nothing: its outcome is written here, or the
        message would sit in `sending` until its lease ran out."""
        if task.cancelled() and not job.settled:
            job.settled = True
            await self._recorder.submit(self._cut_outcome(job, self._clock()))

    async def _handle(self, job: SendJob) -> None:
        structlog.contextvars.bind_contextvars(mailout_id=job.message.mailout_id, message_id=job.message.id)
        try:
            outcome = await self._attempt(job)
        except asyncio.CancelledError:
            if job.cut is None:
                raise
            # We cut this request on purpose (cancel, shutdown) and know why: an outcome, not an error.
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()
            outcome = self._cut_outcome(job, self._clock())
        job.settled = True
        await self._recorder.submit(outcome)
        # The worker is free only once the outcome is in the database: a crash can then leave at most one
        # sent-but-unrecorded message per worker, so a restart re-sends at most `concurrency` of them.
        await self._recorder.flush()

    async def _attempt(self, job: SendJob) -> MessageOutcome:
        plan = job.mailout.plan
        zone = load_zone(job.message.timezone)
        now = self._clock()
        held = self._holds.get(plan.id)
        if held is not None:
            return self._outcome(job, held, next_at=now)
        if now >= plan.end_at:
            return self._outcome(job, MessageStatus.EXPIRED)
        if not is_open(now, plan.window, zone):
            return self._reschedule(job, next_open(now, plan.window, zone), now)
        if not self.auth.try_send():
            # Not the message's fault: back to pending with no attempt; claims are paused meanwhile.
            return self._outcome(job, MessageStatus.PENDING, next_at=now)
        job.probe = self.auth.paused
        if not self._breaker.allow():
            self.auth.inconclusive(job)
            return self._outcome(job, MessageStatus.PENDING, next_at=now + self._breaker_delay())
        if self._bucket is not None:
            wait_s = self._bucket.take()
            if wait_s > 0:
                await asyncio.sleep(wait_s)
            now = self._clock()
        deadline, reason = self._deadline(plan, zone, now)
        if deadline <= now:
            self._breaker.release_probe()
            self.auth.inconclusive(job)
            if reason is CutReason.END:
                return self._outcome(job, MessageStatus.EXPIRED)
            return self._reschedule(job, next_open(now, plan.window, zone), now)
        return await self._send(job, plan, deadline, reason, now)

    async def _send(
        self, job: SendJob, plan: MailoutPlan, deadline: datetime, reason: CutReason | None, now: datetime
    ) -> MessageOutcome:
        timeout_s = (deadline - now).total_seconds()
        job.started_at, job.started_s = now, self._monotonic()
        log.info(
            "provider.request",
            method="POST",
            url=self._client.url_for(job.message.id),
            attempt=job.message.attempts + 1,
            deadline=deadline.isoformat(),
            timeout_s=round(timeout_s, 3),
        )
        try:
            async with asyncio.timeout(timeout_s):
                result = await self._client.send(job.message.id, job.message.phone, plan.text, timeout_s)
        except TimeoutError:
            result = SendResult(Outcome.TIMEOUT, None, self._monotonic() - job.started_s, "deadline", None)
        if result.outcome is Outcome.TIMEOUT and reason is not None:
            # The deadline was a boundary, not the timeout: the request was cut there.
            job.cut = reason
            self._breaker.release_probe()
            self.auth.inconclusive(job)
            return self._cut_outcome(job, self._clock())
        return self._judge(job, plan, result)

    def _deadline(
        self, plan: MailoutPlan, zone: ZoneInfo, now: datetime
    ) -> tuple[datetime, CutReason | None]:
        """The earliest of timeout, end and window closing; the reason is None when it is the timeout."""
        deadline: datetime = now + timedelta(seconds=self._config.timeout_s)
        reason: CutReason | None = None
        if plan.end_at <= deadline:
            deadline, reason = plan.end_at, CutReason.END
        closing = closes_at(now, plan.window, zone)
        if closing is not None and closing < deadline:
            deadline, reason = closing, CutReason.WINDOW
        return deadline, reason

    def _judge(self, job: SendJob, plan: MailoutPlan, result: SendResult) -> MessageOutcome:
        now = self._clock()
        attempt = self._attempt_row(job, result.outcome, result.http_status, result.error, result.duration_s)
        outcome = result.outcome
        metrics.provider_request(outcome, result.duration_s)
        log.info(
            "provider.response",
            outcome=outcome.value,
            http_status=result.http_status,
            duration_ms=attempt.duration_ms,
            error=result.error,
        )
        if outcome is Outcome.SENT or outcome is Outcome.REJECTED:
            self._breaker.record_success()
            self.auth.accepted()
            if outcome is Outcome.SENT:
                return self._outcome(job, MessageStatus.SENT, sent_at=now, attempt=attempt)
            return self._outcome(job, MessageStatus.FAILED, error=result.error, attempt=attempt)
        if outcome is Outcome.UNAUTHORIZED:
            self._breaker.release_probe()
            self.auth.refused(result.error or f"HTTP {result.http_status}")
            return self._outcome(job, MessageStatus.PENDING, next_at=now, error=result.error, attempt=attempt)
        # Transient: timeout, connection, 5xx, 429, garbage.
        self._breaker.record_failure()
        self.auth.inconclusive(job)
        made = job.message.attempts + 1
        if made >= self._config.retry.max_attempts:
            return self._outcome(job, MessageStatus.FAILED, error=result.error, attempt=attempt)
        retry_at = next_attempt_at(
            now, made, self._config.retry, self._rng, result.retry_after_s, plan.end_at
        )
        if retry_at is None:
            return self._outcome(job, MessageStatus.EXPIRED, error=result.error, attempt=attempt)
        opens = next_open(retry_at, plan.window, load_zone(job.message.timezone))
        retried = self._reschedule(job, opens, now, error=result.error, attempt=attempt)
        if retried.status is MessageStatus.PENDING:
            metrics.RETRIES.inc()
            log.info(
                "message.retry",
                kind=outcome.value,
                attempts=made,
                next_attempt_at=opens.isoformat(),
                error=result.error,
            )
        return retried

    def _cut_outcome(self, job: SendJob, now: datetime) -> MessageOutcome:
        """The outcome of a request cut in flight (or a job cut before its request started)."""
        reason = job.cut or CutReason.SHUTDOWN
        plan = job.mailout.plan
        attempt = None
        if job.started_at is not None and job.started_s is not None:
            error = f"cut: {reason.value}"
            elapsed_s = self._monotonic() - job.started_s
            attempt = self._attempt_row(job, Outcome.CUT, None, error, elapsed_s)
            metrics.provider_request(Outcome.CUT, elapsed_s)
            log.info(
                "provider.response",
                outcome=Outcome.CUT.value,
                http_status=None,
                duration_ms=attempt.duration_ms,
                error=error,
            )
        else:
            # No request went out: the state change the recorder logs is the whole story, plus why.
            log.info("send.cut", reason=reason.value)
        match reason:
            case CutReason.CANCEL:
                return self._outcome(job, MessageStatus.CANCELLED, attempt=attempt)
            case CutReason.END:
                return self._outcome(job, MessageStatus.EXPIRED, attempt=attempt)
            case CutReason.WINDOW:
                opens = next_open(now, plan.window, load_zone(job.message.timezone))
                return self._reschedule(job, opens, now, attempt=attempt)
            case CutReason.SHUTDOWN:
                return self._outcome(job, MessageStatus.PENDING, next_at=now, attempt=attempt)

    def _reschedule(
        self,
        job: SendJob,
        at: datetime,
        now: datetime,
        *,
        error: str | None = None,
        attempt: AttemptRow | None = None,
    ) -> MessageOutcome:
        """Back to pending at `at`, or expired when that is not before the end."""
        if at >= job.mailout.plan.end_at:
            return self._outcome(job, MessageStatus.EXPIRED, error=error, attempt=attempt)
        return self._outcome(job, MessageStatus.PENDING, next_at=at, error=error, attempt=attempt)

    def _breaker_delay(self) -> timedelta:
        delay_s = self._breaker.reopens_in_s() or self._config.breaker_cooldown_s * HALF_OPEN_RETRY_SHARE
        return timedelta(seconds=delay_s * (1 + self._rng.uniform(0, BREAKER_JITTER_SHARE)))

    async def give_back(self, job: SendJob, status: MessageStatus, now: datetime | None = None) -> None:
        """A job that was never started: its message returns with `status`, no attempt counted."""
        next_at = now or self._clock()
        await self._recorder.submit(self._outcome(job, status, next_at=next_at))

    def _attempt_row(
        self, job: SendJob, outcome: Outcome, http_status: int | None, error: str | None, duration_s: float
    ) -> AttemptRow:
        assert job.started_at is not None
        return AttemptRow(job.started_at, round(duration_s * 1000, 3), outcome.value, http_status, error)

    @staticmethod
    def _outcome(
        job: SendJob,
        status: MessageStatus,
        *,
        next_at: datetime | None = None,
        sent_at: datetime | None = None,
        error: str | None = None,
        attempt: AttemptRow | None = None,
    ) -> MessageOutcome:
        return MessageOutcome(
            message_id=job.message.id,
            mailout_id=job.message.mailout_id,
            status=status,
            next_attempt_at=next_at if status is MessageStatus.PENDING else None,
            sent_at=sent_at,
            error=error,
            attempt=attempt,
            attempts=job.message.attempts + (1 if attempt is not None else 0),
        )
