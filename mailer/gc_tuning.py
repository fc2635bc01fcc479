"""The cyclic garbage collector, tuned for a long-running service whose start-up heap never goes away.

With CPython's defaults a collection starts every 700 net allocations of container objects; sending a
message allocates dozens (request, response, outcome, log line), so the service collected every dozen
messages and now and then walked its whole heap (settings, routes, SQLAlchemy's and pydantic's caches:
most of what it holds). In the dispatch benchmark that was 2.9 s of 20.8 s of CPU (docs/benchmarks.md).
Frozen once the service is up, that heap is left out of every collection, and a larger first threshold
makes young collections rarer without letting much cyclic garbage wait (0.3 s of GC in the same run).
Only `mailer serve` does this: a process that builds many apps (the tests) would freeze each one's garbage.
"""

from __future__ import annotations

import gc
import time
from collections.abc import AsyncIterator

from aiohttp import web

from mailer.observability import metrics

# Net allocations of container objects between two young-generation collections (CPython: 700).
YOUNG_THRESHOLD = 20_000


def count_collector_time() -> None:
    """Count the collector's CPU time in `mailer_gc_seconds_total` (the dispatch benchmark reads it)."""
    started: list[float] = [0.0]

    def on_collection(phase: str, _info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.thread_time()
        else:
            metrics.GC_SECONDS.inc(time.thread_time() - started[0])

    gc.callbacks.append(on_collection)


def freeze_startup_heap() -> None:
    """Collect once, then move every object alive now out of the collector's sight for good."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, older, oldest)


async def collector_ctx(_app: web.Application) -> AsyncIterator[None]:
    """A cleanup context to append last: by then the database, the engine and the report are up."""
    freeze_startup_heap()
    count_collector_time()
    yield
