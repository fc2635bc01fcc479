"""The `report_runs` table: which process sends the report of a date, and what became of it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from enum import StrEnum

from sqlalchemy import and_, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from mailer.store.tables import report_runs

# Keeps the error text of a failed attempt to a useful size in the row.
ERROR_MAX_CHARS = 1000


class RunStatus(StrEnum):
    PENDING = "pending"  # the row exists; nobody has tried yet
    SENDING = "sending"  # claimed_by holds the lease until lease_until
    SENT = "sent"
    FAILED = "failed"  # the last attempt failed; any process may retry after next_attempt_at
    ABANDONED = "abandoned"  # every attempt failed; nobody tries again


@dataclass(frozen=True, slots=True)
class RunState:
    """A report_runs row."""

    report_date: date
    status: RunStatus
    attempts: int
    claimed_by: str | None
    lease_until: datetime | None
    next_attempt_at: datetime | None
    sent_at: datetime | None
    last_error: str | None


class ReportRuns:
    """Claims and records report runs for one process (`owner`); every method is one short transaction."""

    def __init__(self, db: AsyncEngine, owner: str) -> None:
        self._db = db
        self.owner = owner
        self._is_postgres = db.dialect.name == "postgresql"

    async def try_claim(self, report_date: date, now: datetime, lease_s: float) -> RunState | None:
        """Take the report of `report_date` if nobody has sent it, nobody holds a live lease on it and its
        retry is due; the row (with `attempts` counting this one) when we hold it, else None.

        The INSERT … ON CONFLICT DO NOTHING makes the row exist exactly once; the conditional UPDATE is atomic
        on both databases (a row lock on PostgreSQL, the single writer on SQLite), so one process wins.
        """
        insert = (postgresql.insert if self._is_postgres else sqlite.insert)(report_runs)
        claimable = or_(
            and_(
                report_runs.c.status.in_([RunStatus.PENDING.value, RunStatus.FAILED.value]),
                or_(report_runs.c.next_attempt_at.is_(None), report_runs.c.next_attempt_at <= now),
            ),
            # A sender that died (or hung past its lease) is replaced.
            and_(report_runs.c.status == RunStatus.SENDING.value, report_runs.c.lease_until < now),
        )
        async with self._db.begin() as conn:
            await conn.execute(
                insert.values(
                    report_date=report_date,
                    status=RunStatus.PENDING.value,
                    attempts=0,
                    created_at=now,
                    updated_at=now,
                ).on_conflict_do_nothing(index_elements=["report_date"])
            )
            claimed = await conn.execute(
                update(report_runs)
                .where(report_runs.c.report_date == report_date, claimable)
                .values(
                    status=RunStatus.SENDING.value,
                    claimed_by=self.owner,
                    lease_until=now + timedelta(seconds=lease_s),
                    attempts=report_runs.c.attempts + 1,
                    updated_at=now,
                )
            )
            if claimed.rowcount != 1:
                return None
        return await self.state(report_date)

    async def mark_sent(self, report_date: date, now: datetime) -> bool:
        """Record the send; False when our lease had already been taken over (the report went out twice)."""
        return await self._finish(
            report_date,
            now,
            status=RunStatus.SENT,
            sent_at=now,
            last_error=None,
            next_attempt_at=None,
        )

    async def mark_failed(
        self, report_date: date, now: datetime, error: str, retry_at: datetime | None
    ) -> bool:
        """Record a failed attempt: retried by whoever comes first after `retry_at`; abandoned when None."""
        return await self._finish(
            report_date,
            now,
            status=RunStatus.FAILED if retry_at is not None else RunStatus.ABANDONED,
            last_error=error[:ERROR_MAX_CHARS],
            next_attempt_at=retry_at,
        )

    async def _finish(self, report_date: date, now: datetime, **values: object) -> bool:
        async with self._db.begin() as conn:
            result = await conn.execute(
                update(report_runs)
                .where(
                    report_runs.c.report_date == report_date,
                    report_runs.c.status == RunStatus.SENDING.value,
                    report_runs.c.claimed_by == self.owner,
                )
                .values(lease_until=None, updated_at=now, **values)
            )
            return bool(result.rowcount == 1)

    async def state(self, report_date: date) -> RunState | None:
        async with self._db.connect() as conn:
            row = (
                await conn.execute(select(report_runs).where(report_runs.c.report_date == report_date))
            ).one_or_none()
        if row is None:
            return None
        return RunState(
            report_date=row.report_date,
            status=RunStatus(row.status),
            attempts=row.attempts,
            claimed_by=row.claimed_by,
            lease_until=row.lease_until,
            next_attempt_at=row.next_attempt_at,
            sent_at=row.sent_at,
            last_error=row.last_error,
        )
