"""What /readyz reports: components register a check, alarms carry a reason."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import structlog

log = structlog.get_logger(__name__)

Check = Callable[[], Awaitable[str | None]]  # None when healthy, else a short reason


@dataclass
class Health:
    """Readiness checks and standing alarms (for example a provider that refuses our token)."""

    checks: dict[str, Check] = field(default_factory=dict)
    alarms: dict[str, str] = field(default_factory=dict)

    def add_check(self, name: str, check: Check) -> None:
        self.checks[name] = check

    def raise_alarm(self, name: str, reason: str) -> None:
        self.alarms[name] = reason

    def clear_alarm(self, name: str) -> None:
        self.alarms.pop(name, None)

    async def report(self) -> tuple[bool, dict[str, str]]:
        """(ready, {component: "ok" or reason}); alarms are reported but only checks decide readiness."""
        ready = True
        detail: dict[str, str] = {}
        for name, check in self.checks.items():
            try:
                problem = await check()
            except Exception as exc:  # a failing check is a finding, not a crash of /readyz
                # /readyz answers anyone: a driver's message names hosts, users and databases. The whole
                # of it goes to the log; the answer says only what kind of failure it was.
                log.warning("readiness check failed", check=name, error=f"{type(exc).__name__}: {exc}")
                problem = f"unavailable ({type(exc).__name__})"
            detail[name] = problem or "ok"
            ready = ready and problem is None
        for name, reason in self.alarms.items():
            detail[f"alarm:{name}"] = reason
        return ready, detail
