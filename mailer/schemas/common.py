"""Shared API types: UTC datetimes, problems, pages."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer, WithJsonSchema

MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 50


DATETIME_EXAMPLE = "2026-12-01T09:00:00+03:00"
DATETIME_RULE = f"must be an RFC 3339 date-time with an offset, such as {DATETIME_EXAMPLE}"
# RFC 3339 `date-time` with the offset required, as text: the server and the document use this one pattern.
# pydantic alone would read "0" or 1900000000 as Unix times, and a time without an offset as local time.
RFC3339_PATTERN = (
    r"^([1-9][0-9]{3}|0[1-9][0-9]{2}|00[1-9][0-9]|000[1-9])-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
    r"[Tt]([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]+)?([Zz]|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$"
)
_RFC3339 = re.compile(RFC3339_PATTERN)
# A day inside the range of Python's datetime at each end: any instant in between has a local time in every
# zone (offsets stay within a day), so converting to UTC or to a customer's zone can never overflow.
EARLIEST = datetime(1, 1, 2, tzinfo=UTC)
LATEST = datetime(9999, 12, 30, 23, 59, 59, 999999, tzinfo=UTC)
RANGE_RULE = "must be between 0001-01-02T00:00:00Z and 9999-12-30T23:59:59Z once converted to UTC"


def parse_rfc3339(value: Any) -> datetime:
    """An aware UTC datetime from RFC 3339 text; ValueError, saying what is expected, for anything else."""
    if isinstance(value, datetime):
        # Built by our own code (a response model from a stored row), never sent by a client.
        return value
    if not isinstance(value, str) or not _RFC3339.fullmatch(value):
        raise ValueError(DATETIME_RULE)
    try:
        # upper(): Python reads "T" and "Z" only; RFC 3339 allows "t" and "z" too (digits are unaffected).
        parsed = datetime.fromisoformat(value.upper())
    except ValueError:
        raise ValueError(f"{DATETIME_RULE} (this day does not exist)") from None
    try:
        in_utc = parsed.astimezone(UTC)
    except OverflowError:
        raise ValueError(RANGE_RULE) from None
    if not EARLIEST <= in_utc <= LATEST:
        raise ValueError(RANGE_RULE)
    return in_utc


def format_utc(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


UtcDatetime = Annotated[
    datetime,
    BeforeValidator(parse_rfc3339),
    WithJsonSchema(
        {"type": "string", "format": "date-time", "pattern": RFC3339_PATTERN, "examples": [DATETIME_EXAMPLE]},
        mode="validation",
    ),
    PlainSerializer(format_utc, return_type=str, when_used="json"),
]


def not_nullable(schema: dict[str, Any]) -> None:
    """json_schema_extra of an optional field that may be left out but not sent as null: its schema says so.

    pydantic writes `X | None = None` as `anyOf: [X, {"type": "null"}]` with `default: null`; a PATCH field
    whose validator refuses null is just X, and absent.
    """
    alternatives = schema.pop("anyOf", None)
    if isinstance(alternatives, list):
        kept = [alt for alt in alternatives if alt.get("type") != "null"]
        if len(kept) == 1:
            schema.update(kept[0])
        else:
            schema["anyOf"] = kept
    if schema.get("default", ...) is None:
        del schema["default"]


class StrictModel(BaseModel):
    """Input models: unknown fields are a client error, not something to ignore."""

    model_config = ConfigDict(extra="forbid")


class FieldProblem(BaseModel):
    loc: list[str | int]
    msg: str


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str = Field(examples=["https://mailer.invalid/problems/unprocessable-content"])
    title: str = Field(examples=["Unprocessable Content"])
    status: int = Field(examples=[422])
    detail: str = Field(examples=["the request is not valid"])
    errors: list[FieldProblem] = Field(default_factory=list)


# Ids are int64 in the database; anything larger can name nothing and must not reach the driver.
INT64_MAX = 2**63 - 1
ResourceId = Annotated[int, Field(ge=1, le=INT64_MAX)]
PageLimit = Annotated[int, Field(ge=1, le=MAX_PAGE_SIZE)]
AfterId = Annotated[int, Field(ge=0, le=INT64_MAX)]
