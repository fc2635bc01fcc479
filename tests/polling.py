"""Waiting for a condition in tests: poll with a deadline, never sleep a fixed time and hope."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

# Often enough that a test notices a change within a few milliseconds, rarely enough to cost nothing.
POLL_S = 0.02


async def eventually[T](
    probe: Callable[[], Awaitable[T | None]],
    timeout_s: float = 10.0,
    what: str = "condition",
    poll_s: float = POLL_S,
) -> T:
    """Poll `probe` until it returns something truthy; fail with its last value after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = await probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout_s} s; last value: {value!r}")
        await asyncio.sleep(poll_s)
