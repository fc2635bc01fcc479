"""The sender pool: one bounded job queue and N workers sharing the provider client (`attempt.py`).

Each claimed message becomes a `SendJob`. A worker runs its attempt (`attempt.py`: what changed since the
claim, the request with its deadline, the classification) and hands the `MessageOutcome` to the recorder.
It does not wait for that outcome's commit: it takes its next job as soon as it has a slot, and a slot is
held from the take until the outcome is written, 2 per worker (the bound on what a crash can send twice,
see docs/reliability.md).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from datetime import datetime

from mailer.domain.auth_gate import AuthGate
from mailer.domain.breaker import CircuitBreaker
from mailer.domain.clock import Clock, utc_now
from mailer.domain.sending import MailoutPlan, MessageOutcome
from mailer.domain.statuses import MessageStatus
from mailer.engine.attempt import Attempter, SendClient, SenderConfig
from mailer.engine.job_queue import JobQueue
from mailer.engine.jobs import CutReason, LiveMailout, SendJob
from mailer.engine.outcomes import outcome_of
from mailer.engine.recorder import Recorder

# The job queue holds this many jobs per worker. Two: while the workers send one round, the next round is
# already claimed and waiting, so a claim's database round trip never leaves a worker idle; and no more,
# because every queued job is a message leased but not yet sent (memory stays flat, leases stay short).
QUEUE_JOBS_PER_WORKER = 2
# Sends not yet recorded, per worker: a worker needs a free slot to take a job, and the slot comes back only
# once the job's outcome is in the database. Two: one for the request in flight, one for an outcome waiting
# for the recorder's next commit, so a worker never waits for a commit in the usual case (pipelining), and a
# crash re-sends at most 2 x MAILER_SEND_CONCURRENCY messages (the bound of docs/reliability.md).
UNRECORDED_PER_WORKER = 2


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
        clock: Clock = utc_now,
        monotonic: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self._recorder = recorder
        self._clock = clock
        self._queue = JobQueue(QUEUE_JOBS_PER_WORKER * config.concurrency)
        self._auth = AuthGate(config.auth_probe_interval_s, monotonic, on_auth_pause, on_auth_resume)
        self._attempter = Attempter(
            client, breaker, self._auth, config, clock=clock, monotonic=monotonic, rng=rng or random.Random()
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
        outcome = self._attempter.cut(job, self._clock()) if task.cancelled() else task.result()
        await self._recorder.submit(outcome, on_written=self._unrecorded.release)
        job.settled = True

    async def _attempt_or_cut(self, job: SendJob) -> MessageOutcome:
        try:
            return await self._attempter.run(job)
        except asyncio.CancelledError:
            if job.cut is None:
                raise
            # We cut this request on purpose (cancel, shutdown) and know why: an outcome, not an error.
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()
            return self._attempter.cut(job, self._clock())

    async def give_back(self, job: SendJob, status: MessageStatus, now: datetime | None = None) -> None:
        """A job that was never started: its message returns with `status`, no attempt counted."""
        next_at = now or self._clock()
        await self._recorder.submit(outcome_of(job, status, next_at=next_at))
