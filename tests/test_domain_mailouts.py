"""Tests of mailer.domain.mailouts: status moves, what may change in which status, window storage."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from mailer.domain import mailouts as m
from mailer.domain.errors import ConflictError, InvalidError
from mailer.domain.statuses import MailoutStatus
from mailer.domain.windows import SendWindow

S = MailoutStatus
START = datetime(2030, 1, 1, 9, tzinfo=UTC)
SPEC = m.MailoutSpec(
    start_at=START,
    end_at=START + timedelta(hours=12),
    text="hello",
    filter=m.AudienceFilter(("912", "916"), ("vip",)),
    window=SendWindow(time(9), time(21)),
)
ALL_FIELDS = frozenset({m.START_AT, m.END_AT, m.TEXT, m.FILTER, m.SEND_WINDOW})


def test_unique_keeps_first_occurrences_in_order() -> None:
    assert m.unique(["b", "a", "b", "c", "a"]) == ("b", "a", "c")


def test_check_times_names_end_at() -> None:
    m.check_times(SPEC)
    for end in (START, START - timedelta(seconds=1)):
        with pytest.raises(InvalidError) as info:
            m.check_times(dataclasses.replace(SPEC, end_at=end))
        assert [e.loc for e in info.value.errors] == [("body", "end_at")]


def test_changed_fields() -> None:
    assert m.changed_fields(SPEC, SPEC) == frozenset()
    reordered = dataclasses.replace(SPEC, filter=m.AudienceFilter(("916", "912", "912"), ("vip",)))
    assert m.changed_fields(SPEC, reordered) == frozenset(), "order and repeats do not change the audience"
    everything = m.MailoutSpec(
        start_at=START + timedelta(minutes=1),
        end_at=SPEC.end_at + timedelta(minutes=1),
        text="other",
        filter=m.AudienceFilter(("912",), ("vip",)),
        window=None,
    )
    assert m.changed_fields(SPEC, everything) == ALL_FIELDS
    # The same instant in another offset is no change.
    moved = dataclasses.replace(SPEC, start_at=START.astimezone(ZoneInfo("Asia/Kathmandu")))
    assert m.changed_fields(SPEC, moved) == frozenset()


def test_scheduled_may_change_anything() -> None:
    assert m.refused_changes(S.SCHEDULED, ALL_FIELDS) == frozenset()


@pytest.mark.parametrize("status", [S.RUNNING, S.PAUSED])
def test_active_may_change_only_what_is_ahead(status: MailoutStatus) -> None:
    assert m.refused_changes(status, ALL_FIELDS) == {m.FILTER, m.START_AT}
    for field in (m.FILTER, m.START_AT):
        with pytest.raises(ConflictError, match=field):
            m.check_change(status, frozenset({field, m.TEXT}))


@pytest.mark.parametrize("status", [S.FINISHED, S.CANCELLED])
def test_final_may_change_nothing(status: MailoutStatus) -> None:
    assert m.refused_changes(status, ALL_FIELDS) == ALL_FIELDS
    for field in ALL_FIELDS:
        with pytest.raises(ConflictError):
            m.check_change(status, frozenset({field}))


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (S.SCHEDULED, S.PAUSED),
        (S.RUNNING, S.PAUSED),
        (S.PAUSED, S.PAUSED),
        (S.FINISHED, None),
        (S.CANCELLED, None),
    ],
)
def test_pause(status: MailoutStatus, expected: MailoutStatus | None) -> None:
    if expected is None:
        with pytest.raises(ConflictError):
            m.pause_target(status)
    else:
        assert m.pause_target(status) is expected


@pytest.mark.parametrize(
    ("status", "activated", "expected"),
    [
        (S.PAUSED, True, S.RUNNING),
        (S.PAUSED, False, S.SCHEDULED),
        (S.RUNNING, True, S.RUNNING),
        (S.SCHEDULED, False, S.SCHEDULED),
        (S.FINISHED, True, None),
        (S.CANCELLED, False, None),
    ],
)
def test_resume(status: MailoutStatus, activated: bool, expected: MailoutStatus | None) -> None:
    if expected is None:
        with pytest.raises(ConflictError):
            m.resume_target(status, activated)
    else:
        assert m.resume_target(status, activated) is expected


@pytest.mark.parametrize("status", [S.SCHEDULED, S.RUNNING, S.PAUSED, S.CANCELLED])
def test_cancel(status: MailoutStatus) -> None:
    assert m.cancel_target(status) is S.CANCELLED


def test_finished_cannot_be_cancelled() -> None:
    with pytest.raises(ConflictError):
        m.cancel_target(S.FINISHED)


def test_only_live_mailouts_take_messages() -> None:
    for status in (S.SCHEDULED, S.RUNNING, S.PAUSED):
        m.check_accepts_messages(status)
    for status in (S.FINISHED, S.CANCELLED):
        with pytest.raises(ConflictError):
            m.check_accepts_messages(status)


@pytest.mark.parametrize(
    "window",
    [
        None,
        SendWindow(time(9), time(21)),
        SendWindow(time(22, 30), time(6)),
        SendWindow(time(0), time(23, 59, 59)),
    ],
)
def test_window_seconds_round_trip(window: SendWindow | None) -> None:
    start_s, end_s = m.window_to_seconds(window)
    assert m.window_from_seconds(start_s, end_s) == window


def test_window_seconds() -> None:
    assert m.window_to_seconds(SendWindow(time(1, 2, 3), time(23, 59, 59))) == (3723, 86399)
