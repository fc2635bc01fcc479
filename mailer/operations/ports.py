"""What the operations ask of the sending engine, declared here where it is used."""

from __future__ import annotations

from typing import Protocol


class EnginePort(Protocol):
    def mailout_changed(self, mailout_id: int) -> None:
        """A mailout was created or changed: wake the scheduler (and, on PostgreSQL, every other process)."""

    async def stop_mailout(self, mailout_id: int) -> None:
        """Stop sending for a mailout now: cut requests in flight and wait until none is left."""


class IdleEngine:
    """The port when no engine runs (API-only tests, `migrate`): nothing to wake, nothing to stop."""

    def mailout_changed(self, mailout_id: int) -> None:
        return None

    async def stop_mailout(self, mailout_id: int) -> None:
        return None
