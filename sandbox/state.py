"""Everything one sandbox app knows: its faults and random draws, the counters, the journal."""

from __future__ import annotations

import asyncio
import hmac
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple

from aiohttp import web

from sandbox.faults import FAULT_OF_RATE, Fault, SandboxFaults
from sandbox.wire import JSON

# Bad bodies in a 200, used in turn so that a handful of requests meets every kind.
GARBAGE_BODIES: tuple[tuple[bytes, str], ...] = (
    (b"<html><body>Service temporarily overloaded</body></html>", "text/html"),
    (b'{"code": 1, "message": "queue full"}', JSON),
    (b"", JSON),
    (b'[{"code": 0, "message": "OK"}]', JSON),
)

# Message ids whose deliveries are counted (the oldest forgotten first): the benchmark's 1,000,000-message
# mailout fits, in about 100 MB; the service's embedded sandbox keeps fewer.
COUNTS_SIZE = 1_000_000

# Closes the listening socket for that many seconds; only the standalone server can.
Refuser = Callable[[float], Awaitable[None]]


class JournalEntry(NamedTuple):
    """One accepted request."""

    id: int
    phone: int
    text: str
    received_at_s: float  # Unix time: cheaper to store than a datetime, formatted only when asked for


class SandboxState:
    """Faults, counters and the journal of one sandbox app."""

    def __init__(
        self, faults: SandboxFaults, token: str | None, journal_size: int, counts_size: int = COUNTS_SIZE
    ) -> None:
        if counts_size < 1:
            raise ValueError("counts_size must be >= 1")
        self.faults = faults
        self.rng = random.Random(faults.seed)
        # Deliveries per message id, for at most `counts_size` ids: past that the oldest id is forgotten
        # (`_arrivals` holds the ids in first-arrival order), so nothing grows without bound.
        self.counts: dict[int, int] = {}
        self._arrivals: deque[int] = deque()
        self._counts_size = counts_size
        self._forgotten = 0
        self.journal: deque[JournalEntry] = deque(maxlen=journal_size)
        self.requests = 0
        self.accepted = 0
        self.hung = 0
        self.by_status: dict[int, int] = {}
        # Set at shutdown: hanging handlers wait on it, so nothing sleeps past the app's life.
        self.released = asyncio.Event()
        # Installed by run_standalone, the only place where the listening socket can be closed.
        self.refuser: Refuser | None = None
        self._expected_auth = f"Bearer {token}".encode() if token is not None else None
        self._garbage_next = 0
        self._last_text = ""

    def authorized(self, header: str | None) -> bool:
        if self._expected_auth is None:
            return True
        if header is None:
            return False
        return hmac.compare_digest(header.encode("utf-8", "surrogateescape"), self._expected_auth)

    def draw_latency_s(self) -> float:
        mean_ms = self.faults.latency_ms
        if mean_ms <= 0:
            return 0.0
        return min(self.rng.expovariate(1.0 / mean_ms), self.faults.latency_max_ms) / 1000.0

    def draw_fault(self) -> Fault:
        if not self.faults.any_fault():
            return Fault.NONE  # the benchmark's fast path
        draw = self.rng.random()
        for name, fault in FAULT_OF_RATE.items():
            rate: float = getattr(self.faults, name)
            if draw < rate:
                return fault
            draw -= rate
        return Fault.NONE

    def next_garbage(self) -> tuple[bytes, str]:
        body = GARBAGE_BODIES[self._garbage_next]
        self._garbage_next = (self._garbage_next + 1) % len(GARBAGE_BODIES)
        return body

    def accept(self, msg_id: int, phone: int, text: str) -> None:
        count = self.counts.get(msg_id)
        if count is None:
            if len(self._arrivals) >= self._counts_size:
                del self.counts[self._arrivals.popleft()]
                self._forgotten += 1
            self._arrivals.append(msg_id)
            self.counts[msg_id] = 1
        else:
            self.counts[msg_id] = count + 1
        self.accepted += 1
        # A mailout sends one text to everyone: share one string instead of keeping 100,000 copies.
        if text == self._last_text:
            text = self._last_text
        else:
            self._last_text = text
        self.journal.append(JournalEntry(msg_id, phone, text, time.time()))

    def record_status(self, status: int) -> None:
        self.by_status[status] = self.by_status.get(status, 0) + 1

    def reset(self) -> None:
        self.counts.clear()
        self._arrivals.clear()
        self._forgotten = 0
        self.journal.clear()
        self.requests = self.accepted = self.hung = 0
        self.by_status.clear()

    def stats(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "accepted": self.accepted,
            # Exact while fewer than `counts_size` ids have arrived; past that a repeat of a forgotten id
            # counts as a new one.
            "unique": len(self.counts) + self._forgotten,
            "duplicates": self.accepted - len(self.counts) - self._forgotten,
            "hung": self.hung,
            "by_status": {str(status): n for status, n in sorted(self.by_status.items())},
        }


SANDBOX_STATE = web.AppKey("sandbox_state", SandboxState)
