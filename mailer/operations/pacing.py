"""Feeding a byte stream to a CPU-bound parser on the event loop without holding the loop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterable

# Parsing is CPU on the event loop, and a body already buffered is read without ever waiting: fed whole, a
# 6 MB body of bad lines held every other request (and /healthz, hence a liveness probe) for seconds. Fed
# in slices of at most PARSE_SLICE_BYTES (under 200 short lines, about 1.5 ms of parsing refused lines),
# with a loop turn whenever PARSE_SLICE_S has passed, another request waits a few milliseconds per loop
# turn it needs (aiohttp takes two or three to answer one); a turn costs about 20 us, 1 % of the import.
PARSE_SLICE_BYTES = 1024
PARSE_SLICE_S = 0.002


async def paced(
    chunks: AsyncIterable[bytes],
    slice_bytes: int = PARSE_SLICE_BYTES,
    slice_s: float = PARSE_SLICE_S,
) -> AsyncGenerator[bytes]:
    """`chunks` cut into slices of at most `slice_bytes`, giving the loop a turn every `slice_s` of work."""
    loop = asyncio.get_running_loop()
    turn_at = loop.time() + slice_s
    async for chunk in chunks:
        view = memoryview(chunk)
        for start in range(0, len(view), slice_bytes):
            if loop.time() >= turn_at:
                await asyncio.sleep(0)  # a turn for every other task, whatever the consumer does
                turn_at = loop.time() + slice_s
            yield bytes(view[start : start + slice_bytes])
