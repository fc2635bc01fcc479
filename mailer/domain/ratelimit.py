"""Rate limits with an injected clock: a token bucket for sends; a sliding window per address and a
backoff per username for login attempts."""

from __future__ import annotations

import hashlib
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


class UsernameBackoff:
    """Exponential backoff per username after repeated wrong passwords, whatever address they come from.

    Failures in a row cost nothing (a person mistyping) until the `free_failures`-th, which closes the
    name for `base_s`; each one after closes it twice as long as the one before, up to `cap_s`. While
    closed, attempts for that name are refused without looking at the password and do not extend the
    wait, so a flood from many addresses gets one guess per `cap_s` at most, and the wait never grows
    past `cap_s`. A success, or
    `reset_s` without a failure, forgets the name. Names are kept as digests in bounded memory (a 900 KB
    username costs 32 bytes), least recently failed first out.
    """

    def __init__(
        self,
        clock: Callable[[], float],
        free_failures: int = 10,
        base_s: float = 1.0,
        cap_s: float = 60.0,
        reset_s: float = 900.0,
        max_keys: int = DEFAULT_MAX_KEYS,
    ) -> None:
        if free_failures < 0 or not 0 < base_s <= cap_s or reset_s < cap_s or max_keys < 1:
            raise ValueError("need free_failures >= 0, 0 < base_s <= cap_s <= reset_s and max_keys >= 1")
        self._clock = clock
        self._free = free_failures
        self._base_s = base_s
        self._cap_s = cap_s
        self._reset_s = reset_s
        self._max_keys = max_keys
        # digest -> (failures in a row, time of the last one); in order of the last failure, oldest first.
        self._failures: dict[bytes, tuple[int, float]] = {}

    def __len__(self) -> int:
        return len(self._failures)

    def wait_s(self, username: str) -> float | None:
        """None when an attempt for `username` may be checked now, else the seconds until it may."""
        entry = self._failures.get(_digest(username))
        if entry is None:
            return None
        count, last_s = entry
        remaining = last_s + self._delay_s(count) - self._clock()
        return remaining if remaining > 0 else None

    def failed(self, username: str) -> None:
        now = self._clock()
        self._forget_older_than(now - self._reset_s)
        key = _digest(username)
        count, _ = self._failures.pop(key, (0, now))
        if len(self._failures) >= self._max_keys:
            del self._failures[next(iter(self._failures))]
        self._failures[key] = (count + 1, now)

    def succeeded(self, username: str) -> None:
        self._failures.pop(_digest(username), None)

    def _delay_s(self, failures: int) -> float:
        over = failures - self._free
        if over < 0:
            return 0.0
        # Capped before exponentiating: 2 ** over for a huge count would overflow a float.
        return min(self._cap_s, self._base_s * 2.0 ** min(over, 64))

    def _forget_older_than(self, horizon: float) -> None:
        while self._failures:
            key = next(iter(self._failures))
            if self._failures[key][1] > horizon:
                return
            del self._failures[key]


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode("utf-8", "surrogateescape")).digest()


class LoginThrottle:
    """The login's two limits: attempts per client address, and backoff per username.

    An address that signed in as a user within `known_for_s` skips that user's backoff (it keeps its own
    per-address limit): an attack on `admin` from many addresses slows everyone else down, while the
    administrator's usual machine still gets in at once. A new address waits out the backoff, at most
    the backoff's cap, like anyone else. All of it is per process and forgotten at restart.
    """

    def __init__(
        self,
        per_address: SlidingWindowLimiter,
        per_username: UsernameBackoff,
        clock: Callable[[], float],
        known_for_s: float = 30 * 24 * 3600.0,
        max_known: int = DEFAULT_MAX_KEYS,
    ) -> None:
        self.per_address = per_address
        self.per_username = per_username
        self._clock = clock
        self._known_for_s = known_for_s
        self._max_known = max_known
        # (username digest, address) -> time of the last success there; oldest first.
        self._known: dict[tuple[bytes, str], float] = {}

    def address_wait_s(self, address: str) -> float | None:
        """Count an attempt from `address`: None if allowed, else the seconds until it would be."""
        return self.per_address.hit(address)

    def username_wait_s(self, username: str, address: str) -> float | None:
        """None when the password for `username` may be checked for `address` now, else the wait."""
        seen_s = self._known.get((_digest(username), address))
        if seen_s is not None and self._clock() - seen_s < self._known_for_s:
            return None
        return self.per_username.wait_s(username)

    def record(self, username: str, address: str, *, ok: bool) -> None:
        if not ok:
            self.per_username.failed(username)
            return
        self.per_username.succeeded(username)
        key = (_digest(username), address)
        self._known.pop(key, None)
        if len(self._known) >= self._max_known:
            del self._known[next(iter(self._known))]
        self._known[key] = self._clock()
