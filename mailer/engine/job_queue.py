"""The sender pool's bounded FIFO of jobs, from which one mailout's jobs can be taken out."""

from __future__ import annotations

import asyncio
from collections import deque

from mailer.engine.jobs import LiveMailout, SendJob


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

    async def take_mailout(self, mailout: LiveMailout) -> list[SendJob]:
        """Remove and return the queued jobs of one live mailout (by identity, never by id alone)."""
        async with self._changed:
            taken = [job for job in self._items if job.mailout is mailout]
            if taken:
                self._items = deque(job for job in self._items if job.mailout is not mailout)
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
