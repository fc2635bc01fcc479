"""A circuit breaker that stops hammering a provider that is down; pure, with an injected clock."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from enum import StrEnum

# Each failed probe doubles the cooldown, up to this many times the configured one: a provider that stays down
# for minutes then gets a probe every 40 s or so instead of every 5 s, while a short blip (one failed probe at
# most) still recovers within a cooldown or two. A successful probe restores the configured cooldown.
MAX_COOLDOWN_FACTOR = 8.0


class BreakerState(StrEnum):
    CLOSED = "closed"  # requests flow; outcomes are counted
    OPEN = "open"  # requests are refused until the cooldown has passed
    HALF_OPEN = "half_open"  # one probe at a time decides: success closes, failure reopens


class CircuitBreaker:
    """Closed, open, half-open: opens after `consecutive_failures` failures in a row, or when the last
    `window` outcomes (a full window) hold a failure share of at least `failure_ratio`; after `cooldown_s` it
    lets one probe through at a time.

    Outcomes reported while open are ignored: they belong to requests sent before it opened. While half-open,
    the next outcome reported is taken as the probe's, whichever request it came from: it is fresh news from
    the provider either way.
    """

    def __init__(
        self,
        consecutive_failures: int,
        failure_ratio: float,
        window: int,
        cooldown_s: float,
        clock: Callable[[], float],
        on_change: Callable[[BreakerState, BreakerState], None] | None = None,
    ) -> None:
        if consecutive_failures < 1:
            raise ValueError("consecutive_failures must be at least 1")
        if not 0 < failure_ratio <= 1:
            raise ValueError("failure_ratio must be in (0, 1]")
        if window < 1:
            raise ValueError("window must be at least 1")
        if not cooldown_s > 0:
            raise ValueError("cooldown_s must be positive")
        self._threshold = consecutive_failures
        self._failure_ratio = failure_ratio
        self._base_cooldown_s = cooldown_s
        self._clock = clock
        self._on_change = on_change

        self._state = BreakerState.CLOSED
        self._consecutive = 0
        self._outcomes: deque[bool] = deque(maxlen=window)  # True = failure
        self._failures_in_window = 0
        self._cooldown_s = cooldown_s
        self._opened_at = 0.0
        self._probe_out = False

    @property
    def state(self) -> BreakerState:
        """The current state; an open breaker whose cooldown has passed becomes half-open when looked at."""
        if self._state is BreakerState.OPEN and self._clock() >= self._opened_at + self._cooldown_s:
            self._move(BreakerState.HALF_OPEN)
        return self._state

    def allow(self) -> bool:
        """Whether a request may go now. In half-open, True means "you are the probe": report its outcome with
        `record_success` or `record_failure`, or call `release_probe` if it ended without one."""
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.HALF_OPEN and not self._probe_out:
            self._probe_out = True
            return True
        return False

    def record_success(self) -> None:
        """A request reached the provider and got a sound answer."""
        state = self.state
        if state is BreakerState.CLOSED:
            self._consecutive = 0
            self._remember(failed=False)
        elif state is BreakerState.HALF_OPEN:
            self._close()

    def record_failure(self) -> None:
        """A request failed in a way that says the provider is unwell (5xx, timeout, connection error)."""
        state = self.state
        if state is BreakerState.CLOSED:
            self._consecutive += 1
            self._remember(failed=True)
            if self._consecutive >= self._threshold or self._window_says_open():
                self._open()
        elif state is BreakerState.HALF_OPEN:
            self._cooldown_s = min(self._cooldown_s * 2, self._base_cooldown_s * MAX_COOLDOWN_FACTOR)
            self._open()

    def release_probe(self) -> None:
        """The probe ended without an outcome (cancelled, shut down): let another request probe."""
        self._probe_out = False

    def reopens_in_s(self) -> float:
        """Seconds until an open breaker lets a probe through; 0 when it is not open."""
        if self.state is not BreakerState.OPEN:
            return 0.0
        return max(0.0, self._opened_at + self._cooldown_s - self._clock())

    def _remember(self, *, failed: bool) -> None:
        if len(self._outcomes) == self._outcomes.maxlen and self._outcomes[0]:
            self._failures_in_window -= 1  # the oldest outcome, a failure, is about to drop out
        self._outcomes.append(failed)
        self._failures_in_window += failed

    def _window_says_open(self) -> bool:
        full = len(self._outcomes) == self._outcomes.maxlen
        return full and self._failures_in_window >= self._failure_ratio * len(self._outcomes)

    def _reset_counts(self) -> None:
        self._consecutive = 0
        self._outcomes.clear()
        self._failures_in_window = 0

    def _open(self) -> None:
        # The counts start afresh after the next close: old failures must not reopen a recovered provider.
        self._reset_counts()
        self._opened_at = self._clock()
        self._probe_out = False
        self._move(BreakerState.OPEN)

    def _close(self) -> None:
        self._reset_counts()
        self._cooldown_s = self._base_cooldown_s
        self._probe_out = False
        self._move(BreakerState.CLOSED)

    def _move(self, new: BreakerState) -> None:
        old, self._state = self._state, new
        if old is not new and self._on_change is not None:
            self._on_change(old, new)
