"""Rate limits with an injected clock: a token bucket for sends, a sliding window for login attempts."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

# Client addresses remembered by a SlidingWindowLimiter unless told otherwise: far more than the clients a
# mailer instance serves at once, small enough (about a megabyte) not to matter.
DEFAULT_MAX_KEYS = 10_000


class TokenBucket:
    """Up to `burst` at once, then `rate_per_s` on average; a rate of 0 or less means no limit.

    `take` reserves a token and says how long to wait for it. The balance may go negative: each caller's
    reservation queues behind the earlier ones, so concurrent callers are served in order, each one waiting
    a little longer, instead of racing for the next token.
    """

    def __init__(self, rate_per_s: float, burst: float, clock: Callable[[], float]) -> None:
        if rate_per_s > 0 and burst < 1:
            raise ValueError("burst must be at least 1, or no token could ever be taken at once")
        self._rate = rate_per_s
        self._burst = burst
        self._clock = clock
        self._tokens = burst
        self._updated = clock()

    @property
    def unlimited(self) -> bool:
        return self._rate <= 0

    def take(self) -> float:
        """Reserve one token; return the seconds to wait before using it (0 when it is there now)."""
        if self.unlimited:
            return 0.0
        now = self._clock()
        elapsed = max(0.0, now - self._updated)  # a monotonic clock never goes back; be safe if it does
        self._tokens = min(self._burst, self._tokens + elapsed * self._rate)
        self._updated = now
        self._tokens -= 1
        return 0.0 if self._tokens >= 0 else -self._tokens / self._rate


class SlidingWindowLimiter:
    """At most `limit` hits per key in any `period_s` (login attempts per client address), in bounded memory.

    Refused hits are not counted: a client that keeps trying is let in again as soon as its oldest counted
    attempt is `period_s` old, not locked out for as long as it keeps knocking.
    """

    def __init__(
        self, limit: int, period_s: float, clock: Callable[[], float], max_keys: int = DEFAULT_MAX_KEYS
    ) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        if not period_s > 0:
            raise ValueError("period_s must be positive")
        if max_keys < 1:
            raise ValueError("max_keys must be at least 1")
        self._limit = limit
        self._period_s = period_s
        self._clock = clock
        self._max_keys = max_keys
        # Hit times per key; the dict is kept in order of each key's latest hit (oldest first), which makes
        # stale keys and the least recently active key cheap to find at the front.
        self._hits: dict[str, deque[float]] = {}

    def __len__(self) -> int:
        """Keys currently remembered."""
        return len(self._hits)

    def hit(self, key: str) -> float | None:
        """Count a hit for `key`: None if allowed, else the seconds until it would be."""
        now = self._clock()
        horizon = now - self._period_s
        self._evict_stale(horizon)
        hits = self._hits.pop(key, None)
        if hits is None:
            if len(self._hits) >= self._max_keys:
                # Past the cap the least recently active key is forgotten (it gets a fresh allowance).
                # Refusing new keys instead would let whoever fills the table lock every other client out;
                # forgetting only helps an attacker who already controls more than `max_keys` addresses.
                del self._hits[next(iter(self._hits))]
            hits = deque(maxlen=self._limit)
        while hits and hits[0] <= horizon:
            hits.popleft()
        self._hits[key] = hits  # re-inserted: now the most recently active key
        if len(hits) < self._limit:
            hits.append(now)
            return None
        return hits[0] - horizon

    def _evict_stale(self, horizon: float) -> None:
        """Drop keys whose every hit has left the window, from the least recently active; amortized O(1).

        It stops at the first key still in use, so a stale key behind it may stay a little longer; the key cap
        bounds the memory whatever happens.
        """
        while self._hits:
            key = next(iter(self._hits))
            if self._hits[key] and self._hits[key][-1] > horizon:
                return
            del self._hits[key]
