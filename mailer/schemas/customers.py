"""Customer request and response bodies, and the result of a bulk import."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    WithJsonSchema,
    model_validator,
)
from pydantic.config import JsonDict
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from mailer.domain.customers import (
    DEFAULT_TIMEZONE,
    PHONE_INT_MAX,
    PHONE_INT_MIN,
    PHONE_RULE,
    TAG_MAX_CHARS,
    CustomerFields,
    available_zones,
    check_operator_code,
    check_tag,
    check_text,
    check_timezone,
    default_operator_code,
    normalize_phone,
)
from mailer.schemas.common import FieldProblem, StrictModel, UtcDatetime, not_nullable

PHONE_PATTERN = "^7[0-9]{10}$"
# NUL cannot be stored (check_text refuses it); the document states the same rule as a pattern.
NO_NUL_PATTERN = "^[^\\x00]*$"

_PHONE_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "string", "pattern": PHONE_PATTERN},
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
    "anyOf": [{"type": "string", "maxLength": TAG_MAX_CHARS, "pattern": NO_NUL_PATTERN}, {"type": "null"}],
    "description": f"a free label of at most {TAG_MAX_CHARS} characters, or null",
    "examples": ["vip"],
}
_TIMEZONE_SCHEMA: dict[str, Any] = {
    "type": "string",
    "description": f"an IANA time zone name, case as written; default {DEFAULT_TIMEZONE}",
    "examples": ["Europe/Moscow"],
}


class _ZoneNames:
    """The time zone schema, with every name the server accepts (check_timezone's set) as its enum.

    Written when the schema is, not at import: the list comes from the tzdata files.
    """

    def __get_pydantic_json_schema__(
        self, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {**_TIMEZONE_SCHEMA, "enum": sorted(available_zones())}


# The validators run on values the client sent, never on the defaults: an explicit null for phone,
# operator_code or timezone is refused, while leaving the field out picks the default.
def _phone(value: object) -> str:
    # JSON Schema's "integer" is any number without a fraction, 79001234567.0 included: accept what the
    # document allows (a float that is exactly an integer in range) as that integer.
    if isinstance(value, float) and value.is_integer() and PHONE_INT_MIN <= value <= PHONE_INT_MAX:
        value = int(value)
    return normalize_phone(value)


PhoneIn = Annotated[str, BeforeValidator(_phone), WithJsonSchema(_PHONE_SCHEMA)]
OptionalPhoneIn = Annotated[str | None, BeforeValidator(_phone), WithJsonSchema(_PHONE_SCHEMA)]
OperatorCodeIn = Annotated[
    str | None, BeforeValidator(check_operator_code), WithJsonSchema(_OPERATOR_CODE_SCHEMA)
]
TagIn = Annotated[str | None, BeforeValidator(check_tag), WithJsonSchema(_TAG_SCHEMA)]
TimezoneIn = Annotated[str, BeforeValidator(check_timezone), _ZoneNames()]
OptionalTimezoneIn = Annotated[str | None, BeforeValidator(check_timezone), _ZoneNames()]

# Query parameters of the customer list: text, so the phone is the string form only.
TagQuery = Annotated[
    str,
    Field(max_length=TAG_MAX_CHARS, json_schema_extra={"pattern": NO_NUL_PATTERN}),
    AfterValidator(check_text),
]
OperatorCodeQuery = Annotated[str, Field(pattern=r"^[0-9]{3}$")]


def _query_phone(value: object) -> str:
    if isinstance(value, str) and re.fullmatch(PHONE_PATTERN, value):
        return value
    raise ValueError(PHONE_RULE.replace(" (a string or an integer)", ""))


PhoneQuery = Annotated[
    str,
    BeforeValidator(_query_phone),
    WithJsonSchema({"type": "string", "pattern": PHONE_PATTERN, "examples": ["79001234567"]}),
]

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
    # Absent: derived from the phone; null is refused like any other non-code.
    operator_code: OperatorCodeIn = Field(None, json_schema_extra=not_nullable)
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


_CUSTOMER_IN_FIELDS = frozenset(CustomerIn.model_fields)


def customer_fields(record: object) -> CustomerFields | None:
    """`CustomerIn.model_validate(record).to_fields()` when the model accepts `record`, else None.

    For the import, which validates every line: the same rules (the same check functions) in plain Python,
    without building a model, for about a third of the model's cost. None covers every record the model
    refuses, and the caller then validates it with the model, so that the errors a client reads have one
    source. `tests/test_import_fast_path.py` holds the two to the same answers.
    """
    if not isinstance(record, dict) or "phone" not in record or not record.keys() <= _CUSTOMER_IN_FIELDS:
        return None
    try:
        phone = _phone(record["phone"])
        # Absent is the default; an explicit null is refused by the checks, as by the model.
        operator_code = (
            check_operator_code(record["operator_code"])
            if "operator_code" in record
            else default_operator_code(phone)
        )
        timezone = check_timezone(record["timezone"]) if "timezone" in record else DEFAULT_TIMEZONE
        return CustomerFields(phone, operator_code, check_tag(record.get("tag")), timezone)
    except ValueError:
        return None


class CustomerPatch(StrictModel):
    """The fields to change; absent fields stay as they are. Only `tag` may be null."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"tag": "churned"}, {"phone": "79161234567"}, {"tag": None}]}
    )

    # Absent keeps the value; null is refused for all but tag, and the document says so.
    phone: OptionalPhoneIn = Field(None, json_schema_extra=not_nullable)
    operator_code: OperatorCodeIn = Field(None, json_schema_extra=not_nullable)
    tag: TagIn = None
    timezone: OptionalTimezoneIn = Field(None, json_schema_extra=not_nullable)

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
