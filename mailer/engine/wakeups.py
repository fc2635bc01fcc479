"""Cross-process wake-ups on PostgreSQL: NOTIFY on a change, LISTEN on a dedicated connection."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Protocol

import asyncpg
import structlog

from mailer.domain.retry import backoff_ceiling_s

log = structlog.get_logger(__name__)

CHANNEL = "mailer_mailouts"
# Reconnect delays after the listening connection drops: quick at first, then no more than every 30 s.
RECONNECT_BASE_S = 0.5
RECONNECT_CAP_S = 30.0
CONNECT_TIMEOUT_S = 10.0
# A silently dead connection (a cut network) never reports its end: a ping this often finds it.
KEEPALIVE_S = 30.0
KEEPALIVE_TIMEOUT_S = 5.0

OnNotify = Callable[[int | None], None]  # a mailout id, or None for "something may have changed"


class NotifyStore(Protocol):
    """The one statement the publisher needs: a PostgreSQL NOTIFY."""

    async def notify(self, channel: str, payload: str) -> None: ...


class PgWakeups:
    """Publishes this process's mailout changes and delivers other processes' to `on_notify`."""

    def __init__(self, dsn: str, store: NotifyStore, on_notify: OnNotify) -> None:
        self._dsn = dsn
        self._store = store
        self._on_notify = on_notify
        # Changed ids waiting to be published; a set, so a burst of changes to one mailout is one NOTIFY.
        self._outbox: set[int] = set()
        self._outbox_ready = asyncio.Event()
        # Whether the current LISTEN connection got as far as listening (resets the reconnect backoff).
        self._listening = False

    def publish(self, mailout_id: int) -> None:
        self._outbox.add(mailout_id)
        self._outbox_ready.set()

    async def run_publisher(self) -> None:
        while True:
            await self._outbox_ready.wait()
            self._outbox_ready.clear()
            ids, self._outbox = self._outbox, set()
            for mailout_id in sorted(ids):
                try:
                    await self._store.notify(CHANNEL, str(mailout_id))
                except Exception:
                    # Other processes find the change at their safety re-scan; this one is awake already.
                    log.exception("NOTIFY failed", mailout_id=mailout_id)

    async def run_listener(self) -> None:
        failures = 0
        while True:
            self._listening = False
            error = "the LISTEN connection ended"
            try:
                await self._listen_once()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
                error = str(exc)
            # Failures count from the last connection that worked: a drop after hours of listening is the
            # first failure, not the n-th of the process's life (which would wait the cap every time).
            failures = 1 if self._listening else failures + 1
            delay_s = backoff_ceiling_s(failures, RECONNECT_BASE_S, RECONNECT_CAP_S)
            log.warning("LISTEN connection lost; reconnecting", error=error, retry_in_s=delay_s)
            await asyncio.sleep(delay_s)

    async def _listen_once(self) -> None:
        conn: Any = await asyncpg.connect(self._dsn, timeout=CONNECT_TIMEOUT_S)
        lost = asyncio.Event()
        try:
            conn.add_termination_listener(lambda _conn: lost.set())
            await conn.add_listener(CHANNEL, self._deliver)
            self._listening = True
            # Whatever was published while we were not listening is lost: look at everything once.
            self._on_notify(None)
            while not lost.is_set():
                try:
                    async with asyncio.timeout(KEEPALIVE_S):
                        await lost.wait()
                except TimeoutError:
                    await conn.fetchval("SELECT 1", timeout=KEEPALIVE_TIMEOUT_S)
            raise ConnectionResetError("the LISTEN connection was closed")
        finally:
            # terminate(), not close(): no await here, so a cancelled task still lets the socket go.
            conn.terminate()

    def _deliver(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        try:
            mailout_id: int | None = int(payload)
        except ValueError:
            mailout_id = None
        self._on_notify(mailout_id)
