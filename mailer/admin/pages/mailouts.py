"""Mailout pages: the list, create and edit forms, one mailout (live counts, sends over time, errors,
messages), the confirmations of pause, resume, cancel and delete, and the CSV export."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import aiohttp_jinja2
import structlog
from aiohttp import web

from mailer.admin.pages import common, csv_export
from mailer.admin.pages.charts import MAX_MINUTES, minute_series
from mailer.admin.pages.format import local_input
from mailer.admin.pages.mailout_form import (
    ERROR_ALIASES,
    api_body,
    audience_body,
    locked_fields,
    values_of,
)
from mailer.admin.pages.progress import progress
from mailer.domain.clock import utc_now
from mailer.domain.customers import PHONE_DIGITS
from mailer.domain.errors import ConflictError, InvalidError
from mailer.domain.mailouts import Mailout
from mailer.domain.statuses import MailoutStatus, MessageStatus
from mailer.operations import audience as audience_operations
from mailer.operations import mailouts as operations
from mailer.operations import validation
from mailer.operations.search import MAX_QUERY_CHARS
from mailer.store import mailout_overview as overview
from mailer.store import stats as stats_store

log = structlog.get_logger(__name__)

ACTIONS = ("pause", "resume", "cancel", "delete")
ACTION_WORDS = {
    "pause": ("Pause", "No new sends will start; requests already in flight finish. Resume goes on later."),
    "resume": ("Resume", "Sending goes on where it stopped (or waits for the start if it never began)."),
    "cancel": ("Cancel", "Pending messages become cancelled and requests in flight are cut. This is final."),
    "delete": ("Delete", "The mailout, its messages and their attempts are removed for good."),
}
# Rows per statement of the CSV export: memory stays flat whatever the audience size.
EXPORT_BATCH_ROWS = 1000
LIVE_STATUSES = frozenset({MailoutStatus.SCHEDULED, MailoutStatus.RUNNING})
DEFAULT_RUN = timedelta(days=1)


def _mailout_id(request: web.Request) -> int:
    mailout_id = common.positive_int(request.match_info["id"])
    if mailout_id is None:
        raise web.HTTPNotFound(text="no such mailout")
    return mailout_id


# --- list --------------------------------------------------------------------------------------------------


async def list_page(request: web.Request) -> web.Response:
    raw_status = request.query.get("status", "")
    status = MailoutStatus(raw_status) if raw_status in MailoutStatus else None
    # NUL is dropped: no stored text holds one, and PostgreSQL refuses it in a query outright (a 500).
    text = request.query.get("text", "").replace("\x00", "").strip()[:MAX_QUERY_CHARS]
    after = common.positive_int(request.query.get("after")) or 0
    page = await overview.search_page(common.read_db(request), status, text, common.PAGE_SIZE, after)
    async with common.read_db(request).connect() as conn:
        counts = await stats_store.counts_by_status(conn, [m.id for m in page.items])
    rows = [(m, counts[m.id], sum(counts[m.id].values())) for m in page.items]
    context = {
        "rows": rows,
        "next_after": page.next_after,
        "status": status,
        "text": text,
        "statuses": list(MailoutStatus),
        "notice": common.notice(request),
    }
    return aiohttp_jinja2.render_template("mailouts.html", request, context)


# --- create and edit ---------------------------------------------------------------------------------------


def _form_page(
    request: web.Request,
    *,
    mailout: Mailout | None,
    values: dict[str, str],
    errors: dict[str, str],
    status: int = 200,
) -> web.Response:
    context = {
        "mailout": mailout,
        "values": values,
        "errors": errors,
        "locked": locked_fields(mailout.status if mailout is not None else None),
    }
    return aiohttp_jinja2.render_template("mailout_form.html", request, context, status=status)


def _default_values() -> dict[str, str]:
    # A new mailout starts now (the current minute) and runs for a day, unless told otherwise.
    now = utc_now().replace(second=0, microsecond=0)
    return {
        "start_at": local_input(now),
        "end_at": local_input(now + DEFAULT_RUN),
        "text": "",
        "operator_codes": "",
        "tags": "",
        "window_start": "",
        "window_end": "",
    }


async def _form_values(request: web.Request) -> dict[str, str]:
    form = await request.post()
    return {k: v for k, v in form.items() if isinstance(v, str) and k != "csrf_token"}


async def new_form(request: web.Request) -> web.Response:
    return _form_page(request, mailout=None, values=_default_values(), errors={})


async def create(request: web.Request) -> web.Response:
    common.acting(request)
    values = await _form_values(request)
    try:
        spec = validation.mailout_spec(api_body(values))
        mailout = await operations.create(common.db(request), common.engine(request), spec)
    except InvalidError as exc:
        return _form_page(
            request, mailout=None, values=values, errors=common.form_errors(exc, ERROR_ALIASES), status=422
        )
    raise common.redirect(request, "mailout", "created", id=mailout.id)


async def edit_form(request: web.Request) -> web.Response:
    mailout = await operations.get(common.read_db(request), _mailout_id(request))
    return _form_page(request, mailout=mailout, values=values_of(mailout), errors={})


async def edit(request: web.Request) -> web.Response:
    common.acting(request)
    mailout_id = _mailout_id(request)
    values = await _form_values(request)
    current = await operations.get(common.read_db(request), mailout_id)
    # Only what the form may change is sent on: a disabled field is not in the form, and a tampered form
    # that sends one anyway meets the same 409 as the API.
    try:
        edit_spec = validation.mailout_edit(api_body(values))
        await operations.change(common.db(request), common.engine(request), mailout_id, edit_spec)
    except InvalidError as exc:
        errors = common.form_errors(exc, ERROR_ALIASES)
        return _form_page(
            request, mailout=current, values=values_of(current) | values, errors=errors, status=422
        )
    except ConflictError as exc:
        current = await operations.get(common.read_db(request), mailout_id)
        return _form_page(
            request,
            mailout=current,
            values=values_of(current) | values,
            errors={"form": str(exc)},
            status=409,
        )
    raise common.redirect(request, "mailout", "saved", id=mailout_id)


async def audience_count(request: web.Request) -> web.Response:
    """The form's live "would reach N customers, M inside the window now" (an HTML fragment)."""
    values = await _form_values(request)
    audience_data, window_data = audience_body(values)
    try:
        audience, window = validation.audience(audience_data, window_data)
    except InvalidError as exc:
        context: dict[str, Any] = {"result": None, "problem": exc.errors[0].msg if exc.errors else str(exc)}
    else:
        result = await audience_operations.count(common.read_db(request), audience, window)
        context = {"result": result, "problem": None, "window": window}
    return aiohttp_jinja2.render_template("_audience.html", request, context)


# --- one mailout -------------------------------------------------------------------------------------------


async def _live_context(request: web.Request, mailout_id: int) -> dict[str, Any]:
    read_db = common.read_db(request)
    data = await stats_store.for_mailout(read_db, mailout_id)
    mailout = data.counts.mailout
    now = utc_now()
    due = await overview.with_due_work(read_db, [mailout_id], now)
    state = progress(
        mailout, data.counts.by_status, data.first_sent_at, data.last_sent_at, mailout_id in due, now
    )
    return {
        "mailout": mailout,
        "stats": data,
        "state": state,
        "live": mailout.status in LIVE_STATUSES,
        "now": now,
        "statuses": list(MessageStatus),
    }


async def detail(request: web.Request) -> web.Response:
    mailout_id = _mailout_id(request)
    context = await _live_context(request, mailout_id)
    read_db = common.read_db(request)
    last = context["stats"].last_sent_at
    series = minute_series({}, {})
    if last is not None:
        since = last.replace(second=0, microsecond=0) - timedelta(minutes=MAX_MINUTES - 1)
        sent, failed = await overview.sends_per_minute(read_db, mailout_id, since)
        series = minute_series(sent, failed)
    raw_status = request.query.get("message_status", "")
    message_status = MessageStatus(raw_status) if raw_status in MessageStatus else None
    phone = request.query.get("phone", "").strip()
    phone_filter = phone if phone.isascii() and phone.isdigit() and len(phone) == PHONE_DIGITS else None
    after = common.positive_int(request.query.get("after")) or 0
    page = await overview.message_page(
        read_db, mailout_id, status=message_status, phone=phone_filter, limit=common.PAGE_SIZE, after=after
    )
    context |= {
        "series": series,
        "messages": page.items,
        "next_after": page.next_after,
        "message_status": message_status,
        "phone": phone,
        "phone_invalid": bool(phone) and phone_filter is None,
        "notice": common.notice(request),
    }
    return aiohttp_jinja2.render_template("mailout.html", request, context)


async def live(request: web.Request) -> web.Response:
    """The part of the mailout page that refreshes itself while the mailout runs."""
    context = await _live_context(request, _mailout_id(request))
    return aiohttp_jinja2.render_template("_mailout_live.html", request, context)


# --- actions -----------------------------------------------------------------------------------------------


def _action(request: web.Request) -> str:
    action = request.match_info["action"]
    if action not in ACTIONS:
        raise web.HTTPNotFound(text="no such action")
    return action


async def confirm(request: web.Request) -> web.Response:
    mailout = await operations.get(common.read_db(request), _mailout_id(request))
    return _confirm_page(request, mailout, _action(request))


def _confirm_page(
    request: web.Request, mailout: Mailout, action: str, error: str | None = None, status: int = 200
) -> web.Response:
    """The confirmation of `action`, with the refusal of a first try when there was one."""
    title, consequence = ACTION_WORDS[action]
    context = {
        "mailout": mailout,
        "action": action,
        "title": title,
        "consequence": consequence,
        "error": error,
    }
    return aiohttp_jinja2.render_template("confirm.html", request, context, status=status)


async def act(request: web.Request) -> web.Response:
    common.acting(request)
    mailout_id = _mailout_id(request)
    action = _action(request)
    db, engine = common.db(request), common.engine(request)
    try:
        if action == "pause":
            await operations.pause(db, engine, mailout_id)
        elif action == "resume":
            await operations.resume(db, engine, mailout_id)
        elif action == "cancel":
            await operations.cancel(db, engine, mailout_id)
        else:
            await operations.delete(db, engine, mailout_id)
            raise common.redirect(request, "mailouts", "deleted")
    except ConflictError as exc:
        mailout = await operations.get(common.read_db(request), mailout_id)
        return _confirm_page(request, mailout, action, str(exc), status=409)
    done = {"pause": "paused", "resume": "resumed", "cancel": "cancelled"}[action]
    raise common.redirect(request, "mailout", done, id=mailout_id)


# --- export ------------------------------------------------------------------------------------------------


async def export(request: web.Request) -> web.StreamResponse:
    """The mailout's messages (optionally of one status) as CSV, streamed in keyset batches."""
    mailout_id = _mailout_id(request)
    raw_status = request.query.get("status", "")
    status = MessageStatus(raw_status) if raw_status in MessageStatus else None
    read_db = common.read_db(request)
    await operations.get(read_db, mailout_id)
    name = f"mailout-{mailout_id}-{status.value if status else 'all'}.csv"
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/csv; charset=utf-8",
            "Content-Disposition": f'attachment; filename="{name}"',
            "Cache-Control": "no-store",
        }
    )
    await response.prepare(request)
    await response.write(csv_export.lines(overview.EXPORT_COLUMNS, []).encode())
    after = 0
    while True:
        async with read_db.connect() as conn:
            batch = await overview.export_batch(conn, mailout_id, status, after, EXPORT_BATCH_ROWS)
        if not batch:
            break
        rows = [[row[c] for c in overview.EXPORT_COLUMNS] for row in batch]
        await response.write(csv_export.lines((), rows).encode())
        after = int(batch[-1]["id"])
    await response.write_eof()
    return response
