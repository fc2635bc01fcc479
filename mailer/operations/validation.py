"""Input checks for callers that do not speak JSON bodies (the admin UI's forms), by the API's own rules.

The request models of `mailer.schemas` are the single statement of what a valid mailout or customer
is; these functions run them on plain dicts and turn their complaints into the domain's `InvalidError`, so
a form and an API body are refused for the same reasons, in the same words.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ValidationError

from mailer.domain.customers import CustomerFields
from mailer.domain.errors import InvalidError
from mailer.domain.mailouts import AudienceFilter, MailoutSpec, SpecEdit
from mailer.domain.windows import SendWindow
from mailer.schemas.customers import CustomerIn, CustomerPatch
from mailer.schemas.errors import field_errors
from mailer.schemas.mailouts import MailoutCreate, MailoutFilter, MailoutPatch, SendWindowBody


def _validated[M: BaseModel](model: type[M], data: Mapping[str, Any]) -> M:
    try:
        return model.model_validate(dict(data))
    except ValidationError as exc:
        raise InvalidError(field_errors(exc)) from None


def mailout_spec(data: Mapping[str, Any]) -> MailoutSpec:
    """A whole mailout (`start_at`, `end_at`, `text`, `filter`, `send_window`), as in create."""
    return _validated(MailoutCreate, data).to_domain()


def mailout_edit(data: Mapping[str, Any]) -> SpecEdit:
    """Only the given fields change, as in PATCH."""
    return _validated(MailoutPatch, data).apply


def audience(
    filter_data: Mapping[str, Any] | None, window_data: Mapping[str, Any] | None
) -> tuple[AudienceFilter, SendWindow | None]:
    """A mailout's filter and window; None (or `{}`) for either means everyone / any time."""
    audience_filter = _validated(MailoutFilter, filter_data).to_domain() if filter_data else AudienceFilter()
    window = _validated(SendWindowBody, window_data).to_domain() if window_data else None
    return audience_filter, window


def customer_fields(data: Mapping[str, Any]) -> CustomerFields:
    """A whole customer, as in create (defaults for what is absent)."""
    return _validated(CustomerIn, data).to_fields()


def customer_changes(data: Mapping[str, Any]) -> dict[str, str | None]:
    """The given fields of a customer, as in PATCH."""
    return _validated(CustomerPatch, data).changes()
