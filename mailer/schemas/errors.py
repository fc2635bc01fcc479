"""pydantic's complaints as the domain's field errors, so both faces report them in the same words."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import ValidationError

from mailer.domain.errors import FieldError


def field_errors(exc: ValidationError, prefix: Sequence[str | int] = ()) -> list[FieldError]:
    out = []
    for err in exc.errors(include_url=False, include_input=False):
        msg = err["msg"]
        # pydantic prefixes custom validators' messages with "Value error, "; keep only the reason.
        msg = msg.removeprefix("Value error, ")
        out.append(FieldError(loc=(*prefix, *err["loc"]), msg=msg))
    return out
