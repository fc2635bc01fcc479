"""The operations layer: each operation does its store call, wakes (or stops) the engine, and logs, once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from mailer.domain.customers import CustomerFields
from mailer.domain.errors import ConflictError, NotFoundError
from mailer.domain.mailouts import AudienceFilter, MailoutSpec
from mailer.domain.statuses import MailoutStatus, MessageStatus
from mailer.operations import customers, mailouts
from mailer.settings import Settings
from tests.log_support import captured_logs
from tests.recording_engine import RecordingEngine


def spec(text: str = "hello") -> MailoutSpec:
    start = datetime(2031, 1, 1, tzinfo=UTC)
    return MailoutSpec(start, start + timedelta(days=1), text, AudienceFilter(), None)


async def test_create_change_pause_resume_wake_the_engine_only_when_something_changed(
    db: AsyncEngine,
) -> None:
    engine = RecordingEngine()
    mailout = await mailouts.create(db, engine, spec())
    assert engine.take() == [("changed", mailout.id)]
    await mailouts.change(db, engine, mailout.id, lambda s: s)
    assert engine.take() == []  # nothing changed: nothing to wake
    changed = await mailouts.change(db, engine, mailout.id, lambda _: spec("new words"))
    assert changed.spec.text == "new words"
    assert engine.take() == [("changed", mailout.id)]
    assert (await mailouts.pause(db, engine, mailout.id)).status is MailoutStatus.PAUSED
    assert (await mailouts.pause(db, engine, mailout.id)).status is MailoutStatus.PAUSED
    assert engine.take() == [("changed", mailout.id)]
    assert (await mailouts.resume(db, engine, mailout.id)).status is MailoutStatus.SCHEDULED
    assert engine.take() == [("changed", mailout.id)]


async def test_cancel_always_stops_sending_and_delete_stops_before_deleting(db: AsyncEngine) -> None:
    engine = RecordingEngine()
    mailout = await mailouts.create(db, engine, spec())
    engine.take()
    await mailouts.cancel(db, engine, mailout.id)
    assert engine.take() == [("stop", mailout.id), ("changed", mailout.id)]
    # Again: nothing changes, but whatever might still be in flight is stopped.
    await mailouts.cancel(db, engine, mailout.id)
    assert engine.take() == [("stop", mailout.id)]
    with pytest.raises(ConflictError):
        await mailouts.pause(db, engine, mailout.id)
    await mailouts.delete(db, engine, mailout.id)
    assert engine.take() == [("stop", mailout.id), ("changed", mailout.id)]
    with pytest.raises(NotFoundError):
        await mailouts.delete(db, engine, mailout.id)
    assert engine.take() == []


async def test_actions_are_logged_with_their_ids(db: AsyncEngine, settings: Settings) -> None:
    engine = RecordingEngine()
    with captured_logs(settings) as logs:
        mailout = await mailouts.create(db, engine, spec())
        await mailouts.pause(db, engine, mailout.id)
        row = await customers.create(db, CustomerFields("79120000001", "912", None, "UTC"))
        message = await mailouts.add_message(db, engine, mailout.id, row["id"])
        assert message["status"] == MessageStatus.PENDING
        cancelled = await customers.delete(db, row["id"])
    assert cancelled == 1
    assert logs.events("mailout.paused")[0]["mailout_id"] == mailout.id
    assert logs.events("message.created")[0]["customer_id"] == row["id"]
    deleted = logs.events("customer.deleted")[0]
    assert deleted["customer_id"] == row["id"]
    assert deleted["messages_cancelled"] == 1
