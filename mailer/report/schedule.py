"""When the daily report is due: its send time in its zone, the retry delays, and the send instants (pure)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from mailer.domain.retry import backoff_ceiling_s
from mailer.settings import Settings

# Longer than one send can take (build + SMTP timeout), so that a live sender is never replaced.
DEFAULT_LEASE_S = 300.0


@dataclass(frozen=True, slots=True)
class ReportSchedule:
    """When and how persistently the report is sent."""

    send_time: time
    zone: ZoneInfo
    # First retry after a minute (a mail server restarting), doubling to an hour: eight attempts span about
    # four hours, and the report is still useful that morning.
    retry_base_s: float = 60.0
    retry_cap_s: float = 3600.0
    max_attempts: int = 8
    lease_s: float = DEFAULT_LEASE_S
    # A process that starts (or restarts) this long after today's send time still sends a missed report;
    # later than that it waits for tomorrow's, so a deployment in the afternoon sends no surprise report.
    catch_up_s: float = 6 * 3600.0
    # Sleeps are cut into pieces this long so that a wall-clock jump (suspend, NTP) is noticed within it.
    max_sleep_s: float = 3600.0

    @classmethod
    def from_settings(cls, settings: Settings) -> ReportSchedule:
        hours, minutes = (int(part) for part in settings.report_time.split(":"))
        return cls(
            send_time=time(hours, minutes),
            zone=ZoneInfo(settings.report_timezone),
            lease_s=max(DEFAULT_LEASE_S, 2 * settings.smtp_timeout_s + 60),
        )

    def retry_delay(self, attempts: int) -> timedelta:
        """The wait after `attempts` failed sends: doubling from `retry_base_s` to `retry_cap_s`, without
        jitter (one process sends the report, so there is no herd to spread)."""
        return timedelta(seconds=backoff_ceiling_s(max(1, attempts), self.retry_base_s, self.retry_cap_s))


def slot_on(day: date, schedule: ReportSchedule) -> datetime:
    """The instant of the send time on local date `day` (in a DST gap: the same wall time after the jump)."""
    return datetime.combine(day, schedule.send_time, tzinfo=schedule.zone).astimezone(UTC)


def latest_slot(now: datetime, schedule: ReportSchedule) -> tuple[date, datetime]:
    """The report date and send instant of the most recent send time at or before `now`."""
    day = now.astimezone(schedule.zone).date()
    slot = slot_on(day, schedule)
    if slot > now:
        day -= timedelta(days=1)
        slot = slot_on(day, schedule)
    return day, slot


def next_slot(now: datetime, schedule: ReportSchedule) -> datetime:
    """The first send instant after `now`."""
    day, _slot = latest_slot(now, schedule)
    return slot_on(day + timedelta(days=1), schedule)
