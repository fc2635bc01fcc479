"""The daily report without SMTP: send-time arithmetic, content, queries and the single sender per date."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, date, datetime, time, timedelta
from email.message import EmailMessage
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from aiohttp import web
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncEngine

from mailer import keys
from mailer.domain.statuses import MessageStatus, Outcome
from mailer.observability.health import Health
from mailer.report.actor import HEALTH_CHECK, DailyReportActor, report_ctx
from mailer.report.content import DailyReport, build_email, render_html, render_text
from mailer.report.queries import MailoutStats, active_mailouts
from mailer.report.runs import RunStatus
from mailer.report.schedule import ReportSchedule, latest_slot, next_slot, slot_on
from mailer.settings import Settings
from mailer.store.db import create_engine
from tests.log_support import captured_logs
from tests.report_support import EXPECTED_STATUS, UNTIL, seed, text_rows

MOSCOW = ZoneInfo("Europe/Moscow")
BERLIN = ZoneInfo("Europe/Berlin")


def schedule(at: time = time(8, 0), zone: ZoneInfo = MOSCOW, **overrides: Any) -> ReportSchedule:
    return ReportSchedule(send_time=at, zone=zone, **overrides)


# --- when ---


def test_latest_and_next_slot_in_local_time() -> None:
    s = schedule()
    before = datetime(2026, 11, 28, 4, 59, tzinfo=UTC)  # 07:59 in Moscow
    assert latest_slot(before, s) == (date(2026, 11, 27), datetime(2026, 11, 27, 5, 0, tzinfo=UTC))
    assert next_slot(before, s) == datetime(2026, 11, 28, 5, 0, tzinfo=UTC)
    at = datetime(2026, 11, 28, 5, 0, tzinfo=UTC)
    assert latest_slot(at, s) == (date(2026, 11, 28), at)
    assert next_slot(at, s) == datetime(2026, 11, 29, 5, 0, tzinfo=UTC)


def test_the_local_date_decides_the_report_date() -> None:
    # 23:30 UTC on the 27th is already the 28th in Moscow.
    s = schedule(time(2, 0))
    now = datetime(2026, 11, 27, 23, 30, tzinfo=UTC)
    assert latest_slot(now, s) == (date(2026, 11, 28), datetime(2026, 11, 27, 23, 0, tzinfo=UTC))


def test_daylight_saving_changes_keep_the_wall_clock_time() -> None:
    s = schedule(time(8, 0), BERLIN)
    assert slot_on(date(2026, 3, 28), s) == datetime(2026, 3, 28, 7, 0, tzinfo=UTC)
    assert slot_on(date(2026, 3, 29), s) == datetime(2026, 3, 29, 6, 0, tzinfo=UTC)
    # A send time inside the spring gap still happens once that day.
    gap = schedule(time(2, 30), BERLIN)
    assert slot_on(date(2026, 3, 29), gap) == datetime(2026, 3, 29, 1, 30, tzinfo=UTC)


def test_retry_delay_doubles_up_to_the_cap() -> None:
    s = schedule(retry_base_s=60, retry_cap_s=600)
    assert [s.retry_delay(n).total_seconds() for n in (1, 2, 3, 4, 5, 6)] == [60, 120, 240, 480, 600, 600]


# --- settings ---


def test_report_settings_are_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILER_REPORT_RECIPIENTS", "ops@example.org, lead@example.org,")
    settings = Settings()
    assert settings.report_recipients == ["ops@example.org", "lead@example.org"]
    assert not settings.report_enabled
    with pytest.raises(ValidationError, match="report_time"):
        Settings(report_time="8:00")
    with pytest.raises(ValidationError, match="report_time"):
        Settings(report_time="24:00")
    with pytest.raises(ValidationError, match="report_timezone"):
        Settings(report_timezone="Mars/Olympus")
    with pytest.raises(ValidationError, match="report_sender"):
        Settings(report_enabled=True)
    with pytest.raises(ValidationError, match="smtp_tls"):
        Settings(smtp_tls="ssl")


# --- content ---


def stats(mailout_id: int, **counts: int) -> MailoutStats:
    by_status = dict.fromkeys(MessageStatus, 0)
    errors: dict[Outcome, int] = {kind: 0 for kind in Outcome if kind is not Outcome.SENT}
    for name, value in counts.items():
        if name in MessageStatus:
            by_status[MessageStatus(name)] = value
        else:
            errors[Outcome(name)] = value
    return MailoutStats(
        id=mailout_id,
        status="running",
        start_at=datetime(2026, 11, 27, 6, 0, tzinfo=UTC),
        end_at=datetime(2026, 11, 29, 6, 0, tzinfo=UTC),
        by_status=by_status,
        errors_by_kind=errors,
        attempts=counts.get("sent", 0) + sum(errors.values()),
    )


def sample_report(*mailouts: MailoutStats) -> DailyReport:
    until = datetime(2026, 11, 28, 5, 0, tzinfo=UTC)
    return DailyReport(date(2026, 11, 28), until - timedelta(hours=24), until, "Europe/Moscow", mailouts)


def test_text_has_a_row_per_mailout_and_totals() -> None:
    report = sample_report(
        stats(7, sent=3, pending=1, transient=2), stats(9, failed=2, rejected=2, timeout=1)
    )
    status_rows, error_rows = text_rows(render_text(report))
    assert status_rows["7"]["sent"] == "3"
    assert status_rows["7"]["total"] == "4"
    assert status_rows["9"]["failed"] == "2"
    assert status_rows["total"]["total"] == "6"
    # Local times, in the report's zone.
    assert status_rows["7"]["start"] == "2026-11-27T09:00"
    assert error_rows["7"]["transient"] == "2"
    assert error_rows["7"]["requests"] == "5"
    assert error_rows["total"]["errors"] == "5"
    assert error_rows["total"]["rejected"] == "2"
    assert report.subject == "mailer report 2026-11-28: 2 mailouts, 3 sent, 2 failed, 5 errors"


def test_a_day_without_mailouts_still_reports_zeros() -> None:
    status_rows, error_rows = text_rows(render_text(sample_report()))
    assert set(status_rows) == {"total"}
    assert status_rows["total"]["total"] == "0"
    assert error_rows["total"]["errors"] == "0"


def test_html_escapes_and_email_has_both_parts() -> None:
    report = sample_report(stats(7, sent=1))
    markup = render_html(report)
    assert '<tr data-mailout="7">' in markup
    assert '<td data-key="sent">1</td>' in markup
    message = build_email(report, "mailer@example.org", ["a@example.org", "b@example.org"], UNTIL)
    assert message.get_content_type() == "multipart/alternative"
    plain, rich = message.iter_parts()
    assert isinstance(plain, EmailMessage)
    assert isinstance(rich, EmailMessage)
    assert plain.get_content_type() == "text/plain"
    assert rich.get_content_type() == "text/html"
    assert message["To"] == "a@example.org, b@example.org"


# --- database ---


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(db_url, pool_size=4)
    yield engine
    await engine.dispose()


async def test_active_mailouts_picks_the_window(db: AsyncEngine) -> None:
    ids = await seed(db)
    async with db.connect() as conn:
        found = await active_mailouts(conn, UNTIL - timedelta(hours=24), UNTIL)
    assert [m.id for m in found] == [ids.a, ids.b, ids.e]
    by_id = {m.id: m for m in found}
    assert {s.value: n for s, n in by_id[ids.a].by_status.items()} == {
        k: v for k, v in EXPECTED_STATUS["a"].items() if k != "total"
    }
    assert by_id[ids.a].errors_by_kind[Outcome.TRANSIENT] == 2
    assert by_id[ids.b].errors_by_kind[Outcome.TIMEOUT] == 0  # a day too old
    assert by_id[ids.b].attempts == 2


class Recorder:
    """A fake SMTP hand-off: records messages, or fails while `failing`."""

    def __init__(self) -> None:
        self.sent: list[EmailMessage] = []
        self.failing = False

    async def __call__(self, message: EmailMessage, settings: Settings) -> None:
        await asyncio.sleep(0)  # let a concurrent claimant run in between, as a real send would
        if self.failing:
            raise ConnectionRefusedError("SMTP server down")
        self.sent.append(message)


def actors(
    db: AsyncEngine, settings: Settings, send: Recorder, count: int, **overrides: Any
) -> list[DailyReportActor]:
    s = schedule(time(UNTIL.hour, UNTIL.minute), ZoneInfo("UTC"), **overrides)
    return [
        DailyReportActor(db, settings, schedule=s, send_mail=send, clock=lambda: UNTIL, owner=f"p{i}")
        for i in range(count)
    ]


@pytest.fixture
def report_settings(settings_factory: Callable[..., Settings]) -> Settings:
    return settings_factory(report_recipients="ops@example.org", report_sender="mailer@example.org")


async def test_several_processes_send_once(db: AsyncEngine, report_settings: Settings) -> None:
    send = Recorder()
    crowd = actors(db, report_settings, send, 5)
    wakes = await asyncio.gather(*(a.step(UNTIL) for a in crowd))
    assert len(send.sent) == 1
    # The others look again when the sender's lease ends (if it was still sending) or tomorrow.
    lease_end = UNTIL + timedelta(seconds=crowd[0].schedule.lease_s)
    assert set(wakes) <= {UNTIL + timedelta(days=1), lease_end}
    await asyncio.gather(*(a.step(UNTIL + timedelta(minutes=5)) for a in crowd))
    assert len(send.sent) == 1
    state = await crowd[0].runs.state(UNTIL.date())
    assert state is not None
    assert state.status is RunStatus.SENT
    assert state.attempts == 1


async def test_a_dead_senders_claim_is_taken_over_after_its_lease(
    db: AsyncEngine, report_settings: Settings
) -> None:
    send = Recorder()
    first, second = actors(db, report_settings, send, 2, lease_s=120.0)
    claim = await first.runs.try_claim(UNTIL.date(), UNTIL, 120.0)
    assert claim is not None
    assert claim.claimed_by == "p0"
    # The first process died holding the claim: the second waits for the lease...
    assert await second.step(UNTIL + timedelta(seconds=10)) == UNTIL + timedelta(seconds=120)
    assert send.sent == []
    # ...then sends.
    await second.step(UNTIL + timedelta(seconds=121))
    assert len(send.sent) == 1
    # The first process, back from the dead, cannot record over the second's success.
    assert not await first.runs.mark_sent(UNTIL.date(), UNTIL + timedelta(seconds=130))
    state = await second.runs.state(UNTIL.date())
    assert state is not None
    assert (state.status, state.claimed_by, state.attempts) == (RunStatus.SENT, "p1", 2)


async def test_gives_up_after_max_attempts(db: AsyncEngine, report_settings: Settings) -> None:
    send = Recorder()
    send.failing = True
    [actor] = actors(db, report_settings, send, 1, retry_base_s=10.0, max_attempts=3)
    now = UNTIL
    for _ in range(3):
        now = await actor.step(now)
    assert now == next_slot(UNTIL, actor.schedule)
    state = await actor.runs.state(UNTIL.date())
    assert state is not None
    assert (state.status, state.attempts) == (RunStatus.ABANDONED, 3)
    assert state.last_error == "ConnectionRefusedError: SMTP server down"


async def test_a_late_start_catches_up_but_not_a_day_later(
    db: AsyncEngine, report_settings: Settings
) -> None:
    send = Recorder()
    [actor] = actors(db, report_settings, send, 1, catch_up_s=3600.0)
    # Two hours after the send time: too late for this date, wait for tomorrow.
    assert await actor.step(UNTIL + timedelta(hours=2)) == UNTIL + timedelta(days=1)
    assert send.sent == []
    # Thirty minutes after: sent now.
    await actor.step(UNTIL + timedelta(minutes=30))
    assert len(send.sent) == 1


async def test_the_run_loop_survives_a_broken_database(tmp_path: Any) -> None:
    # A database without the report_runs table: every step fails; the loop logs and carries on.
    broken = create_engine(f"sqlite:///{tmp_path / 'empty.db'}")
    send = Recorder()
    calls = 0
    done = asyncio.Event()
    s = schedule(time(UNTIL.hour, UNTIL.minute), ZoneInfo("UTC"), retry_base_s=0.001)

    def clock() -> datetime:
        nonlocal calls
        calls += 1
        if calls > 6:
            done.set()
        return UNTIL

    settings = Settings(
        report_recipients="ops@example.org", report_sender="mailer@example.org", log_format="json"
    )
    actor = DailyReportActor(broken, settings, schedule=s, send_mail=send, clock=clock)
    with captured_logs(settings) as logs:
        task = asyncio.create_task(actor.run())
        try:
            async with asyncio.timeout(10):
                await done.wait()
            assert not task.done()
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await broken.dispose()
    assert send.sent == []
    assert len(logs.events("report.step_failed")) >= 2


async def test_a_crashed_actor_is_restarted_and_stopped_with_the_app(
    db: AsyncEngine, report_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs = 0
    restarted = asyncio.Event()
    cancelled = asyncio.Event()

    async def run(self: DailyReportActor) -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            raise RuntimeError("a bug outside the step's own error handling")
        restarted.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    monkeypatch.setattr(DailyReportActor, "run", run)
    app = web.Application()
    app[keys.DB] = db
    app[keys.SETTINGS] = report_settings
    app[keys.HEALTH] = Health()
    lifetime = report_ctx(app)
    await anext(lifetime)
    try:
        async with asyncio.timeout(10):
            await restarted.wait()
        assert await app[keys.HEALTH].report() == (True, {HEALTH_CHECK: "ok"})
    finally:
        assert await anext(lifetime, "stopped") == "stopped"
    assert runs == 2
    assert cancelled.is_set()
