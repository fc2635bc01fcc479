"""`mailer serve` freezes its start-up heap out of the garbage collector and counts the collector's time.
Run in a child process: a frozen heap stays frozen for good, and the tests' own process must not be."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from mailer.gc_tuning import YOUNG_THRESHOLD

CHILD = textwrap.dedent(
    """
    import gc, json
    from mailer.gc_tuning import count_collector_time, freeze_startup_heap
    from mailer.observability import metrics

    before = gc.get_freeze_count()
    freeze_startup_heap()
    frozen = gc.get_freeze_count()
    count_collector_time()
    # Cyclic garbage made after start-up is still collected, and the time it took is counted.
    class Node:
        pass
    for _ in range(1000):
        a, b = Node(), Node()
        a.other, b.other = b, a
    del a, b
    found = gc.collect()
    print(json.dumps({
        "before": before, "frozen": frozen, "threshold": gc.get_threshold()[0], "found": found,
        "counted": metrics.GC_SECONDS._value.get(),
    }))
    """
)


def test_the_start_up_heap_is_frozen_and_later_garbage_still_collected_and_timed() -> None:
    done = subprocess.run(
        [sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=60, check=True
    )
    seen = json.loads(done.stdout)
    assert seen["frozen"] > seen["before"] + 5_000  # the modules and caches alive at start-up
    assert seen["threshold"] == YOUNG_THRESHOLD
    assert seen["found"] >= 2000  # the 1,000 cycles made after the freeze
    assert seen["counted"] > 0
