"""The daily report actor: sleeps until the local send time, claims the date, sends, records, retries.

Several processes may run it against one PostgreSQL database: the `report_runs` row of a date decides which
one sends (see `ReportRuns.try_claim`). Nothing here may disturb the service: every failure is logged and
retried later, and only cancellation ends `run()`.
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import date, datetime, timedelta
from email.message import EmailMessage

import structlog
from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine

from mailer import keys
from mailer.domain.clock import Clock, utc_now
from mailer.engine.supervisor import Supervisor
from mailer.observability import metrics
from mailer.report.content import DailyReport, build_email
from mailer.report.queries import active_mailouts
from mailer.report.runs import ReportRuns, RunState, RunStatus
from mailer.report.schedule import ReportSchedule, latest_slot, next_slot
from mailer.report.smtp import send_email
from mailer.settings import Settings

log = structlog.get_logger(__name__)

REPORT_PERIOD = timedelta(hours=24)
HEALTH_CHECK = "report"
ACTOR_NAME = "daily-report"

SendMail = Callable[[EmailMessage, Settings], Awaitable[None]]


def process_owner() -> str:
    """Who holds a claim, readable in the table: host, pid and a random part for pid reuse."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"[:128]


async def build_report(
    db: AsyncEngine, settings: Settings, report_date: date, until: datetime
) -> DailyReport:
    """The report of `report_date`: the mailouts active in the 24 hours before `until`."""
    since = until - REPORT_PERIOD
    async with db.connect() as conn:
        stats = await active_mailouts(conn, since, until)
    return DailyReport(report_date, since, until, settings.report_timezone, stats)


async def send_report(
    db: AsyncEngine,
    settings: Settings,
    report_date: date,
    until: datetime,
    send_mail: SendMail = send_email,
    now: datetime | None = None,
) -> DailyReport:
    """Build the report and hand it to the SMTP server; raises when that fails."""
    if not settings.report_recipients or not settings.report_sender:
        raise ValueError("the report needs MAILER_REPORT_RECIPIENTS and MAILER_REPORT_SENDER")
    report = await build_report(db, settings, report_date, until)
    message = build_email(report, settings.report_sender, settings.report_recipients, now or utc_now())
    await send_mail(message, settings)
    return report


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class DailyReportActor:
    """Sends the daily report once per report date across all processes; `run()` until cancelled."""

    def __init__(
        self,
        db: AsyncEngine,
        settings: Settings,
        *,
        schedule: ReportSchedule | None = None,
        send_mail: SendMail = send_email,
        clock: Clock = utc_now,
        owner: str | None = None,
    ) -> None:
        self._db = db
        self._settings = settings
        self.schedule = schedule or ReportSchedule.from_settings(settings)
        self._send_mail = send_mail
        self._clock = clock
        self.runs = ReportRuns(db, owner or process_owner())
        # Dates this process knows to be settled (sent or abandoned): no query for them until the next date.
        self._settled: set[date] = set()

    async def run(self) -> None:
        log.info(
            "report.scheduled",
            send_time=self.schedule.send_time.isoformat("minutes"),
            zone=str(self.schedule.zone),
        )
        while True:
            try:
                wake_at = await self.step(self._clock())
            except Exception:
                # The database may be down for a while; the service goes on, the report waits for it.
                log.exception("report.step_failed", retry_in_s=self.schedule.retry_base_s)
                wake_at = self._clock() + timedelta(seconds=self.schedule.retry_base_s)
            delay_s = (wake_at - self._clock()).total_seconds()
            await asyncio.sleep(min(max(0.0, delay_s), self.schedule.max_sleep_s))

    async def step(self, now: datetime) -> datetime:
        """Do whatever the report needs at `now`; return when to look again."""
        report_date, slot = latest_slot(now, self.schedule)
        upcoming = next_slot(now, self.schedule)
        if report_date in self._settled or now - slot > timedelta(seconds=self.schedule.catch_up_s):
            return upcoming
        claim = await self.runs.try_claim(report_date, now, self.schedule.lease_s)
        if claim is None:
            return min(self._watch(await self.runs.state(report_date), now), upcoming)
        retry_at = await self._attempt(claim, slot)
        if retry_at is None:
            self._settled.add(report_date)
            return upcoming
        return min(retry_at, upcoming)

    def _watch(self, state: RunState | None, now: datetime) -> datetime:
        """When to look again at a report another process holds or has settled."""
        # A floor against spinning when the row changes under us between the claim and this read.
        soon = now + timedelta(seconds=1)
        if state is None or state.status in (RunStatus.SENT, RunStatus.ABANDONED):
            if state is not None:
                self._settled.add(state.report_date)
            return next_slot(now, self.schedule)
        if state.status is RunStatus.SENDING and state.lease_until is not None:
            return max(state.lease_until, soon)
        return max(state.next_attempt_at or soon, soon)

    async def _attempt(self, claim: RunState, slot: datetime) -> datetime | None:
        """One send of a claimed report; the retry time, or None when the date is settled."""
        bound = structlog.contextvars.bound_contextvars(
            report_date=claim.report_date.isoformat(), attempt=claim.attempts
        )
        with bound:
            log.info("report.claimed", owner=self.runs.owner)
            try:
                report = await send_report(
                    self._db, self._settings, claim.report_date, slot, self._send_mail, self._clock()
                )
            except Exception as exc:
                metrics.REPORT_RUNS.labels(result=metrics.ReportResult.FAILED.value).inc()
                now = self._clock()
                gave_up = claim.attempts >= self.schedule.max_attempts
                retry_at = None if gave_up else now + self.schedule.retry_delay(claim.attempts)
                await self.runs.mark_failed(claim.report_date, now, describe(exc), retry_at)
                if gave_up:
                    log.error("report.abandoned", error=describe(exc))
                else:
                    log.warning("report.failed", error=describe(exc), retry_at=str(retry_at))
                return retry_at
            metrics.REPORT_RUNS.labels(result=metrics.ReportResult.SENT.value).inc()
            metrics.REPORT_LAST_SENT.set(self._clock().timestamp())
            if not await self.runs.mark_sent(claim.report_date, self._clock()):
                log.warning("report.sent_after_takeover: another process may have sent it too")
            log.info(
                "report.sent",
                recipients=len(self._settings.report_recipients),
                mailouts=len(report.mailouts),
                messages=report.total,
            )
            return None


async def report_ctx(app: web.Application) -> AsyncIterator[None]:
    """Run the daily report actor for the life of the app (added only when `report_enabled`).

    Under its own supervisor, as the engine's actors run under theirs: a crash is logged and the actor
    restarted with backoff, /readyz says it is down meanwhile, and the app runs with or without the engine.
    """
    actor = DailyReportActor(app[keys.DB], app[keys.SETTINGS])
    supervisor = Supervisor()
    supervisor.spawn(ACTOR_NAME, actor.run)
    app[keys.HEALTH].add_check(HEALTH_CHECK, supervisor.health_check)
    try:
        yield
    finally:
        # Nothing to drain: a report cut mid-send is retried once its lease runs out.
        await supervisor.stop(0)
