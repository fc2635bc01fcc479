"""The auth gate: while the provider refuses our token, sending pauses and one probe per interval tests it."""

from __future__ import annotations

from collections.abc import Callable


class AuthGate:
    """While the provider refuses our token, sending pauses; one probe request per interval tests it again.

    Pure: the clock and the pause/resume callbacks are injected, so it is tested like the breaker.
    """

    def __init__(
        self,
        interval_s: float,
        clock: Callable[[], float],
        on_pause: Callable[[str], None],
        on_resume: Callable[[], None],
    ) -> None:
        self._interval_s = interval_s
        self._clock = clock
        self._on_pause = on_pause
        self._on_resume = on_resume
        self.paused = False
        self._probe_at = 0.0
        self._probing = False

    def claim_limit(self, wanted: int) -> int:
        """How many messages an actor may claim now: all it wants, one for a probe, or none."""
        if not self.paused:
            return wanted
        return 0 if self._probing or self._clock() < self._probe_at else 1

    def probe_in_s(self) -> float | None:
        """Seconds until the next probe may go while paused; None when not paused."""
        if not self.paused:
            return None
        if self._probing:
            # A probe is out: its answer either resumes sending (and wakes everyone) or sets a new time.
            return self._interval_s
        return max(0.0, self._probe_at - self._clock())

    def try_send(self) -> bool:
        """May a request go now? While paused, yes for exactly one probe per interval."""
        if not self.paused:
            return True
        if self._probing or self._clock() < self._probe_at:
            return False
        self._probing = True
        return True

    def refused(self, reason: str) -> None:
        """The provider refused our token: pause (once) and probe again after the interval."""
        self._probing = False
        self._probe_at = self._clock() + self._interval_s
        if not self.paused:
            self.paused = True
            self._on_pause(reason)

    def accepted(self) -> None:
        """The provider took our token (it answered a request on its merits)."""
        self._probing = False
        if self.paused:
            self.paused = False
            self._on_resume()

    def inconclusive(self, probe: bool) -> None:
        """A request ended without telling whether the token works; if it was the probe, try again later."""
        if probe and self.paused:
            self._probing = False
            self._probe_at = self._clock() + self._interval_s
