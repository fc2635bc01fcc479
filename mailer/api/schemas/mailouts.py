"""Request and response bodies of /api/mailouts: validation of what clients send, the shapes they get back."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from mailer.api.schemas.common import StrictModel, UtcDatetime
from mailer.domain import mailouts as domain
from mailer.domain.customers import check_text
from mailer.domain.statuses import MailoutStatus
from mailer.domain.windows import SendWindow, format_window_time, parse_window_time

MAX_TEXT_CHARS = 10_000
# Bounds the size of the activation query's IN lists and of every mailout row.
MAX_FILTER_ENTRIES = 1000
MAX_TAG_CHARS = 64

_START = "2030-01-31T09:00:00+03:00"
_END = "2030-01-31T21:00:00+03:00"


def _unique(values: list[str]) -> list[str]:
    return list(domain.unique(values))


OperatorCode = Annotated[str, Field(pattern=r"^[0-9]{3}$", examples=["912"])]
# check_text: NUL and lone surrogates cannot be stored, so they are a 422 here rather than a 500 later.
Tag = Annotated[
    str, Field(min_length=1, max_length=MAX_TAG_CHARS, examples=["vip"]), AfterValidator(check_text)
]
MailoutText = Annotated[str, Field(min_length=1, max_length=MAX_TEXT_CHARS), AfterValidator(check_text)]


class MailoutFilter(StrictModel):
    """Who gets the mailout: a customer matches when each non-empty list holds its value."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"operator_codes": ["912", "916"], "tags": ["vip"]}]}
    )

    operator_codes: Annotated[
        list[OperatorCode], Field(max_length=MAX_FILTER_ENTRIES), AfterValidator(_unique)
    ] = Field(default_factory=list, description="three-digit operator codes; empty matches every code")
    tags: Annotated[list[Tag], Field(max_length=MAX_FILTER_ENTRIES), AfterValidator(_unique)] = Field(
        default_factory=list, description="customer tags; empty matches every tag (and no tag)"
    )

    def to_domain(self) -> domain.AudienceFilter:
        return domain.AudienceFilter(tuple(self.operator_codes), tuple(self.tags))

    @classmethod
    def from_domain(cls, value: domain.AudienceFilter) -> MailoutFilter:
        return cls(operator_codes=list(value.operator_codes), tags=list(value.tags))


def _window_time(value: str) -> str:
    # Normalised here so that "09:00:00" and "09:00" are the same window everywhere after.
    return format_window_time(parse_window_time(value))


WindowTime = Annotated[
    str,
    Field(description='"HH:MM" or "HH:MM:SS", local time of each customer', examples=["09:00"]),
    AfterValidator(_window_time),
]


class SendWindowBody(StrictModel):
    """Local hours `[start, end)` in which sends may start; `start > end` wraps past midnight."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"start": "09:00", "end": "21:00"}]})

    start: WindowTime
    end: WindowTime

    @model_validator(mode="after")
    def _not_empty(self) -> SendWindowBody:
        if self.start == self.end:
            raise ValueError("start and end must differ")
        return self

    def to_domain(self) -> SendWindow:
        return SendWindow.parse(self.start, self.end)

    @classmethod
    def from_domain(cls, window: SendWindow | None) -> SendWindowBody | None:
        if window is None:
            return None
        return cls(start=format_window_time(window.start), end=format_window_time(window.end))


def _empty_object_is_none(value: Any) -> Any:
    # `"send_window": {}` reads naturally as "no window", as `"filter": {}` means "no filter".
    return None if value == {} else value


OptionalWindow = Annotated[SendWindowBody | None, BeforeValidator(_empty_object_is_none)]


def _filter_or_empty(value: MailoutFilter | None) -> domain.AudienceFilter:
    return value.to_domain() if value is not None else domain.AudienceFilter()


class MailoutCreate(StrictModel):
    """A new mailout, or the full replacement of one (PUT)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "start_at": _START,
                    "end_at": _END,
                    "text": "Our shop is open late tonight",
                    "filter": {"operator_codes": ["912"], "tags": ["vip"]},
                    "send_window": {"start": "09:00", "end": "21:00"},
                }
            ]
        }
    )

    start_at: UtcDatetime = Field(description="when sending may begin (RFC 3339 with an offset)")
    end_at: UtcDatetime = Field(description="when sending stops; must be later than start_at")
    text: MailoutText
    filter: MailoutFilter | None = Field(default=None, description="omitted or null: every customer")
    send_window: OptionalWindow = Field(default=None, description="omitted or null: any time of day")

    @field_validator("end_at")
    @classmethod
    def _after_start(cls, value: Any, info: ValidationInfo) -> Any:
        start = info.data.get("start_at")
        if start is not None and value <= start:
            raise ValueError("end_at must be later than start_at")
        return value

    def to_domain(self) -> domain.MailoutSpec:
        return domain.MailoutSpec(
            start_at=self.start_at,
            end_at=self.end_at,
            text=self.text,
            filter=_filter_or_empty(self.filter),
            window=self.send_window.to_domain() if self.send_window is not None else None,
        )


class MailoutPatch(StrictModel):
    """Some fields of a mailout; absent fields keep their value. `filter` replaces the whole filter."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"text": "Open until midnight", "send_window": None}, {"end_at": _END}]
        }
    )

    start_at: UtcDatetime | None = None
    end_at: UtcDatetime | None = None
    text: MailoutText | None = None
    filter: MailoutFilter | None = Field(default=None, description="null or {}: every customer")
    send_window: OptionalWindow = Field(default=None, description="null or {}: any time of day")

    @field_validator("start_at", "end_at", "text")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        # Only a value given explicitly reaches here; null for these would leave a mailout without one.
        if value is None:
            raise ValueError("may not be null")
        return value

    def apply(self, spec: domain.MailoutSpec) -> domain.MailoutSpec:
        """The spec with this patch's given fields changed."""
        given = self.model_fields_set
        return domain.MailoutSpec(
            start_at=self.start_at if self.start_at is not None else spec.start_at,
            end_at=self.end_at if self.end_at is not None else spec.end_at,
            text=self.text if self.text is not None else spec.text,
            filter=_filter_or_empty(self.filter) if "filter" in given else spec.filter,
            window=(
                (self.send_window.to_domain() if self.send_window is not None else None)
                if "send_window" in given
                else spec.window
            ),
        )


class MailoutOut(BaseModel):
    """A mailout."""

    id: int
    start_at: UtcDatetime
    end_at: UtcDatetime
    text: str
    filter: MailoutFilter
    send_window: SendWindowBody | None
    status: MailoutStatus
    created_at: UtcDatetime
    updated_at: UtcDatetime

    @classmethod
    def from_domain(cls, mailout: domain.Mailout) -> MailoutOut:
        spec = mailout.spec
        return cls(
            id=mailout.id,
            start_at=spec.start_at,
            end_at=spec.end_at,
            text=spec.text,
            filter=MailoutFilter.from_domain(spec.filter),
            send_window=SendWindowBody.from_domain(spec.window),
            status=mailout.status,
            created_at=mailout.created_at,
            updated_at=mailout.updated_at,
        )


class MailoutPage(BaseModel):
    """A page of mailouts in id order; pass `next_after` as `after` for the next page (null: no more)."""

    items: list[MailoutOut]
    next_after: int | None


class ByStatus(BaseModel):
    """Message counts for every message status, zeros included (tests check these match `MessageStatus`)."""

    pending: int = 0
    sending: int = 0
    sent: int = 0
    failed: int = 0
    expired: int = 0
    cancelled: int = 0


class ErrorsByKind(BaseModel):
    """Provider requests that did not send, by kind (every `Outcome` but `sent`), zeros included."""

    transient: int = Field(0, description="5xx, 429, 408 or a garbled answer; retried")
    timeout: int = Field(0, description="no answer in time; retried")
    connection: int = Field(0, description="refused, reset, DNS; retried")
    rejected: int = Field(0, description="400 and other 4xx; permanent for that message")
    unauthorized: int = Field(0, description="401 or 403: the provider token is wrong")
    cut: int = Field(0, description="cut while in flight: the end, the window closing, a cancel, a shutdown")


class MailoutStatsItem(BaseModel):
    """One mailout with the counts of its messages."""

    id: int
    status: MailoutStatus
    start_at: UtcDatetime
    end_at: UtcDatetime
    text: str
    total: int
    by_status: ByStatus


class MailoutStatsPage(BaseModel):
    """A page of mailouts with their counts; pagination as in the mailout list."""

    items: list[MailoutStatsItem]
    next_after: int | None


class MailoutStats(BaseModel):
    """The statistics of one mailout."""

    mailout: MailoutOut
    total: int
    by_status: ByStatus
    first_sent_at: UtcDatetime | None
    last_sent_at: UtcDatetime | None
    attempts: int = Field(description="provider requests made")
    errors_by_kind: ErrorsByKind
