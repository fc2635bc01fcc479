"""The mailout form: its fields as the API's body, and a stored mailout as the form's values.

Times are entered in UTC (the form says so): `<input type="datetime-local">` carries no offset, and the
API refuses a time without one, so the offset is added here, never guessed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from mailer.admin.pages.format import local_input
from mailer.domain.mailouts import EDITABLE_WHILE_ACTIVE, FILTER, START_AT, Mailout
from mailer.domain.statuses import MAILOUT_FINAL, MailoutStatus
from mailer.domain.windows import format_window_time

# Operator codes and tags are typed as lists separated by commas (or, for codes, spaces too).
_CODE_SEPARATORS = re.compile(r"[,\s]+")
_MINUTES_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}$")
_SECONDS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}$")
# The form's names for the API's fields, where they differ (errors are shown next to the form's field).
ERROR_ALIASES = {
    "operator_codes": "operator_codes",
    "tags": "tags",
    "send_window": "window",
    "start": "window",
    "end": "window",
}
FIELDS = ("start_at", "end_at", "text", "operator_codes", "tags", "window_start", "window_end")
_ACTIVE = frozenset({MailoutStatus.RUNNING, MailoutStatus.PAUSED})


def _utc(value: str) -> str:
    value = value.strip()
    if _MINUTES_ONLY.match(value):
        return value + ":00Z"
    if _SECONDS.match(value):
        return value + "Z"
    return value


def _codes(value: str) -> list[str]:
    return [code for code in _CODE_SEPARATORS.split(value.strip()) if code]


def _tags(value: str) -> list[str]:
    return [tag.strip() for tag in value.split(",") if tag.strip()]


def audience_body(form: Mapping[str, str]) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The `filter` and `send_window` of the API from the form's fields (None: everyone / any time)."""
    codes = _codes(form.get("operator_codes", ""))
    tags = _tags(form.get("tags", ""))
    start = form.get("window_start", "").strip()
    end = form.get("window_end", "").strip()
    audience = {"operator_codes": codes, "tags": tags} if codes or tags else None
    window = {"start": start, "end": end} if start or end else None
    return audience, window


def api_body(form: Mapping[str, str]) -> dict[str, Any]:
    """The API's body from the fields the form sent; fields the browser did not send (disabled) are absent."""
    body: dict[str, Any] = {}
    for name in ("start_at", "end_at"):
        if name in form:
            body[name] = _utc(form[name])
    if "text" in form:
        # Browsers send CRLF line ends from a textarea; the text is stored as typed, with LF.
        body["text"] = form["text"].replace("\r\n", "\n")
    audience, window = audience_body(form)
    if "operator_codes" in form or "tags" in form:
        body["filter"] = audience
    if "window_start" in form or "window_end" in form:
        body["send_window"] = window
    return body


def values_of(mailout: Mailout) -> dict[str, str]:
    spec = mailout.spec
    return {
        "start_at": local_input(spec.start_at),
        "end_at": local_input(spec.end_at),
        "text": spec.text,
        "operator_codes": ", ".join(spec.filter.operator_codes),
        "tags": ", ".join(spec.filter.tags),
        "window_start": format_window_time(spec.window.start) if spec.window else "",
        "window_end": format_window_time(spec.window.end) if spec.window else "",
    }


def locked_fields(status: MailoutStatus | None) -> frozenset[str]:
    """The form fields a mailout in `status` may not change (shown disabled), by the domain's rule."""
    if status is None or status is MailoutStatus.SCHEDULED:
        return frozenset()
    if status in MAILOUT_FINAL:
        return frozenset(FIELDS)
    assert status in _ACTIVE
    locked: set[str] = set()
    if START_AT not in EDITABLE_WHILE_ACTIVE:
        locked.add("start_at")
    if FILTER not in EDITABLE_WHILE_ACTIVE:
        locked |= {"operator_codes", "tags"}
    return frozenset(locked)
