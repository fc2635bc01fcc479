"""The faults a sandbox injects, and the checks on a change to them."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from enum import StrEnum

# Longest refuse window the control API accepts; longer is surely a typo.
REFUSE_MAX_S = 3600.0
# Float arithmetic on five shares may overshoot 1 by a rounding error; that is not a misconfiguration.
RATES_SUM_TOLERANCE = 1e-9


class Fault(StrEnum):
    NONE = "none"
    HANG = "hang"
    ERROR = "error"
    THROTTLE = "throttle"
    REJECT = "reject"
    GARBAGE = "garbage"


# In the order they are tried against one random draw.
FAULT_OF_RATE = {
    "hang_rate": Fault.HANG,
    "error_rate": Fault.ERROR,
    "throttle_rate": Fault.THROTTLE,
    "reject_rate": Fault.REJECT,
    "garbage_rate": Fault.GARBAGE,
}
RATES = tuple(FAULT_OF_RATE)


@dataclass
class SandboxFaults:
    """Faults to inject; mutable at runtime (directly or with PUT /_control/faults).

    The rates are shares of valid /send requests, tried in the order hang, error, throttle, reject, garbage
    against one random draw, so they must add up to at most 1. `seed` is read at start and on PUT.
    `refuse_for_s` only works standalone: setting it opens a window of refused connections.
    """

    latency_ms: float = 0.0  # mean of an exponential distribution; 0 = none
    latency_max_ms: float = 10_000.0  # cap on one latency sample
    error_rate: float = 0.0  # 500/502/503
    throttle_rate: float = 0.0  # 429 with Retry-After: 1
    garbage_rate: float = 0.0  # 200 with a bad body
    hang_rate: float = 0.0  # no answer until the client gives up or the sandbox shuts down
    reject_rate: float = 0.0  # 400
    refuse_for_s: float = 0.0
    seed: int | None = None

    def validate(self) -> None:
        """Raise ValueError when a value is out of range."""
        for name in ("latency_ms", "latency_max_ms", "refuse_for_s", *RATES):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0")
        for name in RATES:
            if getattr(self, name) > 1:
                raise ValueError(f"{name} must be <= 1")
        if sum(getattr(self, name) for name in RATES) > 1 + RATES_SUM_TOLERANCE:
            raise ValueError("the rates must add up to at most 1")
        if self.refuse_for_s > REFUSE_MAX_S:
            raise ValueError(f"refuse_for_s must be <= {REFUSE_MAX_S:g}")

    def any_fault(self) -> bool:
        return bool(
            self.hang_rate or self.error_rate or self.throttle_rate or self.reject_rate or self.garbage_rate
        )


FLOAT_FIELDS = frozenset(f.name for f in dataclasses.fields(SandboxFaults)) - {"seed"}


def check_fault_changes(changes: object) -> str | None:
    """Why a partial update of the faults is malformed, or None; the ranges are `validate`'s job."""
    if not isinstance(changes, dict):
        return "body must be a JSON object"
    for name, value in changes.items():
        if name == "seed":
            if value is not None and type(value) is not int:
                return "seed must be an integer or null"
        elif name in FLOAT_FIELDS:
            # `type(...)`: JSON true must not pass for 1.
            if type(value) not in (int, float):
                return f"{name} must be a number"
        else:
            return f"unknown field {name!r}"
    return None
