"""Customer request and response bodies, and the result of a bulk import."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema, model_validator
from pydantic.config import JsonDict

from mailer.api.schemas.common import FieldProblem, StrictModel, UtcDatetime
from mailer.domain.customers import (
    DEFAULT_TIMEZONE,
    PHONE_INT_MAX,
    PHONE_INT_MIN,
    TAG_MAX_CHARS,
    CustomerFields,
    check_operator_code,
    check_tag,
    check_timezone,
    default_operator_code,
    normalize_phone,
)

_PHONE_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "string", "pattern": "^7[0-9]{10}$"},
        {"type": "integer", "minimum": PHONE_INT_MIN, "maximum": PHONE_INT_MAX},
    ],
    "description": "7 followed by ten digits, as a string or an integer; always returned as a string",
    "examples": ["79001234567"],
}
_OPERATOR_CODE_SCHEMA: dict[str, Any] = {
    "type": "string",
    "pattern": "^[0-9]{3}$",
    "description": "three digits; defaults to the phone's digits 2-4",
    "examples": ["900"],
}
_TAG_SCHEMA: dict[str, Any] = {
    "anyOf": [{"type": "string", "maxLength": TAG_MAX_CHARS}, {"type": "null"}],
    "description": f"a free label of at most {TAG_MAX_CHARS} characters, or null",
    "examples": ["vip"],
}
_TIMEZONE_SCHEMA: dict[str, Any] = {
    "type": "string",
    "description": f"an IANA time zone name; default {DEFAULT_TIMEZONE}",
    "examples": ["Europe/Moscow"],
}

# The validators run on values the client sent, never on the defaults: an explicit null for phone,
# operator_code or timezone is refused, while leaving the field out picks the default.
PhoneIn = Annotated[str, BeforeValidator(normalize_phone), WithJsonSchema(_PHONE_SCHEMA)]
OptionalPhoneIn = Annotated[str | None, BeforeValidator(normalize_phone), WithJsonSchema(_PHONE_SCHEMA)]
OperatorCodeIn = Annotated[
    str | None, BeforeValidator(check_operator_code), WithJsonSchema(_OPERATOR_CODE_SCHEMA)
]
TagIn = Annotated[str | None, BeforeValidator(check_tag), WithJsonSchema(_TAG_SCHEMA)]
TimezoneIn = Annotated[str, BeforeValidator(check_timezone), WithJsonSchema(_TIMEZONE_SCHEMA)]
OptionalTimezoneIn = Annotated[str | None, BeforeValidator(check_timezone), WithJsonSchema(_TIMEZONE_SCHEMA)]

_EXAMPLE_IN: JsonDict = {
    "phone": "79001234567",
    "operator_code": "900",
    "tag": "vip",
    "timezone": "Europe/Moscow",
}


class CustomerIn(StrictModel):
    """A whole customer, for create, replace and each import line; only `phone` is required."""

    model_config = ConfigDict(json_schema_extra={"examples": [_EXAMPLE_IN, {"phone": 79001234567}]})

    phone: PhoneIn
    operator_code: OperatorCodeIn = None
    tag: TagIn = None
    timezone: TimezoneIn = DEFAULT_TIMEZONE

    @model_validator(mode="after")
    def _default_operator_code(self) -> CustomerIn:
        if self.operator_code is None:
            self.operator_code = default_operator_code(self.phone)
        return self

    def to_fields(self) -> CustomerFields:
        return CustomerFields(
            phone=self.phone,
            operator_code=self.operator_code or default_operator_code(self.phone),
            tag=self.tag,
            timezone=self.timezone,
        )


class CustomerPatch(StrictModel):
    """The fields to change; absent fields stay as they are. Only `tag` may be null."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"tag": "churned"}, {"phone": "79161234567"}, {"tag": None}]}
    )

    phone: OptionalPhoneIn = None
    operator_code: OperatorCodeIn = None
    tag: TagIn = None
    timezone: OptionalTimezoneIn = None

    def changes(self) -> dict[str, str | None]:
        """Only the fields the client sent, by name."""
        return {name: getattr(self, name) for name in self.model_fields_set}


class Customer(BaseModel):
    """A customer as the API returns it."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": 1,
                    **_EXAMPLE_IN,
                    "created_at": "2026-01-31T09:00:00Z",
                    "updated_at": "2026-01-31T09:00:00Z",
                }
            ]
        }
    )

    id: int
    phone: str
    operator_code: str
    tag: str | None
    timezone: str
    created_at: UtcDatetime
    updated_at: UtcDatetime


class CustomerPage(BaseModel):
    """One page of customers in id order; pass `next_after` as `after` for the next page (null: the end)."""

    items: list[Customer]
    next_after: int | None


class LineErrors(BaseModel):
    """Why one line of an import was refused; `line` counts from 1 and includes a CSV header."""

    line: int
    errors: list[FieldProblem]


class ImportResult(BaseModel):
    """What a bulk import did: `created + updated + failed == lines`."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "created": 2,
                    "updated": 1,
                    "failed": 1,
                    "lines": 4,
                    "errors": [{"line": 3, "errors": [{"loc": ["phone"], "msg": "must be 7 followed by …"}]}],
                    "errors_truncated": False,
                }
            ]
        }
    )

    created: int = Field(description="customers that did not exist before")
    updated: int = Field(description="lines that changed an existing customer (found by phone)")
    failed: int = Field(description="lines refused; the first of them are listed in `errors`")
    lines: int = Field(description="data lines read (blank lines and a CSV header are not counted)")
    errors: list[LineErrors]
    errors_truncated: bool = Field(description="true when more lines failed than `errors` lists")
