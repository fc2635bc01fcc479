"""The sender pool's slots for sends not yet recorded: a counting semaphore that hands each freed slot to one
waiter.

asyncio.Semaphore leaves a woken waiter at the head of its line until that waiter runs, and each release
walks past all of those: when a recorder batch frees 60 slots at once, that was 60 x 30 checks, 1-2 % of the
service's CPU per message. Here a freed slot goes straight to the first waiter, which leaves the line at once.
"""

from __future__ import annotations

import asyncio
from collections import deque


class Slots:
    """`count` slots; `acquire` waits for one (first come, first served), `release` frees one."""

    def __init__(self, count: int) -> None:
        self._free = count
        self._waiters: deque[asyncio.Future[None]] = deque()

    def locked(self) -> bool:
        """Whether an `acquire` now would wait."""
        return self._free == 0

    async def acquire(self) -> None:
        if self._free > 0:
            self._free -= 1
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                # Handed a slot, then cancelled before it ran: the slot goes on to the next in line.
                self.release()
            raise

    def release(self) -> None:
        """Free a slot: the first waiter still waiting gets it, else it is free."""
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._free += 1
