"""What every page handler needs: the parent's shared resources, the acting user in the logs, redirects."""

from __future__ import annotations

from typing import Any

import structlog
from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine

from mailer import keys
from mailer.admin import auth
from mailer.domain.errors import FieldError, InvalidError
from mailer.operations.ports import EnginePort

# Pages of tables: enough to scan by eye, few enough to render in a blink.
PAGE_SIZE = 50
# Notices shown after an action (Post/Redirect/Get): fixed words by code, so nothing from the query string
# is ever echoed as a message.
NOTICES = {
    "created": "Created.",
    "saved": "Saved.",
    "paused": "Paused: no new sends start; requests in flight finish.",
    "resumed": "Resumed.",
    "cancelled": "Cancelled: pending messages will not be sent.",
    "deleted": "Deleted.",
}


def db(request: web.Request) -> AsyncEngine:
    return request.config_dict[keys.DB]


def read_db(request: web.Request) -> AsyncEngine:
    """For pages that only read: the same pool in autocommit mode."""
    return request.config_dict[keys.READ_DB]


def engine(request: web.Request) -> EnginePort:
    return request.config_dict[keys.ENGINE]


def acting(request: web.Request) -> None:
    """Bind who does what to every log line of this request: the sign-in binds `user` and `user_via`; the
    name an operator recognises is added for the actions, which are audited by these lines."""
    user = auth.current_user(request)
    if user is not None:
        structlog.contextvars.bind_contextvars(user=user.subject, user_name=user.name)


def redirect(request: web.Request, name: str, notice: str | None = None, **parts: Any) -> web.HTTPSeeOther:
    """303 to a named admin route, optionally with a notice code."""
    url = request.app.router[name].url_for(**{k: str(v) for k, v in parts.items()})
    if notice is not None:
        url = url.with_query(notice=notice)
    return web.HTTPSeeOther(location=str(url))


def notice(request: web.Request) -> str | None:
    return NOTICES.get(request.query.get("notice", ""))


def form_errors(exc: InvalidError, aliases: dict[str, str] | None = None) -> dict[str, str]:
    """{form field: message} from a domain InvalidError; `aliases` maps API names to the form's names."""
    out: dict[str, str] = {}
    for error in exc.errors:
        out.setdefault(_field_of(error, aliases or {}), error.msg)
    return out


def _field_of(error: FieldError, aliases: dict[str, str]) -> str:
    names = [part for part in error.loc if isinstance(part, str) and part != "body"]
    for name in names:
        if name in aliases:
            return aliases[name]
    return names[0] if names else "form"


def positive_int(value: str | None) -> int | None:
    """A query parameter that should be a positive id; None for absent or nonsense (pages stay lenient)."""
    if value is None or not value.isascii() or not value.isdigit():
        return None
    number = int(value)
    return number if 0 < number < 2**63 else None
