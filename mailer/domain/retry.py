"""Retry policy: exponential backoff with full jitter, bounded by attempts, Retry-After and the end."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import datetime, timedelta

# A provider's Retry-After beyond this is taken as this: a misconfigured or hostile header must not park
# messages for days, and the mailout's end (not the header) is what finally stops the retries.
MAX_RETRY_AFTER_S = 3600.0


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How long to wait between attempts, and how many attempts a message gets."""

    base_s: float
    cap_s: float
    max_attempts: int

    def __post_init__(self) -> None:
        if not (0 < self.base_s <= self.cap_s < math.inf):
            raise ValueError("retry delays need 0 < base_s <= cap_s < inf")
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")


def backoff_s(attempt: int, policy: RetryPolicy, rng: random.Random) -> float:
    """Seconds to wait after failed attempt `attempt` (1-based): uniform in [0, min(cap, base * 2^(n-1))].

    Full jitter spreads the retries of many messages that failed together (a provider outage) instead of
    sending them back in synchronized waves.
    """
    return rng.uniform(0.0, backoff_ceiling_s(attempt, policy.base_s, policy.cap_s))


def backoff_ceiling_s(attempt: int, base_s: float, cap_s: float) -> float:
    """The un-jittered delay after failed attempt `attempt` (1-based): min(cap, base * 2^(n-1)).

    Used as is where there is no herd to spread (one supervisor restarting one task, one reconnecting
    listener, one report sender); `backoff_s` draws below it.
    """
    if attempt < 1:
        raise ValueError(f"attempt numbers start at 1, got {attempt}")
    if not (0 < base_s <= cap_s < math.inf):
        raise ValueError("backoff delays need 0 < base_s <= cap_s < inf")
    doublings = attempt - 1
    # Compare exponents rather than computing 2**doublings (or cap / base), which overflow floats.
    if doublings >= math.log2(cap_s) - math.log2(base_s):
        return cap_s
    return min(cap_s, math.ldexp(base_s, doublings))


def next_attempt_at(
    now: datetime,
    attempts_made: int,
    policy: RetryPolicy,
    rng: random.Random,
    retry_after_s: float | None,
    end_at: datetime,
) -> datetime | None:
    """When the next attempt may start, or None when there is none (attempts used up, or the end comes first).

    The caller then fails or expires the message. A send window, if any, is applied on top by the caller.
    """
    if attempts_made >= policy.max_attempts:
        return None
    delay_s = backoff_s(max(attempts_made, 1), policy, rng)
    if retry_after_s is not None and not math.isnan(retry_after_s):
        delay_s = max(delay_s, min(max(retry_after_s, 0.0), MAX_RETRY_AFTER_S))
    # Decide in seconds first: a delay past the end would not need a datetime, and might not fit in one.
    if delay_s >= (end_at - now).total_seconds():
        return None
    at = now + timedelta(seconds=delay_s)
    return at if at < end_at else None
