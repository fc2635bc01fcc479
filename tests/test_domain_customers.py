"""Customer field rules: phones, operator codes, tags, time zones."""

from __future__ import annotations

import zoneinfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailer.domain.customers import (
    PHONE_INT_MAX,
    PHONE_INT_MIN,
    available_zones,
    check_operator_code,
    check_tag,
    check_text,
    check_timezone,
    default_operator_code,
    normalize_phone,
)


@pytest.mark.parametrize(
    ("given_phone", "expected"),
    [("79001234567", "79001234567"), (79001234567, "79001234567"), (70000000000, "70000000000")],
)
def test_phone_as_string_or_integer(given_phone: object, expected: str) -> None:
    assert normalize_phone(given_phone) == expected


@pytest.mark.parametrize(
    "bad",
    [
        "7900123456",  # ten digits
        "790012345678",  # twelve digits
        "89001234567",  # leading 8
        "+79001234567",
        " 79001234567",
        "7900123456\n",
        "7900123456\u0667",  # an Arabic-Indic digit: \d would take it
        "",
        True,
        False,
        79001234567.0,
        89001234567,
        10**100,
        -79001234567,
        None,
        ["79001234567"],
    ],
)
def test_phone_refuses(bad: object) -> None:
    with pytest.raises(ValueError, match="7 followed by ten digits"):
        normalize_phone(bad)


@given(st.integers(min_value=PHONE_INT_MIN, max_value=PHONE_INT_MAX))
def test_every_integer_phone_round_trips_through_text(number: int) -> None:
    text = normalize_phone(number)
    assert normalize_phone(text) == text
    assert int(text) == number


def test_default_operator_code_is_digits_two_to_four() -> None:
    assert default_operator_code("79161234567") == "916"


@pytest.mark.parametrize("bad", ["90", "9000", "9a0", "", 900, None, "٩٠٠"])
def test_operator_code_refuses(bad: object) -> None:
    with pytest.raises(ValueError, match="three digits"):
        check_operator_code(bad)


def test_tag_rules() -> None:
    assert check_tag(None) is None
    assert check_tag("x" * 64) == "x" * 64
    assert check_tag("") == ""
    assert check_tag("ünïcødé 🎉") == "ünïcødé 🎉"
    with pytest.raises(ValueError, match="at most 64"):
        check_tag("x" * 65)
    with pytest.raises(ValueError, match="string"):
        check_tag(5)


@pytest.mark.parametrize("bad", ["a\x00b", "\ud800"])
def test_text_a_database_cannot_store_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match=r"NUL|surrogate"):
        check_text(bad)


def test_timezones() -> None:
    assert check_timezone("Asia/Kathmandu") == "Asia/Kathmandu"
    assert check_timezone("UTC") == "UTC"
    for bad in ("Mars/Olympus", "europe/moscow", "", "../etc/passwd", None, 3):
        with pytest.raises(ValueError, match="IANA"):
            check_timezone(bad)


def test_zone_set_is_read_once_and_complete() -> None:
    assert available_zones() is available_zones()
    assert available_zones() == zoneinfo.available_timezones()
