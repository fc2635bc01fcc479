"""The sender pool's bounded FIFO of jobs, from which one mailout's jobs can be taken out."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

from mailer.engine.jobs import LiveMailout, SendJob


class JobQueue:
    """A bounded FIFO of jobs from which a mailout's jobs can be taken out (cancel, pause, end).

    Overflow rule: `put` waits for room, so a slow provider slows claiming instead of growing memory.

    Each kind of waiter has its own line, and a change wakes only those it can help: a job put wakes one
    worker, a job taken wakes one putter. (With one condition notified on every change, each job woke all
    64 idle workers, and 63 went back to sleep: a tenth of the service's CPU per message.)
    """

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._items: deque[SendJob] = deque()
        self._getters: deque[asyncio.Future[None]] = deque()
        self._putters: deque[asyncio.Future[None]] = deque()
        # Actors waiting for half the queue to be free (`room`): all of them go on once it is.
        self._roomers: deque[asyncio.Future[None]] = deque()
        self._closed = False

    def __len__(self) -> int:
        return len(self._items)

    async def put(self, job: SendJob) -> bool:
        """Queue a job, waiting for room; False when the queue is closed (the job was not taken)."""
        while not self._closed and len(self._items) >= self.maxsize:
            await self._wait(self._putters, lambda: len(self._items) < self.maxsize)
        if self._closed:
            return False
        self._items.append(job)
        _wake_one(self._getters)
        return True

    async def get(self) -> SendJob | None:
        """The next job; None once the queue is closed."""
        while not self._closed and not self._items:
            await self._wait(self._getters, lambda: bool(self._items))
        if self._closed:
            return None
        job = self._items.popleft()
        self._taken(1)
        return job

    async def room(self) -> int:
        """Wait until at least half the queue is free, then say how much is (0 when closed).

        Waiting for half rather than for one free slot batches the claims: a claim per freed slot would cost
        a database transaction per message, and that, not the provider, would set the send rate.
        """
        while not self._closed and len(self._items) > self.maxsize // 2:
            await self._wait(self._roomers, lambda: len(self._items) <= self.maxsize // 2)
        return 0 if self._closed else self.maxsize - len(self._items)

    def message_ids(self) -> list[int]:
        """The ids of the messages queued now."""
        return [job.message.id for job in self._items]

    async def take_mailout(self, mailout: LiveMailout) -> list[SendJob]:
        """Remove and return the queued jobs of one live mailout (by identity, never by id alone)."""
        taken = [job for job in self._items if job.mailout is mailout]
        if taken:
            self._items = deque(job for job in self._items if job.mailout is not mailout)
            self._taken(len(taken))
        return taken

    async def close(self) -> list[SendJob]:
        """Refuse new jobs, wake every waiter, and return the jobs still queued."""
        self._closed = True
        left = list(self._items)
        self._items.clear()
        for waiters in (self._getters, self._putters, self._roomers):
            while waiters:
                _wake_one(waiters)
        return left

    def _taken(self, count: int) -> None:
        """`count` jobs left the queue: as many putters may go on, and the actors once half is free."""
        for _ in range(count):
            if not _wake_one(self._putters):
                break
        if len(self._items) <= self.maxsize // 2:
            while self._roomers:
                _wake_one(self._roomers)

    async def _wait(self, waiters: deque[asyncio.Future[None]], can_go: Callable[[], bool]) -> None:
        """Wait in line until woken. A waiter cancelled while waiting stays in the line, done, until a wake-up
        drops it; one woken and then cancelled before it ran hands its turn on, so no wake-up is lost."""
        waiter = asyncio.get_running_loop().create_future()
        waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if not waiter.cancelled() and can_go():
                _wake_one(waiters)
            raise


def _wake_one(waiters: deque[asyncio.Future[None]]) -> bool:
    """Wake the first waiter still waiting (dropping those cancelled meanwhile); False if there was none."""
    while waiters:
        waiter = waiters.popleft()
        if not waiter.done():
            waiter.set_result(None)
            return True
    return False
