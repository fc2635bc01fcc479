"""Shared API types: UTC datetimes, problems, pages."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer

MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 50


def _rfc3339_text(value: Any) -> Any:
    # pydantic would take a number as a Unix time; the contract speaks of RFC 3339 text only.
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str):
        raise ValueError(
            "must be an RFC 3339 date-time string with an offset, like 2026-01-31T09:00:00+03:00"
        )
    return value


def format_utc(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


UtcDatetime = Annotated[
    AwareDatetime,
    BeforeValidator(_rfc3339_text),
    PlainSerializer(format_utc, return_type=str, when_used="json"),
]


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
