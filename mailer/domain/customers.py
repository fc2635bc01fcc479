"""Customer field rules, pure: phone normalisation, the default operator code, tags and time zones.

Each check returns the clean value or raises ``ValueError`` with a message meant for the client; the API
schemas and the bulk import both validate through these, so one rule has one wording everywhere.
"""

from __future__ import annotations

import functools
import re
import zoneinfo
from typing import NamedTuple

PHONE_DIGITS = 11
PHONE_COUNTRY_DIGIT = "7"
# A phone given as a JSON integer: 7 followed by ten digits is exactly this range.
PHONE_INT_MIN = 70_000_000_000
PHONE_INT_MAX = 79_999_999_999
OPERATOR_CODE_DIGITS = 3
TAG_MAX_CHARS = 64
DEFAULT_TIMEZONE = "UTC"

# [0-9], not \d: \d also matches Arabic-Indic and other digits, which the provider would not understand.
_PHONE_PATTERN = re.compile(r"7[0-9]{10}")
_OPERATOR_CODE_PATTERN = re.compile(r"[0-9]{3}")

PHONE_RULE = "must be 7 followed by ten digits, like 79001234567 (a string or an integer)"
OPERATOR_CODE_RULE = "must be three digits, like 900"


def normalize_phone(value: object) -> str:
    """The phone as an 11-character string, from a string or an integer (never a bool or a float)."""
    # bool is an int subclass: True must not become the phone "1".
    if isinstance(value, bool):
        raise ValueError(PHONE_RULE)
    if isinstance(value, int):
        # Checked before str(): a huge integer would be slow (or refused) to turn into text.
        if not PHONE_INT_MIN <= value <= PHONE_INT_MAX:
            raise ValueError(PHONE_RULE)
        return str(value)
    if isinstance(value, str) and _PHONE_PATTERN.fullmatch(value):
        return value
    raise ValueError(PHONE_RULE)


def is_phone_prefix(text: str) -> bool:
    """Whether `text` can begin a stored phone: ASCII digits, the country digit first, at most eleven."""
    digits = text.isascii() and text.isdigit()
    return digits and text.startswith(PHONE_COUNTRY_DIGIT) and len(text) <= PHONE_DIGITS


def default_operator_code(phone: str) -> str:
    """The operator code a phone implies: the three digits after the country digit."""
    return phone[1 : 1 + OPERATOR_CODE_DIGITS]


def check_operator_code(value: object) -> str:
    if isinstance(value, str) and _OPERATOR_CODE_PATTERN.fullmatch(value):
        return value
    raise ValueError(OPERATOR_CODE_RULE)


def check_text(value: str) -> str:
    """Refuse text a database cannot store: NUL (PostgreSQL rejects it) and lone surrogates (not UTF-8)."""
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text (no lone surrogates)") from None
    return value


def check_tag(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"must be a string of at most {TAG_MAX_CHARS} characters, or null")
    if len(value) > TAG_MAX_CHARS:
        raise ValueError(f"must be at most {TAG_MAX_CHARS} characters long")
    return check_text(value)


@functools.cache
def available_zones() -> frozenset[str]:
    """The IANA zone names this installation knows; read once (the scan walks the tzdata files)."""
    return frozenset(zoneinfo.available_timezones())


def check_timezone(value: object) -> str:
    if isinstance(value, str) and value in available_zones():
        return value
    raise ValueError("must be an IANA time zone name, like Europe/Moscow or UTC")


class CustomerFields(NamedTuple):
    """A customer's writable fields, validated and with defaults applied.

    A NamedTuple rather than a frozen dataclass: an import builds one per line, and this is the cheapest.
    """

    phone: str
    operator_code: str
    tag: str | None
    timezone: str
