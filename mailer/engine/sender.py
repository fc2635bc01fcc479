"""The sender pool: one bounded job queue and N workers sharing the provider client (`attempt.py`).

Each claimed message becomes a `SendJob`. A worker runs its attempt (`attempt.py`: what changed since the
claim, the request with its deadline, the classification) and hands the `MessageOutcome` to the recorder.
It does not wait for that outcome's commit: it takes its next job as soon as it has a slot, and a slot is
held from the take until the outcome is written, 2 per worker (the bound on what a crash can send twice,
see docs/reliability.md).

The attempt runs in the worker's own task, not in a task of its own (a task and an `asyncio.wait` per message
were 5 µs of its CPU): a cut (cancel, shutdown) cancels the worker while it is inside the job's attempt, and
the worker takes that cancellation back (`uncancel`) and records the cut as the job's outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
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
from mailer.engine.slots import Slots

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
        self._unrecorded = Slots(UNRECORDED_PER_WORKER * config.concurrency)
        # The open mailouts by id (one actor each), and the jobs of each a worker is handling now, with the
        # worker's task (the one a cut cancels).
        self._open: dict[int, LiveMailout] = {}
        self._flights: dict[LiveMailout, dict[SendJob, asyncio.Task[None]]] = {}
        # Callers of `wait_idle` and `drain`, woken whenever a job's attempt ends or it leaves its flight.
        self._landing_waiters: list[asyncio.Future[None]] = []

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
        for job, worker in list(self._flights.get(live, {}).items()):
            _cut(job, worker, CutReason.CANCEL)
        await self.wait_idle(live)

    async def wait_idle(self, live: LiveMailout) -> None:
        """Until no job of this mailout is being handled (its outcomes are then with the recorder)."""
        while self._flights.get(live):
            await self._next_landing()

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
        if self._flights and grace_s > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace_s):
                    while self._flights:
                        await self._next_landing()
        for flight in list(self._flights.values()):
            for job, worker in list(flight.items()):
                _cut(job, worker, CutReason.SHUTDOWN)
        # Until every cut request has ended; handing their outcomes to the recorder is the workers' part (the
        # supervisor bounds it: a recorder stuck on a dead database must not hang the shutdown here).
        while any(job.attempting for flight in self._flights.values() for job in flight):
            await self._next_landing()

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
        """Send one job (it can be cut meanwhile, see `_cut`), then hand its outcome to the recorder."""
        live = job.mailout
        worker = asyncio.current_task()
        assert worker is not None, "workers run in tasks"
        flight = self._flights.setdefault(live, {})
        flight[job] = worker
        try:
            try:
                job.attempting = True
                outcome = await self._attempter.run(job)
            except asyncio.CancelledError:
                if job.cut is not None:
                    # Our own cut: taken back, so that only a stop of the worker itself is left pending.
                    worker.uncancel()
                stopping = job.cut is None or worker.cancelling() > 0
                job.cut = job.cut or CutReason.SHUTDOWN
                outcome = self._attempter.cut(job, self._clock())
                if stopping:
                    # The worker itself is stopped (forced): the cut request is recorded, then it stops.
                    await self._settle(job, outcome)
                    raise
            finally:
                job.attempting = False
                self._landed()
            await self._settle(job, outcome)
        finally:
            # Only now is the job idle: its outcome is with the recorder (`wait_idle` relies on that).
            flight.pop(job, None)
            if not flight and self._flights.get(live) is flight:
                del self._flights[live]
            self._landed()

    async def _settle(self, job: SendJob, outcome: MessageOutcome) -> None:
        """Hand the job's outcome to the recorder; the worker's slot comes back once it is written."""
        await self._recorder.submit(outcome, on_written=self._unrecorded.release)
        job.settled = True

    async def _next_landing(self) -> None:
        """Until some job's attempt ends or it leaves its flight (the caller then looks again)."""
        waiter = asyncio.get_running_loop().create_future()
        self._landing_waiters.append(waiter)
        await waiter

    def _landed(self) -> None:
        if self._landing_waiters:
            waiters, self._landing_waiters = self._landing_waiters, []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    async def give_back(self, job: SendJob, status: MessageStatus, now: datetime | None = None) -> None:
        """A job that was never started: its message returns with `status`, no attempt counted."""
        next_at = now or self._clock()
        await self._recorder.submit(outcome_of(job, status, next_at=next_at))


def _cut(job: SendJob, worker: asyncio.Task[None], reason: CutReason) -> None:
    """Cut a job's request: its worker is cancelled while inside the job's attempt, once, and records the cut
    with the latest reason. A job past its attempt (its outcome on the way to the recorder) is left alone:
    the cancellation would land somewhere else."""
    if not job.attempting:
        return
    if job.cut is None:
        worker.cancel()
    job.cut = reason
