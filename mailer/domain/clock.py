"""The one wall clock: a timezone-aware UTC now, passed around as a `Clock` where tests need another."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)
