"""Every SQL statement of the sending engine, as one store over one AsyncEngine (PostgreSQL or SQLite).

The statements live in modules by who uses them (`scans`, `activation`, `claims`, `finishing`, `outcomes`,
`leasing`); each actor declares the small Protocol it needs. Each method opens its own short transaction and
returns plain data: on SQLite the pool has one connection, so no connection is ever held across a wait for
anything but the database.
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from mailer.store.activation import Activation, ActivationQueries
from mailer.store.claims import ClaimQueries
from mailer.store.finishing import FinishingQueries
from mailer.store.leasing import RENEW_CHUNK, LeaseQueries, LeaseRecovery
from mailer.store.outcomes import OutcomeQueries
from mailer.store.scans import ScanQueries, ScanResult

__all__ = ["RENEW_CHUNK", "Activation", "DispatchStore", "LeaseRecovery", "ScanResult"]


class DispatchStore(
    ScanQueries, ActivationQueries, ClaimQueries, FinishingQueries, OutcomeQueries, LeaseQueries
):
    """The sending engine's queries over one database (PostgreSQL or SQLite)."""

    def __init__(self, db: AsyncEngine, record_db: AsyncEngine | None = None) -> None:
        self._db = db
        self.is_postgres = db.dialect.name == "postgresql"
        # PostgreSQL: outcomes are written in autocommit, by default on an engine whose sessions commit
        # asynchronously (`create_record_engine`); without one, on the main engine (durable commits).
        self._record_db = record_db or db.execution_options(isolation_level="AUTOCOMMIT")

    # --- cross-process wake-ups (PostgreSQL) ---------------------------------------------------------------

    async def notify(self, channel: str, payload: str) -> None:
        async with self._db.begin() as conn:
            await conn.execute(
                text("SELECT pg_notify(:channel, :payload)"), {"channel": channel, "payload": payload}
            )
