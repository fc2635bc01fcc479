"""Tests of mailer.domain.ratelimit, with a fake clock."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailer.domain.ratelimit import LoginThrottle, SlidingWindowLimiter, TokenBucket, UsernameBackoff


class FakeClock:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


# --- token bucket ---


def test_unlimited_bucket_never_waits() -> None:
    for rate in (0.0, -1.0):
        bucket = TokenBucket(rate, 0, FakeClock())
        assert bucket.unlimited
        assert all(bucket.take() == 0 for _ in range(1000))


def test_burst_then_queued_reservations() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate_per_s=10, burst=3, clock=clock)
    assert [bucket.take() for _ in range(3)] == [0, 0, 0]
    # Concurrent callers queue up: each waits one more token's time.
    assert [bucket.take() for _ in range(3)] == pytest.approx([0.1, 0.2, 0.3])


def test_bucket_refills_up_to_burst() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate_per_s=2, burst=2, clock=clock)
    bucket.take()
    bucket.take()
    assert bucket.take() == pytest.approx(0.5)
    clock.now += 0.5  # the reserved token arrives
    assert bucket.take() == pytest.approx(0.5)
    clock.now += 100  # long idle: only `burst` tokens saved up
    assert [bucket.take() for _ in range(3)] == pytest.approx([0, 0, 0.5])


def test_bucket_rejects_burst_below_one() -> None:
    with pytest.raises(ValueError, match="burst"):
        TokenBucket(1, 0.5, FakeClock())


@settings(deadline=None, max_examples=200)
@given(
    st.floats(0.1, 1000),
    st.integers(1, 20),
    st.lists(st.tuples(st.floats(0, 2), st.integers(1, 5)), max_size=40),
)
def test_bucket_never_exceeds_its_rate(rate: float, burst: int, steps: list[tuple[float, int]]) -> None:
    """Following every returned delay, no interval sees more than burst + rate * length sends."""
    clock = FakeClock()
    bucket = TokenBucket(rate, burst, clock)
    start = clock.now
    sends: list[float] = []
    for pause, callers in steps:
        clock.now += pause
        for _ in range(callers):
            wait = bucket.take()
            assert wait >= 0
            sends.append(clock.now + wait)
    sends.sort()
    for i, first in enumerate(sends):
        for j in range(i, len(sends)):
            assert j - i + 1 <= burst + (sends[j] - first) * rate + 1e-6
    assert all(s >= start for s in sends)


# --- sliding window ---


def test_window_allows_limit_then_says_how_long() -> None:
    clock = FakeClock()
    limiter = SlidingWindowLimiter(limit=3, period_s=60, clock=clock)
    assert [limiter.hit("a") for _ in range(3)] == [None, None, None]
    assert limiter.hit("a") == 60
    clock.now += 20
    assert limiter.hit("a") == 40
    assert limiter.hit("b") is None  # keys are independent
    clock.now += 40
    assert limiter.hit("a") is None  # the first three hits have left the window
    assert limiter.hit("a") is None
    assert limiter.hit("a") is None
    assert limiter.hit("a") == pytest.approx(60)


def test_window_slides() -> None:
    clock = FakeClock()
    limiter = SlidingWindowLimiter(limit=2, period_s=10, clock=clock)
    assert limiter.hit("k") is None
    clock.now += 6
    assert limiter.hit("k") is None
    assert limiter.hit("k") == pytest.approx(4)
    clock.now += 4
    assert limiter.hit("k") is None  # the first hit is 10 s old
    assert limiter.hit("k") == pytest.approx(6)


def test_stale_keys_are_evicted() -> None:
    clock = FakeClock()
    limiter = SlidingWindowLimiter(limit=5, period_s=60, clock=clock)
    for n in range(100):
        limiter.hit(f"client-{n}")
    assert len(limiter) == 100
    clock.now += 61
    limiter.hit("late")
    assert len(limiter) == 1


def test_key_cap_forgets_the_least_recently_active() -> None:
    clock = FakeClock()
    limiter = SlidingWindowLimiter(limit=1, period_s=60, clock=clock, max_keys=3)
    for key in ("a", "b", "c"):
        assert limiter.hit(key) is None
        clock.now += 1
    assert limiter.hit("a") is not None  # "a" is now the most recently active; "b" the least
    assert limiter.hit("d") is None
    assert len(limiter) == 3
    assert limiter.hit("b") is None  # forgotten, so allowed again
    assert limiter.hit("a") is not None  # still remembered
    assert len(limiter) == 3


@pytest.mark.parametrize(("limit", "period", "keys"), [(0, 1.0, 1), (1, 0.0, 1), (1, 1.0, 0)])
def test_window_rejects_nonsense(limit: int, period: float, keys: int) -> None:
    with pytest.raises(ValueError, match="must"):
        SlidingWindowLimiter(limit, period, FakeClock(), max_keys=keys)


@settings(deadline=None, max_examples=200)
@given(
    st.integers(1, 5),
    st.lists(st.tuples(st.floats(0, 30), st.sampled_from("abcdef")), max_size=60),
)
def test_window_never_allows_more_than_limit_per_period(limit: int, steps: list[tuple[float, str]]) -> None:
    clock = FakeClock()
    period = 60.0
    limiter = SlidingWindowLimiter(limit, period, clock, max_keys=100)
    allowed: dict[str, list[float]] = {}
    for pause, key in steps:
        clock.now += pause
        wait = limiter.hit(key)
        recent = [t for t in allowed.get(key, []) if t > clock.now - period]
        if wait is None:
            allowed.setdefault(key, []).append(clock.now)
            assert len(recent) < limit
        else:
            assert len(recent) == limit
            assert wait == pytest.approx(min(recent) + period - clock.now)
            assert 0 < wait <= period
        assert len(limiter) <= 6


# --- username backoff and the login throttle ---


def test_backoff_starts_after_the_free_failures_and_doubles_to_the_cap() -> None:
    clock = FakeClock()
    backoff = UsernameBackoff(clock, free_failures=3, base_s=1.0, cap_s=8.0, reset_s=100.0)
    waits = []
    for _ in range(8):
        assert backoff.wait_s("admin") is None  # each failure below happens once the name is open again
        backoff.failed("admin")
        wait = backoff.wait_s("admin") or 0.0
        waits.append(wait)
        clock.now += wait
    assert waits == [0.0, 0.0, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]


def test_backoff_is_per_name_and_forgotten_on_success_or_after_a_quiet_spell() -> None:
    clock = FakeClock()
    backoff = UsernameBackoff(clock, free_failures=1, base_s=1.0, cap_s=4.0, reset_s=10.0)
    backoff.failed("admin")
    assert backoff.wait_s("admin") == pytest.approx(1.0)
    assert backoff.wait_s("other") is None
    backoff.succeeded("admin")
    assert backoff.wait_s("admin") is None
    backoff.failed("admin")
    backoff.failed("admin")
    clock.now += 11.0
    backoff.failed("someone")  # evicts names whose last failure is older than reset_s
    assert len(backoff) == 1
    assert backoff.wait_s("admin") is None


def test_backoff_memory_is_bounded_and_names_are_digests() -> None:
    clock = FakeClock()
    backoff = UsernameBackoff(clock, max_keys=3)
    for i in range(10):
        backoff.failed("u" * 100_000 + str(i))
        clock.now += 0.001
    assert len(backoff) == 3


@settings(deadline=None, max_examples=200)
@given(st.lists(st.tuples(st.floats(0, 120), st.booleans()), max_size=80))
def test_backoff_never_waits_longer_than_the_cap(steps: list[tuple[float, bool]]) -> None:
    clock = FakeClock()
    backoff = UsernameBackoff(clock, free_failures=2, base_s=0.5, cap_s=30.0, reset_s=300.0)
    for pause, ok in steps:
        clock.now += pause
        if backoff.wait_s("admin") is None:
            if ok:
                backoff.succeeded("admin")
            else:
                backoff.failed("admin")
        wait = backoff.wait_s("admin")
        assert wait is None or 0 < wait <= 30.0


def test_the_throttle_lets_a_known_address_past_the_username_backoff() -> None:
    clock = FakeClock()
    throttle = LoginThrottle(
        SlidingWindowLimiter(100, 60.0, clock),
        UsernameBackoff(clock, free_failures=2, base_s=10.0, cap_s=60.0),
        clock,
        known_for_s=3600.0,
    )
    throttle.record("admin", "192.0.2.1", ok=True)
    for address in ("203.0.113.1", "203.0.113.2"):
        throttle.record("admin", address, ok=False)
    assert throttle.username_wait_s("admin", "203.0.113.9") == pytest.approx(10.0)
    assert throttle.username_wait_s("admin", "192.0.2.1") is None
    clock.now += 3601.0  # a known address is known for a while, not for ever
    for address in ("203.0.113.3", "203.0.113.4"):
        throttle.record("admin", address, ok=False)
    assert throttle.username_wait_s("admin", "192.0.2.1") == pytest.approx(10.0)


def test_the_throttle_counts_attempts_per_address() -> None:
    clock = FakeClock()
    throttle = LoginThrottle(SlidingWindowLimiter(2, 60.0, clock), UsernameBackoff(clock), clock)
    assert throttle.address_wait_s("a") is None
    assert throttle.address_wait_s("a") is None
    assert throttle.address_wait_s("a") == pytest.approx(60.0)
    assert throttle.address_wait_s("b") is None
