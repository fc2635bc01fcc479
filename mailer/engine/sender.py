"""The sender pool: one bounded job queue, N workers sharing the provider client, deadlines, outcomes.

Each claimed message becomes a `SendJob`. A worker checks what may have changed since the claim (a hold on its
mailout, the end, the customer's window, the breaker, a paused provider token), sends with a deadline
(timeout, end, window closing), classifies the result and hands a `MessageOutcome` to the recorder. It does
not wait for that outcome's commit: it takes its next job as soon as it has a slot, and a slot is held from
the take until the outcome is written, 2 per worker (the bound on what a crash can send twice, see
docs/reliability.md).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo

import structlog

from mailer.domain.auth_gate import AuthGate
from mailer.domain.breaker import CircuitBreaker
from mailer.domain.ratelimit import TokenBucket
from mailer.domain.retry import RetryPolicy, next_attempt_at
from mailer.domain.sending import AttemptRow, MailoutPlan, MessageOutcome
from mailer.domain.statuses import MessageStatus, Outcome
from mailer.domain.windows import closes_at, is_open, load_zone, next_open
from mailer.engine.job_queue import JobQueue
from mailer.engine.jobs import CutReason, LiveMailout, SendJob
from mailer.engine.recorder import Recorder
from mailer.observability import metrics
from mailer.provider.client import SendResult

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
# Sends not yet recorded, per worker: a worker needs a free slot to take a job, and the slot comes back only
# once the job's outcome is in the database. Two: one for the request in flight, one for an outcome waiting
# for the recorder's next commit, so a worker never waits for a commit in the usual case (pipelining), and a
# crash re-sends at most 2 x MAILER_SEND_CONCURRENCY messages (the bound of docs/reliability.md).
UNRECORDED_PER_WORKER = 2


class SendClient(Protocol):
    """The one provider call the pool needs, and the URL it goes to (for the log; never holds a secret)."""

    def url_for(self, msg_id: int) -> str: ...

    async def send(self, msg_id: int, phone: str, text: str, timeout_s: float) -> SendResult: ...


@dataclass(frozen=True, slots=True)
class SenderConfig:
    """The pool's knobs, from settings."""

    concurrency: int
    timeout_s: float
    rate_per_s: float
    retry: RetryPolicy
    breaker_cooldown_s: float
    auth_probe_interval_s: float


class SenderPool:
    """N workers taking jobs from one bounded queue; requests per mailout can be cut at once.

    A mailout is known to the pool from `open` to `close` (one actor's lifetime) as a `LiveMailout`; holds
    and flights belong to that object, so nothing of one mailout can touch another that reuses its id.
    """

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
        self._queue = JobQueue(QUEUE_JOBS_PER_WORKER * config.concurrency)
        self._auth = AuthGate(config.auth_probe_interval_s, monotonic, on_auth_pause, on_auth_resume)
        self._bucket = (
            TokenBucket(config.rate_per_s, max(1.0, config.rate_per_s * RATE_BURST_S), monotonic)
            if config.rate_per_s > 0
            else None
        )
        self._unrecorded = asyncio.Semaphore(UNRECORDED_PER_WORKER * config.concurrency)
        # The open mailouts by id (one actor each), and the jobs of each a worker is handling now.
        self._open: dict[int, LiveMailout] = {}
        self._flights: dict[LiveMailout, dict[SendJob, asyncio.Task[MessageOutcome]]] = {}

    # --- what actors and the engine call -------------------------------------------------------------------

    def open(self, plan: MailoutPlan) -> LiveMailout:
        """An actor starts feeding this mailout: its jobs share the returned object."""
        live = LiveMailout(plan)
        self._open[plan.id] = live
        return live

    async def close(self, live: LiveMailout, status: MessageStatus) -> None:
        """The actor lets go (the mailout is final or gone): nothing of it stays queued or in flight, and
        its hold goes with it."""
        await self.hold(live, status)
        await self.wait_idle(live)
        if self._open.get(live.id) is live:
            del self._open[live.id]

    async def room(self) -> int:
        """Wait for room in the queue; how many jobs fit now (0 once the pool stops)."""
        return await self._queue.room()

    def claim_limit(self, wanted: int) -> int:
        """How many messages an actor may claim now (fewer while the provider refuses our token)."""
        return self._auth.claim_limit(wanted)

    def probe_in_s(self) -> float | None:
        """While the provider refuses our token: seconds until the next probe may go; else None."""
        return self._auth.probe_in_s()

    def queue_depth(self) -> int:
        return len(self._queue)

    async def submit(self, job: SendJob) -> None:
        """Queue a job (waiting for room); a job that cannot be sent any more is given back at once."""
        status = job.mailout.hold
        if status is None and await self._queue.put(job):
            return
        await self.give_back(job, status or MessageStatus.PENDING, self._clock())

    async def hold(self, live: LiveMailout, status: MessageStatus) -> None:
        """Stop sending a mailout's queued jobs: they go back with `status` (requests in flight go on)."""
        live.hold = status
        now = self._clock()
        for job in await self._queue.take_mailout(live):
            await self.give_back(job, status, now)

    @staticmethod
    def release(live: LiveMailout) -> None:
        """Lift a pause or end hold (a resumed or extended mailout); a cancel hold stays until `close`."""
        if live.hold is not MessageStatus.CANCELLED:
            live.hold = None

    async def stop_mailout(self, mailout_id: int) -> None:
        """Cancel: queued jobs go back cancelled, requests in flight are cut; returns once all are handed
        to the recorder. A mailout no actor here feeds has nothing queued or in flight here."""
        live = self._open.get(mailout_id)
        if live is None:
            return
        await self.hold(live, MessageStatus.CANCELLED)
        for job, task in list(self._flights.get(live, {}).items()):
            if not task.done():
                job.cut = CutReason.CANCEL
                task.cancel()
        await self.wait_idle(live)

    async def wait_idle(self, live: LiveMailout) -> None:
        """Until no job of this mailout is being handled (its outcomes are then with the recorder)."""
        while tasks := self._flights.get(live):
            await asyncio.wait(list(tasks.values()))

    def held_ids(self) -> list[int]:
        """Messages this pool holds in `sending`: queued, in flight, or waiting for their outcome's write
        (the lease keeper renews their leases)."""
        flying = [job.message.id for tasks in self._flights.values() for job in tasks]
        return [*self._queue.message_ids(), *flying, *self._recorder.unwritten_ids()]

    def in_flight(self, mailout_id: int | None = None) -> int:
        if mailout_id is not None:
            return sum(len(tasks) for live, tasks in self._flights.items() if live.id == mailout_id)
        return sum(len(tasks) for tasks in self._flights.values())

    async def drain(self, grace_s: float) -> None:
        """Shut down: queued jobs go back to pending, requests in flight get `grace_s`, then are cut."""
        now = self._clock()
        for job in await self._queue.close():
            await self.give_back(job, MessageStatus.PENDING, now)
        tasks = [t for flight in self._flights.values() for t in flight.values()]
        if tasks and grace_s > 0:
            await asyncio.wait(tasks, timeout=grace_s)
        for flight in list(self._flights.values()):
            for job, task in list(flight.items()):
                if not task.done():
                    job.cut = CutReason.SHUTDOWN
                    task.cancel()
        left = [t for flight in self._flights.values() for t in flight.values()]
        if left:
            await asyncio.wait(left)

    # --- the workers ---------------------------------------------------------------------------------------

    async def run_worker(self) -> None:
        """One worker: jobs from the queue until it closes."""
        while True:
            if self._unrecorded.locked():
                # Out of slots: the recorder writes its next batch at once instead of lingering for more.
                with self._recorder.waited_on():
                    await self._unrecorded.acquire()
            else:
                await self._unrecorded.acquire()
            if (job := await self._queue.get()) is None:
                self._unrecorded.release()
                return
            try:
                await self._run_job(job)
            except BaseException:
                # The outcome never reached the recorder (a forced stop, a bug): its slot comes back here.
                if not job.settled:
                    self._unrecorded.release()
                raise

    async def _run_job(self, job: SendJob) -> None:
        """Send one job in its own task (so that it can be cut), then hand its outcome to the recorder."""
        live = job.mailout
        flight = self._flights.setdefault(live, {})
        task = asyncio.create_task(self._attempt_or_cut(job), name=f"send:{job.message.id}")
        flight[job] = task
        try:
            try:
                await asyncio.wait({task})
            except asyncio.CancelledError:
                # The worker itself is cancelled (a forced stop): cut the request and let it be recorded.
                job.cut = job.cut or CutReason.SHUTDOWN
                task.cancel()
                await asyncio.wait({task})
                await self._settle(job, task)
                raise
            await self._settle(job, task)
        finally:
            # Only now is the job idle: its outcome is with the recorder (`wait_idle` relies on that).
            flight.pop(job, None)
            if not flight and self._flights.get(live) is flight:
                del self._flights[live]

    async def _settle(self, job: SendJob, task: asyncio.Task[MessageOutcome]) -> None:
        """Hand the job's outcome to the recorder; the worker's slot comes back once it is written."""
        # Cut before its coroutine ever ran, a task has nothing to say: nothing was sent. Otherwise a bug in
        # the attempt surfaces here, crashing the worker: the supervisor logs it and restarts us.
        outcome = self._cut_outcome(job, self._clock()) if task.cancelled() else task.result()
        await self._recorder.submit(outcome, on_written=self._unrecorded.release)
        job.settled = True

    async def _attempt_or_cut(self, job: SendJob) -> MessageOutcome:
        try:
            return await self._attempt(job)
        except asyncio.CancelledError:
            if job.cut is None:
                raise
            # We cut this request on purpose (cancel, shutdown) and know why: an outcome, not an error.
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()
            return self._cut_outcome(job, self._clock())

    async def _attempt(self, job: SendJob) -> MessageOutcome:
        live = job.mailout
        plan = live.plan
        zone = load_zone(job.message.timezone)
        now = self._clock()
        if live.hold is not None:
            return self._outcome(job, live.hold, next_at=now)
        if now >= plan.end_at:
            return self._outcome(job, MessageStatus.EXPIRED)
        if not is_open(now, plan.window, zone):
            return self._reschedule(job, next_open(now, plan.window, zone), now)
        if not self._auth.try_send():
            # Not the message's fault: back to pending with no attempt; claims are paused meanwhile.
            return self._outcome(job, MessageStatus.PENDING, next_at=now)
        job.probe = self._auth.paused
        if not self._breaker.allow():
            self._auth.inconclusive(job.probe)
            return self._outcome(job, MessageStatus.PENDING, next_at=now + self._breaker_delay())
        if self._bucket is not None:
            wait_s = self._bucket.take()
            if wait_s > 0:
                await asyncio.sleep(wait_s)
            now = self._clock()
        deadline, reason = self._deadline(plan, zone, now)
        if deadline <= now:
            self._breaker.release_probe()
            self._auth.inconclusive(job.probe)
            if reason is CutReason.END:
                return self._outcome(job, MessageStatus.EXPIRED)
            return self._reschedule(job, next_open(now, plan.window, zone), now)
        return await self._send(job, plan, deadline, reason, now)

    async def _send(
        self, job: SendJob, plan: MailoutPlan, deadline: datetime, reason: CutReason | None, now: datetime
    ) -> MessageOutcome:
        timeout_s = (deadline - now).total_seconds()
        job.started_at, job.started_s = now, self._monotonic()
        message = job.message
        # DEBUG: the state line the recorder writes after the request carries its outcome (one INFO line per
        # attempt); this one is for watching requests go out.
        log.debug(
            "provider.request",
            mailout_id=message.mailout_id,
            message_id=message.id,
            customer_id=message.customer_id,
            method="POST",
            url=self._client.url_for(message.id),
            attempt=message.attempts + 1,
            deadline=deadline.isoformat(),
            timeout_s=round(timeout_s, 3),
        )
        try:
            async with asyncio.timeout(timeout_s):
                result = await self._client.send(message.id, message.phone, plan.text, timeout_s)
        except TimeoutError:
            result = SendResult(Outcome.TIMEOUT, None, self._monotonic() - job.started_s, "deadline", None)
        if result.outcome is Outcome.TIMEOUT and reason is not None:
            # The deadline was a boundary, not the timeout: the request was cut there.
            job.cut = reason
            self._breaker.release_probe()
            self._auth.inconclusive(job.probe)
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
        self._log_response(job, attempt)
        if outcome is Outcome.SENT or outcome is Outcome.REJECTED:
            self._breaker.record_success()
            self._auth.accepted()
            if outcome is Outcome.SENT:
                return self._outcome(job, MessageStatus.SENT, sent_at=now, attempt=attempt)
            return self._outcome(job, MessageStatus.FAILED, error=result.error, attempt=attempt)
        if outcome is Outcome.UNAUTHORIZED:
            self._breaker.release_probe()
            self._auth.refused(result.error or f"HTTP {result.http_status}")
            return self._outcome(job, MessageStatus.PENDING, next_at=now, error=result.error, attempt=attempt)
        # Transient: timeout, connection, 5xx, 429, garbage.
        self._breaker.record_failure()
        self._auth.inconclusive(job.probe)
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
            # The recorder's `message.pending` line says when the retry is due.
            metrics.RETRIES.inc()
        return retried

    @staticmethod
    def _log_response(job: SendJob, attempt: AttemptRow) -> None:
        message = job.message
        log.debug(
            "provider.response",
            mailout_id=message.mailout_id,
            message_id=message.id,
            customer_id=message.customer_id,
            outcome=attempt.outcome,
            http_status=attempt.http_status,
            duration_ms=attempt.duration_ms,
            error=attempt.error,
        )

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
            self._log_response(job, attempt)
        else:
            # No request went out: the state change the recorder logs is the whole story, plus why.
            message = job.message
            log.info(
                "send.cut",
                mailout_id=message.mailout_id,
                message_id=message.id,
                customer_id=message.customer_id,
                reason=reason.value,
            )
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
        message = job.message
        return MessageOutcome(
            message_id=message.id,
            mailout_id=message.mailout_id,
            status=status,
            next_attempt_at=next_at if status is MessageStatus.PENDING else None,
            sent_at=sent_at,
            error=error,
            attempt=attempt,
            attempts=message.attempts + (1 if attempt is not None else 0),
            customer_id=message.customer_id,
        )
