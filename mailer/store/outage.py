"""Telling "the database is away" from "this statement is wrong", and riding out the former.

A restarted PostgreSQL, a dropped connection or a network cut makes a statement fail although nothing is
wrong with it: it will succeed once the pool has a live connection again. Such a failure is worth waiting
out (the engine's state must reach the database); any other failure is a finding to report at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog
from sqlalchemy.exc import DBAPIError

from mailer.domain.retry import backoff_ceiling_s

log = structlog.get_logger(__name__)

# SQLSTATE classes and codes that mean "no usable connection": 08 connection exception; 57P01-57P03
# admin shutdown, crash shutdown, cannot connect now (starting up or shutting down).
_CONNECTION_CLASS = "08"
_SHUTDOWN_CODES = frozenset({"57P01", "57P02", "57P03"})
# Retry delays while the database is away: quick first (a dropped connection is replaced at once), then
# no more than once a second so that a restart is noticed within a second of its end.
RETRY_BASE_S = 0.05
RETRY_CAP_S = 1.0


def is_disconnect(exc: BaseException) -> bool:
    """True when `exc` says the database could not be reached, not that the statement failed on its merits."""
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return True
        code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
        if isinstance(code, str) and (code.startswith(_CONNECTION_CLASS) or code in _SHUTDOWN_CODES):
            return True
        cause = exc.orig.__cause__ if exc.orig is not None else None
        return cause is not None and is_disconnect(cause)
    # Connecting failed (refused, reset, timed out) before any statement ran.
    if isinstance(exc, OSError | TimeoutError):
        return True
    module = type(exc).__module__
    # asyncpg's own errors, seen bare when the adapter chains them or a statement ran on the driver itself
    # (`mailer/store/direct.py`): a closed connection, a connection exception or a shutdown.
    code = getattr(exc, "sqlstate", None)
    return module.startswith("asyncpg") and (
        type(exc).__name__ in ("ConnectionDoesNotExistError", "InterfaceError")
        or (isinstance(code, str) and (code.startswith(_CONNECTION_CLASS) or code in _SHUTDOWN_CODES))
    )


async def while_unreachable[T](operation: Callable[[], Awaitable[T]], give_up_after_s: float, what: str) -> T:
    """Run `operation`, again after each disconnect, for at most `give_up_after_s`; other errors, and the
    last disconnect once the time is up, are raised."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + give_up_after_s
    failures = 0
    while True:
        failures += 1
        delay_s = backoff_ceiling_s(failures, RETRY_BASE_S, RETRY_CAP_S)
        try:
            return await operation()
        except Exception as exc:
            if not is_disconnect(exc) or loop.time() + delay_s > deadline:
                raise
            log.warning(
                "database unreachable; retrying", what=what, retry_in_s=delay_s, error=type(exc).__name__
            )
        await asyncio.sleep(delay_s)
