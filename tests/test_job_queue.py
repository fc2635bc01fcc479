"""The sender pool's job queue: bounded FIFO, one waiter woken per change, nothing lost to a cancellation."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from mailer.domain.sending import ClaimedMessage
from mailer.engine.job_queue import JobQueue
from mailer.engine.jobs import LiveMailout, SendJob
from tests.test_sender import plan

NOW = datetime(2030, 1, 15, 12, 0, tzinfo=UTC)


def live(mailout_id: int = 1) -> LiveMailout:
    return LiveMailout(plan(mailout_id, NOW))


def job(message_id: int, mailout: LiveMailout) -> SendJob:
    return SendJob(ClaimedMessage(message_id, mailout.id, "79000000001", "UTC", 0), mailout)


async def turns(count: int = 5) -> None:
    """Let every ready task run a few steps (what a woken waiter needs to return), without sleeping."""
    for _ in range(count):
        await asyncio.sleep(0)


async def test_jobs_come_out_in_order_and_a_full_queue_makes_put_wait() -> None:
    mailout = live()
    queue = JobQueue(2)
    assert await queue.put(job(1, mailout))
    assert await queue.put(job(2, mailout))
    third = asyncio.create_task(queue.put(job(3, mailout)))
    await turns()
    assert not third.done()
    assert len(queue) == 2

    first = await queue.get()
    assert first is not None
    assert first.message.id == 1
    assert await asyncio.wait_for(third, 1)
    ids = [(await queue.get()).message.id for _ in range(2)]  # type: ignore[union-attr]
    assert ids == [2, 3]


async def test_each_job_goes_to_one_idle_worker_and_the_rest_wait_in_line() -> None:
    mailout = live()
    queue = JobQueue(8)
    getters = [asyncio.create_task(queue.get()) for _ in range(10)]
    await turns()
    await queue.put(job(1, mailout))
    await turns()
    done = [task for task in getters if task.done()]
    assert len(done) == 1
    first = done[0].result()
    assert first is not None
    assert first.message.id == 1
    # The other nine still wait in line, and each further job wakes the next of them.
    await queue.put(job(2, mailout))
    await turns()
    assert sum(task.done() for task in getters) == 2
    assert not (await queue.close())
    results = await asyncio.gather(*getters)
    assert results.count(None) == 8


async def test_a_worker_woken_then_cancelled_hands_its_job_on() -> None:
    mailout = live()
    queue = JobQueue(4)
    first = asyncio.create_task(queue.get())
    second = asyncio.create_task(queue.get())
    await turns()
    await queue.put(job(1, mailout))  # wakes `first`, which has not run yet
    first.cancel()
    got = await asyncio.wait_for(second, 1)
    assert got is not None
    assert got.message.id == 1
    assert first.cancelled()


async def test_a_cancelled_waiter_leaves_no_gap_in_line() -> None:
    mailout = live()
    queue = JobQueue(4)
    gone = asyncio.create_task(queue.get())
    waiting = asyncio.create_task(queue.get())
    await turns()
    gone.cancel()
    await turns()
    await queue.put(job(7, mailout))
    got = await asyncio.wait_for(waiting, 1)
    assert got is not None
    assert got.message.id == 7


async def test_room_waits_for_half_the_queue_and_taking_a_mailout_frees_it() -> None:
    mine, other = live(1), live(2)
    queue = JobQueue(4)
    for n in range(3):
        await queue.put(job(n, mine))
    await queue.put(job(10, other))
    room = asyncio.create_task(queue.room())
    blocked_put = asyncio.create_task(queue.put(job(11, other)))
    await turns()
    assert not room.done()
    assert not blocked_put.done()

    taken = await queue.take_mailout(mine)
    assert [j.message.id for j in taken] == [0, 1, 2]
    assert await asyncio.wait_for(blocked_put, 1)
    assert await asyncio.wait_for(room, 1) == 2
    assert queue.message_ids() == [10, 11]


async def test_close_refuses_jobs_wakes_everyone_and_returns_what_was_queued() -> None:
    mailout = live()
    queue = JobQueue(1)
    await queue.put(job(1, mailout))
    putter = asyncio.create_task(queue.put(job(2, mailout)))
    room = asyncio.create_task(queue.room())
    await turns()
    left = await queue.close()
    assert [j.message.id for j in left] == [1]
    assert await asyncio.wait_for(putter, 1) is False
    assert await asyncio.wait_for(room, 1) == 0
    assert await queue.get() is None
    assert await queue.put(job(3, mailout)) is False
