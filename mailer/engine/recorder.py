"""The recorder: outcomes of sends go through one bounded queue and are written in batches."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import structlog

from mailer.domain.sending import MessageOutcome
from mailer.observability import metrics
from mailer.observability.logging import info_lines
from mailer.store.outage import while_unreachable

log = structlog.get_logger(__name__)

# A batch is written when it holds this many outcomes or when the oldest has waited RECORD_LINGER_S: large
# enough that a busy engine writes a few statements per thousand messages, small enough for one transaction.
RECORD_BATCH_MAX = 500
# Short enough that statistics lag by milliseconds, long enough to gather the outcomes of a burst.
RECORD_LINGER_S = 0.005
# Outcomes waiting for the database; a full queue makes senders wait (the overflow rule: block, never drop).
RECORD_QUEUE_SIZE = 4 * RECORD_BATCH_MAX
# How long a batch waits for an unreachable database before its outcomes are given up (their messages then
# come back by lease recovery): a PostgreSQL restart takes seconds; a shutdown must not wait much longer.
RECORD_OUTAGE_MAX_S = 30.0

WriteBatch = Callable[[Sequence[MessageOutcome], datetime], Awaitable[None]]
OnWritten = Callable[[Sequence[MessageOutcome]], None]
# Called once the one outcome it came with is written (or given up on): a sender's slot coming back.
Written = Callable[[], None]


class Recorder:
    """Turns outcomes into a few batched statements; `flush` waits until what was submitted is written."""

    def __init__(
        self, write: WriteBatch, clock: Callable[[], datetime], on_written: OnWritten | None = None
    ) -> None:
        self._write = write
        self._on_written = on_written
        self._clock = clock
        self._queue: asyncio.Queue[tuple[MessageOutcome, Written | None]] = asyncio.Queue(RECORD_QUEUE_SIZE)
        # Messages whose outcome waits here: still in `sending`, so the lease keeper renews their leases.
        self._unwritten: set[int] = set()
        self._submitted = 0
        self._written = 0
        self._progress = asyncio.Condition()
        # Callers blocked in `flush`: while there are any, a batch is written as soon as the queue is empty
        # (no linger), and the outcomes that arrive during that write form the next batch (group commit).
        self._waiting = 0
        # Set when a lingering batch must go now: someone waits for a write, or a full batch is queued.
        self._hurry = asyncio.Event()

    async def submit(self, outcome: MessageOutcome, on_written: Written | None = None) -> None:
        """Queue an outcome for the next batch (waiting for room); `on_written` runs once it is written."""
        await self._queue.put((outcome, on_written))
        self._submitted += 1
        self._unwritten.add(outcome.message_id)
        if self._queue.qsize() >= RECORD_BATCH_MAX:
            self._hurry.set()

    async def flush(self) -> None:
        """Wait until every outcome submitted before this call has been written (or given up on)."""
        target = self._submitted
        with self.waited_on():
            async with self._progress:
                await self._progress.wait_for(lambda: self._written >= target)

    @contextmanager
    def waited_on(self) -> Iterator[None]:
        """While inside, someone waits for a write (a flush, a sender out of slots): batches go at once."""
        self._waiting += 1
        self._hurry.set()
        try:
            yield
        finally:
            self._waiting -= 1

    def unwritten_ids(self) -> list[int]:
        """The messages whose outcome is queued or being written now."""
        return list(self._unwritten)

    async def run(self) -> None:
        """Write batches until cancelled; cancel it only after a `flush` when nothing must be lost."""
        while True:
            batch = [await self._queue.get()]
            if not self._waiting and self._queue.qsize() < RECORD_BATCH_MAX - 1:
                # Linger for the rest of a burst in one wait (one timer per batch): woken per outcome, with a
                # timer each, the recorder cost a few microseconds of every message.
                self._hurry.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(RECORD_LINGER_S):
                        await self._hurry.wait()
            while len(batch) < RECORD_BATCH_MAX and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            outcomes = [outcome for outcome, _ in batch]
            self._log_written(await self._write_batch(outcomes))
            for outcome, written in batch:
                self._unwritten.discard(outcome.message_id)
                if written is not None:
                    written()
            if self._on_written is not None:
                # Messages back in pending have a new due time: their actors must look again.
                self._on_written(outcomes)
            async with self._progress:
                self._written += len(batch)
                self._progress.notify_all()

    @staticmethod
    def _log_written(written: list[MessageOutcome]) -> None:
        """One line per state change, with the request that led there: a message's journey at INFO is its
        creation and this line per attempt. The UPDATE only touches rows still in `sending`, but it reports
        no rowcount per row, so a row that had been cancelled or recovered meanwhile (and so kept its state)
        is logged and counted too; that is rare, and knowing it would cost a query."""
        for status, count in Counter(o.status for o in written).items():
            metrics.message_transition(status, count)
        # Built and written together: one write and one flush, about half the CPU of a call per line.
        info_lines(__name__, (_state_line(o) for o in written))

    async def _write_batch(self, batch: list[MessageOutcome]) -> list[MessageOutcome]:
        """Write the batch; returns the outcomes that were written."""
        try:
            # While the database is away (a restart, dropped connections) the outcomes wait here rather
            # than being dropped: a dropped `sent` would be sent again once its lease ran out.
            await while_unreachable(
                lambda: self._write(batch, self._clock()), RECORD_OUTAGE_MAX_S, "record outcomes"
            )
            return batch
        except Exception:
            log.exception("recording a batch failed; writing its outcomes one by one", size=len(batch))
        # One bad row (a message deleted with its mailout meanwhile) must not lose the others' outcomes.
        written = []
        for outcome in batch:
            try:
                await self._write([outcome], self._clock())
                written.append(outcome)
            except Exception:
                # The message stays in `sending`; lease recovery returns it to pending later.
                log.exception(
                    "recording an outcome failed",
                    message_id=outcome.message_id,
                    mailout_id=outcome.mailout_id,
                    customer_id=outcome.customer_id,
                    status=outcome.status.value,
                )
        return written


def _state_line(o: MessageOutcome) -> tuple[str, dict[str, Any]]:
    """The state line of one written outcome: its event and fields."""
    attempt = o.attempt
    return f"message.{o.status.value}", {
        "mailout_id": o.mailout_id,
        "message_id": o.message_id,
        "customer_id": o.customer_id,
        "attempts": o.attempts,
        "outcome": attempt.outcome if attempt else None,
        "http_status": attempt.http_status if attempt else None,
        "duration_ms": attempt.duration_ms if attempt else None,
        "error": o.error or (attempt.error if attempt else None),
        "next_attempt_at": o.next_attempt_at.isoformat() if o.next_attempt_at else None,
    }
