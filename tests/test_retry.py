"""Tests of mailer.domain.retry."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailer.domain.retry import (
    MAX_RETRY_AFTER_S,
    RetryPolicy,
    backoff_ceiling_s,
    backoff_s,
    next_attempt_at,
)

NOW = datetime(2025, 1, 1, 12, tzinfo=UTC)
FAR = NOW + timedelta(days=1)
POLICY = RetryPolicy(base_s=1.0, cap_s=60.0, max_attempts=5)

POLICIES = st.builds(
    lambda base, factor, attempts: RetryPolicy(base, base * factor, attempts),
    st.floats(0.001, 100.0),
    st.floats(1.0, 10_000.0),
    st.integers(1, 50),
)


@pytest.mark.parametrize(
    ("base", "cap", "attempts"), [(0.0, 1.0, 1), (2.0, 1.0, 1), (1.0, float("inf"), 1), (1.0, 2.0, 0)]
)
def test_policy_rejects_nonsense(base: float, cap: float, attempts: int) -> None:
    with pytest.raises(ValueError, match=r"retry delays|max_attempts"):
        RetryPolicy(base, cap, attempts)


def test_backoff_doubles_up_to_the_cap() -> None:
    class Top(random.Random):
        def uniform(self, a: float, b: float) -> float:
            return b

    top = Top()
    assert [backoff_s(n, POLICY, top) for n in range(1, 9)] == [1, 2, 4, 8, 16, 32, 60, 60]


def test_backoff_handles_huge_attempt_numbers() -> None:
    assert 0 <= backoff_s(10**9, POLICY, random.Random(1)) <= POLICY.cap_s
    tiny = RetryPolicy(5e-324, 1e300, 3)
    assert 0 <= backoff_s(5000, tiny, random.Random(1)) <= 1e300


def test_backoff_rejects_attempt_zero() -> None:
    with pytest.raises(ValueError, match="start at 1"):
        backoff_s(0, POLICY, random.Random(1))


def test_backoff_is_jittered() -> None:
    rng = random.Random(42)
    delays = {backoff_s(6, POLICY, rng) for _ in range(50)}
    assert len(delays) == 50
    assert min(delays) < 8 < max(delays)


def test_no_attempt_after_the_last() -> None:
    rng = random.Random(1)
    assert next_attempt_at(NOW, 4, POLICY, rng, None, FAR) is not None
    assert next_attempt_at(NOW, 5, POLICY, rng, None, FAR) is None


def test_no_attempt_at_or_after_the_end() -> None:
    rng = random.Random(1)
    assert next_attempt_at(NOW, 1, POLICY, rng, 30.0, NOW + timedelta(seconds=30)) is None
    assert next_attempt_at(NOW, 1, POLICY, rng, None, NOW) is None
    assert next_attempt_at(NOW, 1, POLICY, rng, None, NOW - timedelta(hours=1)) is None


def test_retry_after_is_respected_and_capped() -> None:
    rng = random.Random(1)
    assert next_attempt_at(NOW, 1, POLICY, rng, 120.0, FAR) == NOW + timedelta(seconds=120)
    huge = next_attempt_at(NOW, 1, POLICY, rng, 10**12, FAR)
    assert huge == NOW + timedelta(seconds=MAX_RETRY_AFTER_S)
    negative = next_attempt_at(NOW, 1, POLICY, rng, -5.0, FAR)
    assert negative is not None
    assert NOW <= negative <= NOW + timedelta(seconds=1)
    assert next_attempt_at(NOW, 1, POLICY, rng, float("nan"), FAR) is not None


def test_huge_delays_do_not_overflow() -> None:
    policy = RetryPolicy(1.0, 1e300, 10**6)
    assert (
        next_attempt_at(NOW, 5000, policy, random.Random(3), None, datetime.max.replace(tzinfo=UTC)) is None
    )


@settings(deadline=None, max_examples=300)
@given(POLICIES, st.integers(1, 10**6), st.randoms(use_true_random=False))
def test_backoff_within_bounds(policy: RetryPolicy, attempt: int, rng: random.Random) -> None:
    delay = backoff_s(attempt, policy, rng)
    # POLICIES keep cap / base under 2**14, so past that many doublings the cap is the bound.
    bound = policy.cap_s if attempt > 100 else min(policy.cap_s, policy.base_s * 2.0 ** (attempt - 1))
    assert 0.0 <= delay <= bound


@settings(deadline=None, max_examples=300)
@given(POLICIES, st.integers(1, 10**9))
def test_backoff_ceiling_doubles_to_the_cap(policy: RetryPolicy, attempt: int) -> None:
    ceiling = backoff_ceiling_s(attempt, policy.base_s, policy.cap_s)
    assert policy.base_s <= ceiling <= policy.cap_s
    # POLICIES keep cap / base under 2**14, so past that many doublings the cap is the value.
    expected = policy.cap_s if attempt > 100 else min(policy.cap_s, policy.base_s * 2.0 ** (attempt - 1))
    assert ceiling == pytest.approx(expected, rel=1e-12)
    # Monotone: a later attempt never waits less, and it at most doubles the wait.
    following = backoff_ceiling_s(attempt + 1, policy.base_s, policy.cap_s)
    assert ceiling <= following <= 2 * ceiling


@given(st.floats(1e-300, 1e300), st.integers(1, 10**12))
def test_backoff_ceiling_never_overflows(base_s: float, attempt: int) -> None:
    assert backoff_ceiling_s(attempt, base_s, 1e300) <= 1e300


def test_backoff_ceiling_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="start at 1"):
        backoff_ceiling_s(0, 1.0, 2.0)
    with pytest.raises(ValueError, match="base_s <= cap_s"):
        backoff_ceiling_s(1, 2.0, 1.0)


@settings(deadline=None, max_examples=300)
@given(
    POLICIES,
    st.integers(0, 60),
    st.randoms(use_true_random=False),
    st.none() | st.floats(-10.0, 1e9, allow_nan=False),
    st.floats(0.0, 1e6).map(lambda s: NOW + timedelta(seconds=s)),
)
def test_next_attempt_properties(
    policy: RetryPolicy, made: int, rng: random.Random, retry_after: float | None, end_at: datetime
) -> None:
    at = next_attempt_at(NOW, made, policy, rng, retry_after, end_at)
    if made >= policy.max_attempts:
        assert at is None
        return
    if at is None:
        return  # the end came first; checked by the cases above
    assert NOW <= at < end_at
    wait_s = (at - NOW).total_seconds()
    honoured = min(max(retry_after or 0.0, 0.0), MAX_RETRY_AFTER_S)
    assert wait_s >= honoured - 1e-6
    assert wait_s <= max(policy.cap_s, honoured) + 1e-6
