"""The sender pool's slots: a freed slot goes to the first waiter still waiting, none is lost to a cancel."""

from __future__ import annotations

import asyncio

from mailer.engine.slots import Slots


async def _waiting(slots: Slots, count: int) -> list[asyncio.Task[None]]:
    """`count` tasks waiting in line for a slot, in order."""
    tasks = []
    for _ in range(count):
        tasks.append(asyncio.create_task(slots.acquire()))
        await asyncio.sleep(0)  # let it join the line before the next one
    assert not any(task.done() for task in tasks)
    return tasks


async def test_free_slots_are_taken_at_once_then_acquire_waits() -> None:
    slots = Slots(2)
    await slots.acquire()
    assert not slots.locked()
    await slots.acquire()
    assert slots.locked()
    (waiter,) = await _waiting(slots, 1)
    slots.release()
    await asyncio.wait_for(waiter, 1)
    assert slots.locked()


async def test_freed_slots_go_to_the_waiters_in_their_order_and_the_rest_are_free() -> None:
    slots = Slots(0)
    first, second = await _waiting(slots, 2)
    slots.release()
    await asyncio.sleep(0)
    assert first.done()
    assert not second.done()
    slots.release()
    slots.release()  # nobody waits for this one: it is free
    await asyncio.wait_for(second, 1)
    assert not slots.locked()
    await asyncio.wait_for(slots.acquire(), 1)
    assert slots.locked()


async def test_a_waiter_cancelled_while_waiting_is_passed_over() -> None:
    slots = Slots(0)
    gone, stays = await _waiting(slots, 2)
    gone.cancel()
    slots.release()
    await asyncio.wait_for(stays, 1)
    assert gone.cancelled()
    assert slots.locked()


async def test_a_waiter_handed_a_slot_and_cancelled_before_it_ran_passes_the_slot_on() -> None:
    slots = Slots(0)
    handed, next_one = await _waiting(slots, 2)
    slots.release()  # the slot is handed to `handed`, which has not run yet...
    handed.cancel()  # ...and is cancelled first
    await asyncio.wait_for(next_one, 1)
    assert handed.cancelled()
    slots.release()
    assert not slots.locked(), "no slot was lost"
