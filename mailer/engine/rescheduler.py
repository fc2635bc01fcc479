"""The rescheduler: after a window change, rewrites a mailout's pending due times in chunks, beside sending.

A changed window moves every pending message's `next_attempt_at` to its zone's next opening. On a million
messages one UPDATE takes tens of seconds, and sending waited for it. Here the rewrite runs as a task the
actor owns, a chunk of ids per short transaction, while the actor goes on claiming: the sender checks the
window of the current plan before every request, so a message claimed on a stale due time is never sent
outside the new window (it goes back with the right one), and one whose stale time lies in the future is
reached by the rewrite within seconds.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from datetime import datetime
from typing import Protocol

import structlog

from mailer.domain.windows import SendWindow
from mailer.store.outage import while_unreachable

log = structlog.get_logger(__name__)

# Messages per transaction: short enough that claims and outcome writes (on SQLite, the same one connection)
# wait a few tens of milliseconds at most, large enough that a million take a few hundred statements.
RESCHEDULE_CHUNK = 5_000
# How long one chunk may wait for an unreachable database before the rewrite gives up (the actor then
# crashes, is restarted by the supervisor, and starts the rewrite again from where it stopped).
RESCHEDULE_OUTAGE_MAX_S = 30.0


class RescheduleStore(Protocol):
    """The one query the rescheduler needs: rewrite up to `limit` pending messages after `after_id`; the last
    id done and how many moved, or None when none is left."""

    async def reschedule_chunk(
        self, mailout_id: int, window: SendWindow | None, now: datetime, after_id: int, limit: int
    ) -> tuple[int, int] | None: ...


class Rescheduler:
    """Owns at most one rewrite task; `start` replaces a running one (the newest window wins)."""

    def __init__(
        self,
        store: RescheduleStore,
        mailout_id: int,
        clock: Callable[[], datetime],
        on_chunk: Callable[[], None],
    ) -> None:
        self._store = store
        self._mailout_id = mailout_id
        self._clock = clock
        # Called after each chunk: messages may be due now that were not (the actor looks again).
        self._on_chunk = on_chunk
        self._task: asyncio.Task[None] | None = None
        # Where the rewrite stands, kept across a crash of the task or of the actor: (window, last id done).
        self._pending: tuple[SendWindow | None, int] | None = None

    def start(self, window: SendWindow | None) -> None:
        """Rewrite every pending message for `window`, from the first id."""
        self._cancel()
        self._pending = (window, 0)
        self._spawn()

    def check(self) -> None:
        """Raise what the task raised (the actor crashes and is restarted); resume a rewrite left halfway."""
        if self._task is not None and self._task.done():
            task, self._task = self._task, None
            if not task.cancelled():
                task.result()
        if self._task is None and self._pending is not None:
            self._spawn()

    async def stop(self) -> None:
        """Drop the rewrite: the mailout is final or gone."""
        self._pending = None
        await self.halt()

    async def halt(self) -> None:
        """Cancel the task but keep where it stood: the actor crashed or stops with the process, and a
        restarted actor resumes the rewrite (`check`)."""
        task = self._cancel()
        if task is not None:
            await asyncio.wait({task})

    def _cancel(self) -> asyncio.Task[None] | None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
        return task

    def _spawn(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"reschedule:{self._mailout_id}")

    async def _run(self) -> None:
        moved = 0
        while self._pending is not None:
            window, after_id = self._pending
            done = await while_unreachable(
                functools.partial(self._chunk, window, after_id),
                RESCHEDULE_OUTAGE_MAX_S,
                "reschedule pending messages",
            )
            if done is None:
                self._pending = None
                log.info("send window changed: pending messages rescheduled", messages=moved)
                return
            last_id, count = done
            moved += count
            self._pending = (window, last_id)
            self._on_chunk()

    async def _chunk(self, window: SendWindow | None, after_id: int) -> tuple[int, int] | None:
        return await self._store.reschedule_chunk(
            self._mailout_id, window, self._clock(), after_id, RESCHEDULE_CHUNK
        )
