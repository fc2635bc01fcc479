"""Tests of mailer.domain.windows: examples at known clock changes, and properties over every zone."""

from __future__ import annotations

import functools
import importlib
import itertools
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, available_timezones

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailer.domain import windows
from mailer.domain.windows import (
    OpenSpans,
    SendWindow,
    closes_at,
    format_window_time,
    is_open,
    load_zone,
    next_open,
    next_open_by_zone,
    parse_window_time,
)

ALL_ZONES = sorted(available_timezones())
SECOND = timedelta(seconds=1)
MINUTE = timedelta(minutes=1)
SAMPLE_STEP = timedelta(minutes=10)
# The longest wait for a window, whatever its length: a day, unless a gap swallows that day's whole window
# (then two days less the window and the gap) or a clock set back lengthens the night (Antarctica/Vostok went
# from +07 to +00 in 1994). Forward date-line jumps (Pacific/Apia) shorten the wait rather than lengthen it.
MAX_WAIT = timedelta(days=2)
# A window stays open at most a day, unless a gap swallows its closed part (then nearly two days), plus a
# clock set back while it is open.
MAX_OPEN = timedelta(days=2, hours=8)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def window(start: str, end: str) -> SendWindow:
    return SendWindow.parse(start, end)


# --- parsing and the dataclass ---


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("00:00", time(0, 0)),
        ("09:05", time(9, 5)),
        ("23:59", time(23, 59)),
        ("23:59:59", time(23, 59, 59)),
        ("07:30:15", time(7, 30, 15)),
    ],
)
def test_parse_window_time_accepts(text: str, expected: time) -> None:
    assert parse_window_time(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "24:00",
        "9:00",
        "09:0",
        "09:60",
        "09:00:60",
        "0900",
        "09:00:",
        "",
        " 09:00",
        "09:00 ",
        "\u0660\u0669:\u0660\u0660",  # Arabic-Indic digits: not ASCII
        "09:00:00.5",
    ],
)
def test_parse_window_time_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="invalid time"):
        parse_window_time(text)


@pytest.mark.parametrize(
    ("value", "text"), [(time(9, 0), "09:00"), (time(9, 0, 7), "09:00:07"), (time(0, 0, 0, 5), "00:00")]
)
def test_format_window_time(value: time, text: str) -> None:
    assert format_window_time(value) == text


@given(st.times())
def test_format_then_parse_round_trips(value: time) -> None:
    assert parse_window_time(format_window_time(value)) == value.replace(microsecond=0)


def test_window_rejects_empty() -> None:
    with pytest.raises(ValueError, match="differ"):
        SendWindow(time(9), time(9))
    with pytest.raises(ValueError, match="differ"):
        SendWindow(time(9, 0, 0, 1), time(9))  # equal once microseconds are dropped


def test_window_rejects_aware_times() -> None:
    with pytest.raises(ValueError, match="time zone"):
        SendWindow(time(9, tzinfo=UTC), time(18))


def test_window_drops_microseconds() -> None:
    assert SendWindow(time(9, 0, 0, 999), time(18)).start == time(9)


def test_contains_and_wraps() -> None:
    day, night = window("09:00", "18:00"), window("22:00", "06:00")
    assert not day.wraps
    assert night.wraps
    assert day.contains(time(9))
    assert day.contains(time(17, 59, 59, 999_999))
    assert not day.contains(time(18))
    assert not day.contains(time(8, 59, 59, 999_999))
    assert night.contains(time(22))
    assert night.contains(time(0))
    assert night.contains(time(5, 59, 59))
    assert not night.contains(time(6))
    assert not night.contains(time(21, 59, 59))


def test_naive_instants_are_refused() -> None:
    zone = ZoneInfo("UTC")
    with pytest.raises(ValueError, match="naive"):
        is_open(datetime(2025, 1, 1), window("09:00", "18:00"), zone)
    with pytest.raises(ValueError, match="naive"):
        next_open(datetime(2025, 1, 1), None, zone)


# --- examples ---


def test_no_window_is_always_open() -> None:
    instant = utc(2025, 1, 1, 3)
    zone = ZoneInfo("Europe/Moscow")
    assert is_open(instant, None, zone)
    assert next_open(instant, None, zone) == instant
    assert closes_at(instant, None, zone) is None


def test_results_are_utc() -> None:
    zone = ZoneInfo("Europe/Moscow")
    instant = datetime(2025, 1, 15, 12, tzinfo=zone)
    result = next_open(instant, window("09:00", "18:00"), zone)
    assert result.tzinfo is UTC
    assert result == instant
    later = next_open(instant, window("20:00", "21:00"), zone)
    assert later.tzinfo is UTC


def test_moscow() -> None:
    zone, day = ZoneInfo("Europe/Moscow"), window("09:00", "18:00")
    instant = utc(2025, 1, 15, 16)  # 19:00 MSK
    assert not is_open(instant, day, zone)
    assert next_open(instant, day, zone) == utc(2025, 1, 16, 6)
    assert closes_at(utc(2025, 1, 16, 6), day, zone) == utc(2025, 1, 16, 15)
    assert closes_at(instant, day, zone) == instant  # already closed


def test_moscow_2014_clock_set_back_closes_and_reopens() -> None:
    # 2014-10-26 02:00 MSK (+04) became 01:00 (+03): the local hour 01:00-02:00 happened twice.
    zone, late = ZoneInfo("Europe/Moscow"), window("01:30", "02:00")
    assert is_open(utc(2014, 10, 25, 21, 45), late, zone)
    assert closes_at(utc(2014, 10, 25, 21, 45), late, zone) == utc(2014, 10, 25, 22)
    assert next_open(utc(2014, 10, 25, 22), late, zone) == utc(2014, 10, 25, 22, 30)
    assert closes_at(utc(2014, 10, 25, 22, 30), late, zone) == utc(2014, 10, 25, 23)


def test_kathmandu_quarter_hour_offset() -> None:
    zone, day = ZoneInfo("Asia/Kathmandu"), window("09:00", "18:00")
    instant = utc(2025, 6, 1)  # 05:45 local
    assert next_open(instant, day, zone) == utc(2025, 6, 1, 3, 15)
    assert closes_at(utc(2025, 6, 1, 3, 15), day, zone) == utc(2025, 6, 1, 12, 15)


def test_new_york_spring_forward_start_in_gap() -> None:
    # 2025-03-09 02:00 EST became 03:00 EDT (07:00 UTC): 02:30 did not exist that day.
    zone, early = ZoneInfo("America/New_York"), window("02:30", "05:00")
    instant = utc(2025, 3, 9, 5)  # 00:00 EST
    assert next_open(instant, early, zone) == utc(2025, 3, 9, 7)  # the gap's end, 03:00 EDT
    assert not is_open(utc(2025, 3, 9, 7) - SECOND, early, zone)
    assert closes_at(utc(2025, 3, 9, 7), early, zone) == utc(2025, 3, 9, 9)  # 05:00 EDT


def test_new_york_window_inside_gap_waits_a_day() -> None:
    zone, swallowed = ZoneInfo("America/New_York"), window("02:10", "02:40")
    assert next_open(utc(2025, 3, 9, 5), swallowed, zone) == utc(2025, 3, 10, 6, 10)  # 02:10 EDT next day


def test_new_york_fall_back_first_occurrence_counts() -> None:
    # 2025-11-02 02:00 EDT became 01:00 EST (06:00 UTC): 01:00-02:00 happened twice.
    zone, early = ZoneInfo("America/New_York"), window("01:30", "05:00")
    instant = utc(2025, 11, 2, 4)  # 00:00 EDT
    assert next_open(instant, early, zone) == utc(2025, 11, 2, 5, 30)  # 01:30 EDT, the first one
    # Local time then falls back to 01:00, outside the window, until 01:30 EST.
    assert closes_at(utc(2025, 11, 2, 5, 30), early, zone) == utc(2025, 11, 2, 6)
    assert next_open(utc(2025, 11, 2, 6), early, zone) == utc(2025, 11, 2, 6, 30)


def test_new_york_fall_back_reenters_window() -> None:
    zone, night = ZoneInfo("America/New_York"), window("00:00", "01:30")
    assert closes_at(utc(2025, 11, 2, 4), night, zone) == utc(2025, 11, 2, 5, 30)  # 01:30 EDT
    assert next_open(utc(2025, 11, 2, 5, 30), night, zone) == utc(2025, 11, 2, 6)  # back to 01:00 EST
    assert closes_at(utc(2025, 11, 2, 6), night, zone) == utc(2025, 11, 2, 6, 30)  # 01:30 EST


def test_lord_howe_half_hour_dst() -> None:
    zone = ZoneInfo("Australia/Lord_Howe")
    # 2025-10-05 02:00 (+10:30) became 02:30 (+11).
    gap = window("02:10", "03:00")
    assert next_open(utc(2025, 10, 4, 15), gap, zone) == utc(2025, 10, 4, 15, 30)
    # 2025-04-06 02:00 (+11) became 01:30 (+10:30).
    fold = window("01:40", "02:00")
    assert next_open(utc(2025, 4, 5, 14), fold, zone) == utc(2025, 4, 5, 14, 40)
    assert closes_at(utc(2025, 4, 5, 14, 40), fold, zone) == utc(2025, 4, 5, 15)
    assert next_open(utc(2025, 4, 5, 15), fold, zone) == utc(2025, 4, 5, 15, 10)
    assert closes_at(utc(2025, 4, 5, 15, 10), fold, zone) == utc(2025, 4, 5, 15, 30)


def test_wrapping_night_window() -> None:
    zone, night = ZoneInfo("Europe/Berlin"), window("22:00", "06:00")
    noon = utc(2025, 1, 15, 11)  # 12:00 CET
    assert next_open(noon, night, zone) == utc(2025, 1, 15, 21)
    assert closes_at(utc(2025, 1, 15, 21), night, zone) == utc(2025, 1, 16, 5)
    small_hours = utc(2025, 1, 16, 2)  # 03:00 CET
    assert next_open(small_hours, night, zone) == small_hours
    assert closes_at(small_hours, night, zone) == utc(2025, 1, 16, 5)


def test_window_with_seconds() -> None:
    zone, odd = ZoneInfo("UTC"), window("09:00:30", "09:00:45")
    assert next_open(utc(2025, 1, 1, 9), odd, zone) == utc(2025, 1, 1, 9, 0, 30)
    assert closes_at(utc(2025, 1, 1, 9, 0, 30), odd, zone) == utc(2025, 1, 1, 9, 0, 45)
    assert next_open(utc(2025, 1, 1, 9, 0, 45), odd, zone) == utc(2025, 1, 2, 9, 0, 30)


def test_apia_skipped_a_day() -> None:
    # Samoa went from -10 to +14 at the end of 2011-12-29: 2011-12-30 never happened there.
    zone = ZoneInfo("Pacific/Apia")
    day = window("09:00", "18:00")
    after_work = utc(2011, 12, 30, 4, 30)  # 2011-12-29 18:30 -10
    assert next_open(after_work, day, zone) == utc(2011, 12, 30, 19)  # 2011-12-31 09:00 +14
    late = window("23:40", "23:50")
    assert next_open(utc(2011, 12, 30, 9, 55), late, zone) == utc(2011, 12, 31, 9, 40)
    night = window("22:00", "06:00")
    assert is_open(utc(2011, 12, 30, 9), night, zone)  # 2011-12-29 23:00
    assert closes_at(utc(2011, 12, 30, 9), night, zone) == utc(2011, 12, 30, 16)  # 2011-12-31 06:00 +14


def test_vostok_clock_set_back_seven_hours() -> None:
    # 1994-01-31 17:00 UTC: +07 became +00, so the local evening came around again.
    zone, morning = ZoneInfo("Antarctica/Vostok"), window("10:00", "11:00")
    just_closed = utc(1994, 1, 31, 4)  # 11:00 +07
    assert next_open(just_closed, morning, zone) == utc(1994, 2, 1, 10)  # 10:00 +00, 30 hours later


def test_microseconds_are_respected() -> None:
    zone, day = ZoneInfo("UTC"), window("09:00", "18:00")
    just_before = datetime(2025, 1, 1, 8, 59, 59, 999_999, tzinfo=UTC)
    assert next_open(just_before, day, zone) == utc(2025, 1, 1, 9)
    inside = datetime(2025, 1, 1, 17, 59, 59, 500_000, tzinfo=UTC)
    assert next_open(inside, day, zone) == inside
    assert closes_at(inside, day, zone) == utc(2025, 1, 1, 18)


# --- by zone ---


def test_next_open_by_zone_groups_and_falls_back_to_utc() -> None:
    instant, day = utc(2025, 1, 15, 16), window("09:00", "18:00")
    names = ["Europe/Moscow", "America/New_York", "Europe/Moscow", "No/Such_Zone", "America", ""]
    result = next_open_by_zone(instant, day, names)
    assert list(result) == ["Europe/Moscow", "America/New_York", "No/Such_Zone", "America", ""]
    assert result["Europe/Moscow"] == utc(2025, 1, 16, 6)
    assert result["America/New_York"] == instant  # 11:00 EST
    assert result["No/Such_Zone"] == result["America"] == result[""] == instant  # as UTC: open at 16:00
    assert next_open_by_zone(utc(2025, 1, 15, 20), day, ["Nowhere"]) == {"Nowhere": utc(2025, 1, 16, 9)}
    assert next_open_by_zone(instant, None, names)["America/New_York"] == instant


def test_load_zone() -> None:
    assert load_zone("Asia/Kathmandu") == ZoneInfo("Asia/Kathmandu")
    assert load_zone("../etc/passwd") == ZoneInfo("UTC")


def test_every_zone_gets_its_next_opening() -> None:
    # Activation computes one next_open per zone, over every zone a customer may have; around DST changes too.
    day = window("09:00", "18:00")
    for instant in (utc(2025, 3, 30, 0, 30), utc(2025, 6, 1, 20), utc(2025, 10, 26, 1, 30)):
        opens = next_open_by_zone(instant, day, ALL_ZONES)
        assert opens.keys() == set(ALL_ZONES)
        for name, at in opens.items():
            zone = load_zone(name)
            assert at == next_open(instant, day, zone), name
            assert at >= instant, name
            assert is_open(at, day, zone), name


def test_utc_offsets_never_change_twice_within_the_fast_path_span() -> None:
    """The fast path's premise, checked against the installed tzdata (uses zoneinfo's pure-Python reader)."""
    # Private, but the only way to list transitions; the pure-Python twin of the C zoneinfo.
    _zoneinfo: Any = importlib.import_module("zoneinfo._zoneinfo")

    spacing = windows._MIN_OFFSET_CHANGE_SPACING.total_seconds()
    # Rule-based (post-2037) transitions below are local epochs, off by at most the DST shift: allow for it.
    margin = timedelta(hours=3).total_seconds()
    DAY_S = timedelta(days=1).total_seconds()
    for name in ALL_ZONES:
        zone = _zoneinfo.ZoneInfo.no_cache(name)
        changes: list[float] = []
        previous = zone._tti_before.utcoff if zone._tti_before else None
        for moment, info in zip(zone._trans_utc, zone._ttinfos, strict=True):
            if previous is not None and info.utcoff != previous:
                changes.append(moment)
            previous = info.utcoff
        rule = zone._tz_after
        if isinstance(rule, _zoneinfo._TZStr) and rule.dst_diff:
            last = zone._trans_utc[-1] if zone._trans_utc else float("-inf")
            for year in range(1970, 2046):
                # Local epochs: skip the rule's copy of the last listed transition, hours from it.
                changes.extend(moment for moment in rule.transitions(year) if moment > last + DAY_S)
        changes.sort()
        for earlier, later in itertools.pairwise(changes):
            assert later - earlier >= spacing + margin, (name, datetime.fromtimestamp(earlier, UTC))


# --- properties over every zone ---


@functools.cache
def _offset_changes(name: str, year: int) -> tuple[datetime, ...]:
    """The instants in that year where the zone's UTC offset changes (found by sampling and bisection)."""
    zone = ZoneInfo(name)
    step = timedelta(days=3)  # offset changes are days apart, see the test above
    changes = []
    moment = utc(year, 1, 1)
    while moment.year == year:
        later = moment + step
        if moment.astimezone(zone).utcoffset() != later.astimezone(zone).utcoffset():
            changes.append(windows._transition(moment, later, zone))
        moment = later
    return tuple(changes)


ZONE_NAMES = st.sampled_from(ALL_ZONES)
YEARS = st.integers(1990, 2040)
# Boundaries where clocks usually change, on whole minutes, and anything at all.
TIMES = st.one_of(
    st.builds(time, st.integers(0, 3), st.sampled_from([0, 10, 15, 30, 45, 59])),
    st.builds(time, st.integers(0, 23), st.integers(0, 59)),
    st.times(),
)


@st.composite
def windows_(draw: st.DrawFn, *, minute_aligned: bool = False) -> SendWindow:
    times = st.builds(time, st.integers(0, 23), st.integers(0, 59)) if minute_aligned else TIMES
    start = draw(times).replace(microsecond=0)
    end = draw(times.filter(lambda t: t.replace(microsecond=0) != start))
    return SendWindow(start, end)


@st.composite
def zoned_instants(draw: st.DrawFn, *, minute_aligned: bool = False) -> tuple[ZoneInfo, datetime]:
    """A zone and an instant; half the time within two days of one of that zone's offset changes."""
    name, year = draw(ZONE_NAMES), draw(YEARS)
    changes = _offset_changes(name, year)
    near_change = draw(st.booleans())
    if changes and near_change:
        around = draw(st.sampled_from(changes))
        if minute_aligned:
            instant = around + MINUTE * draw(st.integers(-2 * 24 * 60, 2 * 24 * 60))
        else:
            instant = around + timedelta(
                microseconds=draw(st.integers(-2 * 86400 * 10**6, 2 * 86400 * 10**6))
            )
    else:
        naive = draw(st.datetimes(datetime(year, 1, 1), datetime(year, 12, 31, 23, 59, 59, 999_999)))
        instant = naive.replace(second=0, microsecond=0) if minute_aligned else naive
        instant = instant.replace(tzinfo=UTC)
    return ZoneInfo(name), instant


@settings(deadline=None, max_examples=500)
@given(zoned_instants(), windows_())
def test_next_open_properties(zoned: tuple[ZoneInfo, datetime], window: SendWindow) -> None:
    zone, instant = zoned
    result = next_open(instant, window, zone)
    assert result.tzinfo is UTC
    assert result >= instant
    assert is_open(result, window, zone)
    assert result - SECOND < instant or not is_open(result - SECOND, window, zone)
    assert next_open(result, window, zone) == result
    assert result - instant < MAX_WAIT
    # Nothing open in between (sampled; the minute-by-minute reference test below is exhaustive).
    moment = instant
    while moment < result:
        assert not is_open(moment, window, zone)
        moment += SAMPLE_STEP


@settings(deadline=None, max_examples=500)
@given(zoned_instants(), windows_())
def test_closes_at_properties(zoned: tuple[ZoneInfo, datetime], window: SendWindow) -> None:
    zone, instant = zoned
    opened = next_open(instant, window, zone)
    closing = closes_at(opened, window, zone)
    assert closing is not None
    assert closing.tzinfo is UTC
    assert closing > opened
    assert not is_open(closing, window, zone)
    assert is_open(closing - SECOND, window, zone) or closing - SECOND < opened
    assert closing - opened < MAX_OPEN
    assert closes_at(closing, window, zone) == closing
    # The next opening is after this closing, and closing is the end of the open stretch from `opened`.
    assert next_open(closing, window, zone) > closing


def _scan(instant: datetime, window: SendWindow, zone: ZoneInfo, *, want_open: bool) -> datetime:
    """Reference: step minute by minute (exact when everything is on whole minutes)."""
    moment = instant
    while is_open(moment, window, zone) != want_open:
        moment += MINUTE
    return moment


@settings(deadline=None, max_examples=150)
@given(zoned_instants(minute_aligned=True), windows_(minute_aligned=True))
def test_matches_minute_by_minute_reference(zoned: tuple[ZoneInfo, datetime], window: SendWindow) -> None:
    zone, instant = zoned
    opened = next_open(instant, window, zone)
    assert opened == _scan(instant, window, zone, want_open=True)
    assert closes_at(opened, window, zone) == _scan(opened, window, zone, want_open=False)


def test_every_zone_once_around_its_changes() -> None:
    """Every zone, deterministically: across each 2025 offset change, with windows at its edges."""
    for name in ALL_ZONES:
        zone = ZoneInfo(name)
        for change in _offset_changes(name, 2025) or (utc(2025, 6, 1),):
            before = (change - SECOND).astimezone(zone).time().replace(second=0)
            after = change.astimezone(zone).time()
            edges = {before, after, (change + timedelta(minutes=30)).astimezone(zone).time()}
            for start in edges:
                for end in edges - {start}:
                    w = SendWindow(start, end)
                    for instant in (change - timedelta(hours=3), change, change + MINUTE):
                        opened = next_open(instant, w, zone)
                        assert opened >= instant
                        assert is_open(opened, w, zone)
                        assert opened - SECOND < instant or not is_open(opened - SECOND, w, zone)
                        closing = closes_at(opened, w, zone)
                        assert closing is not None
                        assert closing > opened
                        assert not is_open(closing, w, zone)
                        assert is_open(closing - SECOND, w, zone)


def test_search_spans_cover_the_worst_wait() -> None:
    first, last = windows._SEARCH_SPANS[0]
    assert first <= -1
    assert timedelta(days=last) >= MAX_WAIT


def test_every_local_date_is_searched() -> None:
    spans = windows._SEARCH_SPANS
    for (_, last), (first, _) in itertools.pairwise(spans):
        assert first == last + 1


@settings(deadline=None, max_examples=300)
@given(zoned_instants(), windows_(), st.lists(st.integers(-3 * 86400, 3 * 86400), min_size=1, max_size=12))
def test_open_spans_answer_as_closes_at_and_is_open_do(
    zoned: tuple[ZoneInfo, datetime], window: SendWindow, steps_s: list[int]
) -> None:
    # One memo asked at instants around the first one, in any order (a clock may also step back), near the
    # zone's offset changes half the time: every answer is the one computed afresh.
    zone, first = zoned
    spans = OpenSpans()
    for step_s in [0, *steps_s]:
        instant = first + timedelta(seconds=step_s)
        assert spans.closes_at(instant, window, zone) == closes_at(instant, window, zone)
        assert spans.is_open(instant, window, zone) is is_open(instant, window, zone)
        assert spans.closes_at(instant, None, zone) is None
        assert spans.is_open(instant, None, zone)


def test_open_spans_keep_at_most_their_bound() -> None:
    spans = OpenSpans(max_spans=3)
    moment = utc(2026, 6, 1, 12)
    for name in ALL_ZONES[:50]:
        spans.closes_at(moment, SendWindow(time(0), time(23, 59)), ZoneInfo(name))
        assert len(spans._spans) <= 3
