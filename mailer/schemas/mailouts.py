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

from mailer.domain import mailouts as domain
from mailer.domain.customers import OPERATOR_CODE_RULE, check_operator_code, check_text
from mailer.domain.statuses import MailoutStatus
from mailer.domain.windows import SendWindow, format_window_time, parse_window_time
from mailer.schemas.common import StrictModel, UtcDatetime, not_nullable

MAX_TEXT_CHARS = 10_000
# Bounds the size of the activation query's IN lists and of every mailout row.
MAX_FILTER_ENTRIES = 1000
MAX_TAG_CHARS = 64

_START = "2030-01-31T09:00:00+03:00"
_END = "2030-01-31T21:00:00+03:00"
# Text the database can store: no NUL (check_text refuses it with its own words; the document says it here).
NO_NUL_PATTERN = "^[^\\x00]*$"
WINDOW_TIME_PATTERN = "^([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9])?$"
WINDOW_TIME_RULE = 'must be a local time "HH:MM" or "HH:MM:SS" as a string, such as "09:00"'
TEXT_RULE = f'must be a string of 1 to {MAX_TEXT_CHARS} characters, such as "Our shop is open late tonight"'
TAG_RULE = f'must be a string of 1 to {MAX_TAG_CHARS} characters, such as "vip"'
WINDOW_RULE = (
    'must be an object with "start" and "end", local times such as {"start": "09:00", "end": "21:00"}, '
    "or null for any time of day"
)


def _unique(values: list[str]) -> list[str]:
    return list(domain.unique(values))


def _string(rule: str, min_chars: int, max_chars: int) -> Any:
    """A BeforeValidator: pydantic's own "Input should be a valid string" says nothing of what is expected."""

    def check(value: Any) -> Any:
        if not isinstance(value, str) or not min_chars <= len(value) <= max_chars:
            raise ValueError(rule)
        return value

    return BeforeValidator(check)


def _list_of(example: str) -> Any:
    def check(value: Any) -> Any:
        if not isinstance(value, list):
            raise ValueError(f"must be a list, such as {example}; an empty list matches everyone")
        return value

    return BeforeValidator(check)


OperatorCode = Annotated[
    str,
    BeforeValidator(check_operator_code),
    Field(json_schema_extra={"pattern": "^[0-9]{3}$", "description": OPERATOR_CODE_RULE}, examples=["912"]),
]
# check_text: NUL and lone surrogates cannot be stored, so they are a 422 here rather than a 500 later.
Tag = Annotated[
    str,
    _string(TAG_RULE, 1, MAX_TAG_CHARS),
    Field(
        json_schema_extra={"minLength": 1, "maxLength": MAX_TAG_CHARS, "pattern": NO_NUL_PATTERN},
        examples=["vip"],
    ),
    AfterValidator(check_text),
]
MailoutText = Annotated[
    str,
    _string(TEXT_RULE, 1, MAX_TEXT_CHARS),
    Field(json_schema_extra={"minLength": 1, "maxLength": MAX_TEXT_CHARS, "pattern": NO_NUL_PATTERN}),
    AfterValidator(check_text),
]


class MailoutFilter(StrictModel):
    """Who gets the mailout: a customer matches when each non-empty list holds its value."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"operator_codes": ["912", "916"], "tags": ["vip"]}]}
    )

    operator_codes: Annotated[
        list[OperatorCode],
        _list_of('["912", "916"]'),
        Field(max_length=MAX_FILTER_ENTRIES),
        AfterValidator(_unique),
    ] = Field(default_factory=list, description="three-digit operator codes; empty matches every code")
    tags: Annotated[
        list[Tag], _list_of('["vip"]'), Field(max_length=MAX_FILTER_ENTRIES), AfterValidator(_unique)
    ] = Field(default_factory=list, description="customer tags; empty matches every tag (and no tag)")

    def to_domain(self) -> domain.AudienceFilter:
        return domain.AudienceFilter(tuple(self.operator_codes), tuple(self.tags))

    @classmethod
    def from_domain(cls, value: domain.AudienceFilter) -> MailoutFilter:
        return cls(operator_codes=list(value.operator_codes), tags=list(value.tags))


def _window_time(value: Any) -> str:
    # Normalised here so that "09:00:00" and "09:00" are the same window everywhere after.
    if not isinstance(value, str):
        raise ValueError(WINDOW_TIME_RULE)
    try:
        return format_window_time(parse_window_time(value))
    except ValueError:
        raise ValueError(WINDOW_TIME_RULE) from None


WindowTime = Annotated[
    str,
    BeforeValidator(_window_time),
    Field(
        description='"HH:MM" or "HH:MM:SS", local time of each customer',
        examples=["09:00"],
        json_schema_extra={"pattern": WINDOW_TIME_PATTERN},
    ),
]


class SendWindowBody(StrictModel):
    """Local hours `[start, end)` in which sends may start; `start > end` wraps past midnight."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"start": "09:00", "end": "21:00"}]})

    start: WindowTime
    end: WindowTime

    @model_validator(mode="before")
    @classmethod
    def _both_times(cls, value: Any) -> Any:
        # `{}` is not "no window" (that is null): a client that sends it would silently get any time of day.
        # A window with one end only is left to the per-field "Field required".
        if not isinstance(value, dict) or not value:
            raise ValueError(WINDOW_RULE)
        return value

    @model_validator(mode="after")
    def _not_empty(self) -> SendWindowBody:
        if self.start == self.end:
            raise ValueError('start and end must differ, such as {"start": "21:00", "end": "09:00"}')
        return self

    def to_domain(self) -> SendWindow:
        return SendWindow.parse(self.start, self.end)

    @classmethod
    def from_domain(cls, window: SendWindow | None) -> SendWindowBody | None:
        if window is None:
            return None
        return cls(start=format_window_time(window.start), end=format_window_time(window.end))


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
    send_window: SendWindowBody | None = Field(default=None, description="omitted or null: any time of day")

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

    # Absent keeps the value; null is refused (a mailout always has these), and the document says so.
    start_at: UtcDatetime | None = Field(None, json_schema_extra=not_nullable)
    end_at: UtcDatetime | None = Field(None, json_schema_extra=not_nullable)
    text: MailoutText | None = Field(None, json_schema_extra=not_nullable)
    filter: MailoutFilter | None = Field(default=None, description="null or {}: every customer")
    send_window: SendWindowBody | None = Field(default=None, description="null: any time of day")

    @field_validator("start_at", "end_at", "text")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        # Only a value given explicitly reaches here; null for these would leave a mailout without one.
        if value is None:
            raise ValueError("may not be null; leave the field out to keep the current value")
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
