"""The daily report end to end: real SMTP (aiosmtpd on loopback), both databases, scheduler and CLI."""

from __future__ import annotations

import asyncio
import io
import logging
import socket
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import structlog
from aiohttp import web
from aiohttp.test_utils import TestClient
from aiosmtpd.controller import Controller
from prometheus_client import REGISTRY
from sqlalchemy.ext.asyncio import AsyncEngine

from mailer import keys
from mailer.app import create_app
from mailer.cli import main
from mailer.observability.logging import configure_logging
from mailer.report.actor import DailyReportActor
from mailer.report.runs import ReportRuns, RunStatus
from mailer.report.schedule import ReportSchedule
from mailer.settings import Settings
from mailer.store.db import create_engine
from tests.polling import eventually
from tests.report_support import (
    EXPECTED_ERRORS,
    EXPECTED_STATUS,
    EXPECTED_TOTAL_ERRORS,
    EXPECTED_TOTAL_STATUS,
    SMTP_PASSWORD,
    SMTP_USER,
    UNTIL,
    Inbox,
    Seeded,
    html_cell,
    parts,
    seed,
    smtp_server,
    text_rows,
)

RECIPIENTS = ["ops@example.org", "lead@example.org"]


@pytest.fixture
async def inbox() -> Inbox:
    return Inbox()


def report_settings(settings_factory: Callable[..., Settings], port: int, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "report_recipients": ",".join(RECIPIENTS),
        "report_sender": "mailer@example.org",
        "smtp_host": "127.0.0.1",
        "smtp_port": port,
        "smtp_tls": "none",
        "smtp_timeout_s": 5,
    }
    values.update(overrides)
    return settings_factory(**values)


def schedule_with_slot_at(slot: datetime, **overrides: Any) -> ReportSchedule:
    """A schedule whose send time is `slot` (in UTC), so that a clock at `slot` makes the report due."""
    values: dict[str, Any] = {"send_time": slot.astimezone(UTC).time(), "zone": ZoneInfo("UTC")}
    values.update(overrides)
    return ReportSchedule(**values)


def failed_sends() -> float:
    value = REGISTRY.get_sample_value("mailer_report_sends_total", {"result": "failed"})
    assert value is not None
    return value


def assert_numbers(raw: bytes, ids: Seeded) -> None:
    message, plain, rich = parts(raw)
    # A long subject is folded; unfolding may leave the space after the colon.
    subject = str(message["Subject"]).strip()
    assert subject == "mailer report 2026-11-28: 3 mailouts, 5 sent, 1 failed, 3 errors"
    status_rows, error_rows = text_rows(plain)
    names = {"a": ids.a, "b": ids.b, "e": ids.e}
    assert set(status_rows) == {str(ids.a), str(ids.b), str(ids.e), "total"}
    for name, mailout_id in names.items():
        row = status_rows[str(mailout_id)]
        for column, value in EXPECTED_STATUS[name].items():
            assert row[column] == str(value), (name, column, row)
            assert html_cell(rich, 0, str(mailout_id), column) == str(value)
        for column, value in EXPECTED_ERRORS[name].items():
            assert error_rows[str(mailout_id)][column] == str(value), (name, column)
            assert html_cell(rich, 1, str(mailout_id), column) == str(value)
    for column, value in EXPECTED_TOTAL_STATUS.items():
        assert status_rows["total"][column] == str(value), column
        assert html_cell(rich, 0, "total", column) == str(value)
    for column, value in EXPECTED_TOTAL_ERRORS.items():
        assert error_rows["total"][column] == str(value), column
    assert status_rows[str(ids.a)]["status"] == "running"
    assert status_rows[str(ids.e)]["status"] == "cancelled"


async def test_the_report_arrives_with_the_right_numbers(
    db: AsyncEngine, settings_factory: Callable[..., Settings], inbox: Inbox
) -> None:
    ids = await seed(db)
    async with smtp_server(inbox) as port:
        settings = report_settings(settings_factory, port)
        actor = DailyReportActor(db, settings, schedule=schedule_with_slot_at(UNTIL), clock=lambda: UNTIL)
        await actor.step(UNTIL)
    [envelope] = inbox.messages
    assert envelope.mail_from == "mailer@example.org"
    assert sorted(envelope.rcpt_tos) == sorted(RECIPIENTS)
    assert isinstance(envelope.content, bytes)
    assert_numbers(envelope.content, ids)
    state = await actor.runs.state(UNTIL.date())
    assert state is not None
    assert state.status is RunStatus.SENT
    assert state.sent_at == UNTIL


async def test_credentials_are_used_and_never_logged(
    db: AsyncEngine, settings_factory: Callable[..., Settings], inbox: Inbox
) -> None:
    await seed(db)
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    async with smtp_server(inbox, auth=True) as port:
        settings = report_settings(
            settings_factory, port, smtp_username=SMTP_USER, smtp_password=SMTP_PASSWORD, log_level="DEBUG"
        )
        configure_logging(settings, stream=stream, cache_loggers=False)
        try:
            actor = DailyReportActor(db, settings, schedule=schedule_with_slot_at(UNTIL), clock=lambda: UNTIL)
            await actor.step(UNTIL)
        finally:
            root.handlers[:] = saved[0]
            root.setLevel(saved[1])
            structlog.reset_defaults()
    assert inbox.logins == [(SMTP_USER, SMTP_PASSWORD)]
    assert len(inbox.messages) == 1
    output = stream.getvalue()
    assert '"report.sent"' in output
    assert SMTP_PASSWORD not in output


async def test_a_refused_send_is_retried_after_the_backoff(
    db: AsyncEngine, settings_factory: Callable[..., Settings], inbox: Inbox
) -> None:
    ids = await seed(db)
    inbox.fail_next = 1
    failed_before = failed_sends()
    async with smtp_server(inbox) as port:
        settings = report_settings(settings_factory, port)
        schedule = schedule_with_slot_at(UNTIL, retry_base_s=120.0)
        actor = DailyReportActor(db, settings, schedule=schedule, clock=lambda: UNTIL)
        wake_at = await actor.step(UNTIL)
        assert wake_at == UNTIL + timedelta(seconds=120)
        assert inbox.messages == []
        state = await actor.runs.state(UNTIL.date())
        assert state is not None
        assert state.status is RunStatus.FAILED
        assert state.last_error is not None
        assert "451" in state.last_error
        # Not yet due: nothing is sent, by this process or another.
        other = DailyReportActor(db, settings, schedule=schedule, clock=lambda: UNTIL, owner="other")
        assert await other.step(UNTIL + timedelta(seconds=60)) == UNTIL + timedelta(seconds=120)
        assert inbox.messages == []
        # Due: whichever process comes first sends it, once.
        later = UNTIL + timedelta(seconds=121)
        await other.step(later)
        await actor.step(later)
    assert len(inbox.messages) == 1
    assert isinstance(inbox.messages[0].content, bytes)
    assert_numbers(inbox.messages[0].content, ids)
    state = await actor.runs.state(UNTIL.date())
    assert state is not None
    assert (state.status, state.attempts, state.claimed_by) == (RunStatus.SENT, 2, "other")
    assert failed_sends() == failed_before + 1


async def test_the_service_sends_the_report_at_the_local_send_time(
    aiohttp_client: Callable[[web.Application], Any],
    settings_factory: Callable[..., Settings],
    inbox: Inbox,
) -> None:
    # The send time one minute ago (in a zone far from UTC): the starting service catches up at once.
    zone = ZoneInfo("Asia/Kathmandu")
    local = datetime.now(zone) - timedelta(minutes=1)
    async with smtp_server(inbox) as port:
        settings = report_settings(
            settings_factory,
            port,
            report_enabled=True,
            report_time=local.strftime("%H:%M"),
            report_timezone="Asia/Kathmandu",
        )
        client: TestClient[Any, Any] = await aiohttp_client(create_app(settings, with_engine=False))
        [envelope] = await inbox.wait()
        assert isinstance(envelope.content, bytes)
        message, plain, _ = parts(envelope.content)
        report_date = (datetime.combine(local.date(), time(local.hour, local.minute), tzinfo=zone)).date()
        assert report_date.isoformat() in message["Subject"]
        assert "(Asia/Kathmandu)" in plain
        ready = await client.get("/readyz")
        assert (await ready.json())["checks"]["report"] == "ok"
        runs = ReportRuns(client.app[keys.DB], "reader")

        async def recorded() -> bool:
            # The message arrives before the actor records the send: wait for the record.
            state = await runs.state(report_date)
            return state is not None and state.status is RunStatus.SENT

        await eventually(recorded, what="the send recorded")
    assert len(inbox.messages) == 1


@pytest.fixture
def threaded_smtp() -> Iterator[tuple[Inbox, int]]:
    """aiosmtpd in its own thread, for the CLI, which runs its own event loop."""
    inbox = Inbox()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


def test_report_send_now_from_the_command_line(
    db_url: str, threaded_smtp: tuple[Inbox, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    inbox, port = threaded_smtp

    async def prepare() -> Seeded:
        engine = create_engine(db_url)
        try:
            return await seed(engine)
        finally:
            await engine.dispose()

    ids = asyncio.run(prepare())
    for name, value in {
        "DATABASE_URL": db_url,
        "REPORT_RECIPIENTS": ",".join(RECIPIENTS),
        "REPORT_SENDER": "mailer@example.org",
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": str(port),
        "REPORT_TIME": UNTIL.strftime("%H:%M"),
        "REPORT_TIMEZONE": "UTC",
        "LOG_FORMAT": "json",
    }.items():
        monkeypatch.setenv(f"MAILER_{name}", value)
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        assert main(["report", "--send-now", "--date", UNTIL.date().isoformat()]) == 0
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        structlog.reset_defaults()
    # The SMTP server answered 250 only after its handler stored the message: it is here, no waiting needed.
    [envelope] = inbox.messages
    assert isinstance(envelope.content, bytes)
    assert_numbers(envelope.content, ids)


def test_report_without_send_now_prints_the_text(
    db_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MAILER_DATABASE_URL", db_url)
    monkeypatch.setenv("MAILER_LOG_FORMAT", "json")
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        assert main(["report"]) == 0
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        structlog.reset_defaults()
    out = capsys.readouterr().out
    assert "Messages by status (now)" in out
    assert out.splitlines()[-1].split()[0] == "total"


def test_report_send_now_needs_addresses(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILER_DATABASE_URL", db_url)
    assert main(["report", "--send-now"]) == 2
