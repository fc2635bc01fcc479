"""Tests of mailer.domain.breaker, with a fake clock."""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from mailer.domain.breaker import MAX_COOLDOWN_FACTOR, BreakerState, CircuitBreaker

COOLDOWN_S = 5.0


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(
    clock: FakeClock, *, consecutive: int = 3, ratio: float = 0.5, window: int = 4
) -> tuple[CircuitBreaker, list[tuple[BreakerState, BreakerState]]]:
    changes: list[tuple[BreakerState, BreakerState]] = []
    breaker = CircuitBreaker(
        consecutive, ratio, window, COOLDOWN_S, clock, on_change=lambda old, new: changes.append((old, new))
    )
    return breaker, changes


def state(breaker: CircuitBreaker) -> BreakerState:
    """The state, through a call: mypy would otherwise narrow the property across statements."""
    return breaker.state


def open_it(breaker: CircuitBreaker) -> None:
    while state(breaker) is BreakerState.CLOSED:
        breaker.record_failure()


def test_starts_closed_and_allows() -> None:
    breaker, changes = make(FakeClock())
    assert state(breaker) is BreakerState.CLOSED
    assert breaker.allow()
    assert breaker.reopens_in_s() == 0
    breaker.record_success()
    assert state(breaker) is BreakerState.CLOSED
    assert changes == []


def test_opens_after_consecutive_failures() -> None:
    breaker, changes = make(FakeClock(), consecutive=3, window=100)
    breaker.record_failure()
    breaker.record_failure()
    assert state(breaker) is BreakerState.CLOSED
    breaker.record_failure()
    assert state(breaker) is BreakerState.OPEN
    assert not breaker.allow()
    assert breaker.reopens_in_s() == COOLDOWN_S
    assert changes == [(BreakerState.CLOSED, BreakerState.OPEN)]


def test_success_breaks_the_run() -> None:
    breaker, _ = make(FakeClock(), consecutive=3, window=100)
    for _ in range(10):
        breaker.record_failure()
        breaker.record_failure()
        breaker.record_success()
    assert state(breaker) is BreakerState.CLOSED


def test_opens_on_failure_share_of_a_full_window() -> None:
    breaker, _ = make(FakeClock(), consecutive=100, ratio=0.5, window=4)
    breaker.record_failure()
    breaker.record_success()
    breaker.record_failure()
    assert state(breaker) is BreakerState.CLOSED  # 2 of 3, but the window is not full yet
    breaker.record_success()
    assert state(breaker) is BreakerState.CLOSED  # a success never opens it
    breaker.record_failure()
    assert state(breaker) is BreakerState.OPEN  # S F S F: half failed


def test_window_share_counts_only_the_last_outcomes() -> None:
    breaker, _ = make(FakeClock(), consecutive=100, ratio=0.75, window=4)
    for failed in (True, True, True, False, False, False, False, True, True):
        (breaker.record_failure if failed else breaker.record_success)()
    assert state(breaker) is BreakerState.CLOSED  # the last four, S S F F, hold two failures
    breaker.record_failure()
    assert state(breaker) is BreakerState.OPEN  # S F F F


def test_cooldown_then_half_open_with_one_probe() -> None:
    clock = FakeClock()
    breaker, changes = make(clock)
    open_it(breaker)
    clock.now += COOLDOWN_S - 0.1
    assert breaker.reopens_in_s() == pytest.approx(0.1)
    assert not breaker.allow()
    clock.now += 0.1
    assert state(breaker) is BreakerState.HALF_OPEN
    assert breaker.reopens_in_s() == 0
    assert breaker.allow()
    assert not breaker.allow()
    assert not breaker.allow()
    assert changes[-1] == (BreakerState.OPEN, BreakerState.HALF_OPEN)


def test_probe_success_closes_and_resets() -> None:
    clock = FakeClock()
    breaker, changes = make(clock, consecutive=3, window=100)
    breaker.record_failure()
    breaker.record_failure()
    breaker.record_failure()
    clock.now += COOLDOWN_S
    assert breaker.allow()
    breaker.record_success()
    assert state(breaker) is BreakerState.CLOSED
    assert changes[-1] == (BreakerState.HALF_OPEN, BreakerState.CLOSED)
    breaker.record_failure()
    breaker.record_failure()
    assert state(breaker) is BreakerState.CLOSED  # the old failures were forgotten


def test_probe_failure_reopens_with_a_longer_cooldown_up_to_a_cap() -> None:
    clock = FakeClock()
    breaker, changes = make(clock)
    open_it(breaker)
    cooldowns = []
    for _ in range(6):
        clock.now += breaker.reopens_in_s()
        assert breaker.allow()
        breaker.record_failure()
        assert state(breaker) is BreakerState.OPEN
        cooldowns.append(breaker.reopens_in_s())
    assert cooldowns == [10, 20, 40, 40, 40, 40]
    assert max(cooldowns) == COOLDOWN_S * MAX_COOLDOWN_FACTOR
    assert changes[-1] == (BreakerState.HALF_OPEN, BreakerState.OPEN)
    # Recovery restores the configured cooldown.
    clock.now += breaker.reopens_in_s()
    assert breaker.allow()
    breaker.record_success()
    open_it(breaker)
    assert breaker.reopens_in_s() == COOLDOWN_S


def test_release_probe_lets_another_probe_go() -> None:
    clock = FakeClock()
    breaker, _ = make(clock)
    open_it(breaker)
    clock.now += COOLDOWN_S
    assert breaker.allow()
    assert not breaker.allow()
    breaker.release_probe()
    assert state(breaker) is BreakerState.HALF_OPEN
    assert breaker.allow()
    assert not breaker.allow()


def test_outcomes_while_open_are_ignored() -> None:
    clock = FakeClock()
    breaker, changes = make(clock)
    open_it(breaker)
    breaker.record_success()
    breaker.record_failure()
    assert state(breaker) is BreakerState.OPEN
    assert breaker.reopens_in_s() == COOLDOWN_S
    assert changes == [(BreakerState.CLOSED, BreakerState.OPEN)]


def test_any_outcome_in_half_open_decides() -> None:
    clock = FakeClock()
    breaker, _ = make(clock)
    open_it(breaker)
    clock.now += COOLDOWN_S
    breaker.record_success()  # a late answer to a request sent before opening: the provider answers
    assert state(breaker) is BreakerState.CLOSED


def test_state_names() -> None:
    assert [s.value for s in BreakerState] == ["closed", "open", "half_open"]


@pytest.mark.parametrize(
    ("consecutive", "ratio", "window", "cooldown"),
    [(0, 0.5, 1, 1.0), (1, 0.0, 1, 1.0), (1, 1.5, 1, 1.0), (1, 0.5, 0, 1.0), (1, 0.5, 1, 0.0)],
)
def test_rejects_nonsense(consecutive: int, ratio: float, window: int, cooldown: float) -> None:
    with pytest.raises(ValueError, match="must"):
        CircuitBreaker(consecutive, ratio, window, cooldown, FakeClock())


class BreakerMachine(RuleBasedStateMachine):
    """Random interleavings of requests, outcomes and time: at most one probe, nothing while cooling down."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.breaker = CircuitBreaker(3, 0.5, 6, COOLDOWN_S, self.clock, on_change=self.changed)
        self.probes_out = 0

    def changed(self, old: BreakerState, new: BreakerState) -> None:
        assert old is not new
        assert (old, new) in {
            (BreakerState.CLOSED, BreakerState.OPEN),
            (BreakerState.OPEN, BreakerState.HALF_OPEN),
            (BreakerState.HALF_OPEN, BreakerState.OPEN),
            (BreakerState.HALF_OPEN, BreakerState.CLOSED),
        }
        self.probes_out = 0

    @rule(seconds=st.floats(0, 3 * COOLDOWN_S))
    def time_passes(self, seconds: float) -> None:
        self.clock.now += seconds

    @rule()
    def request(self) -> None:
        cooling = self.breaker.reopens_in_s() > 0
        state = self.breaker.state
        allowed = self.breaker.allow()
        if cooling:
            assert state is BreakerState.OPEN
            assert not allowed
        if state is BreakerState.HALF_OPEN and allowed:
            assert self.probes_out == 0
            self.probes_out += 1

    @rule()
    def success(self) -> None:
        self.breaker.record_success()

    @rule()
    def failure(self) -> None:
        self.breaker.record_failure()

    @precondition(lambda self: self.probes_out == 1)
    @rule()
    def probe_cancelled(self) -> None:
        self.breaker.release_probe()
        self.probes_out = 0

    @invariant()
    def consistent(self) -> None:
        state = self.breaker.state
        assert 0 <= self.breaker.reopens_in_s() <= COOLDOWN_S * MAX_COOLDOWN_FACTOR
        assert (self.breaker.reopens_in_s() > 0) == (state is BreakerState.OPEN)
        assert self.probes_out <= 1


BreakerMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=30, deadline=None)
test_breaker_machine = BreakerMachine.TestCase
