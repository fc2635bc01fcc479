"""Customer pages: the filtered list, create, edit, delete (behind a confirmation), and the bulk import."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp_jinja2
from aiohttp import BodyPartReader, web

from mailer import keys
from mailer.admin.pages import common
from mailer.domain.customers import DEFAULT_TIMEZONE, TAG_MAX_CHARS, is_phone_prefix
from mailer.domain.errors import ConflictError, InvalidError
from mailer.operations import customers as operations
from mailer.operations import imports as import_operations
from mailer.operations import validation
from mailer.store import customers as store

FIELDS = ("phone", "operator_code", "tag", "timezone")
# The header a script sends its CSRF token in (then the body is not read before the handler streams it).
CSRF_HEADER = "X-CSRF-Token"
# Multipart parts are read in chunks of this size: the file is never held whole in memory.
UPLOAD_CHUNK_BYTES = 64 * 1024
IMPORT_FORMATS: dict[str, import_operations.BodyFormat] = {
    ".csv": "csv",
    ".ndjson": "ndjson",
    ".jsonl": "ndjson",
    ".json": "ndjson",
}


def _customer_id(request: web.Request) -> int:
    customer_id = common.positive_int(request.match_info["id"])
    if customer_id is None:
        raise web.HTTPNotFound(text="no such customer")
    return customer_id


async def list_page(request: web.Request) -> web.Response:
    query = request.query
    tag = query.get("tag", "").strip() or None
    code = query.get("operator_code", "").strip()
    prefix = query.get("phone", "").strip()
    problems: dict[str, str] = {}
    operator_code = None
    if code:
        if len(code) == 3 and code.isascii() and code.isdigit():
            operator_code = code
        else:
            problems["operator_code"] = "three digits, like 912"
    phone_prefix = None
    if prefix:
        if is_phone_prefix(prefix):
            phone_prefix = prefix
        else:
            problems["phone"] = "digits from the start of a phone: 7, then up to ten more"
    if tag is not None and len(tag) > TAG_MAX_CHARS:
        problems["tag"] = f"at most {TAG_MAX_CHARS} characters"
        tag = None
    elif tag is not None and "\x00" in tag:
        # No stored tag holds one, and PostgreSQL refuses NUL in text outright (that was a 500).
        problems["tag"] = "must not contain NUL characters"
        tag = None
    after = common.positive_int(query.get("after"))
    rows, next_after = await store.list_page(
        common.read_db(request),
        limit=common.PAGE_SIZE,
        after=after,
        tag=tag,
        operator_code=operator_code,
        phone_prefix=phone_prefix,
    )
    context = {
        "rows": rows,
        "next_after": next_after,
        "filters": {"tag": query.get("tag", ""), "operator_code": code, "phone": prefix},
        "errors": problems,
        "notice": common.notice(request),
    }
    return aiohttp_jinja2.render_template("customers.html", request, context, status=422 if problems else 200)


def _form_page(
    request: web.Request, customer: Any, values: dict[str, str], errors: dict[str, str], status: int = 200
) -> web.Response:
    context = {"customer": customer, "values": values, "errors": errors}
    return aiohttp_jinja2.render_template("customer_form.html", request, context, status=status)


async def _values(request: web.Request) -> dict[str, str]:
    form = await request.post()
    return {name: value.strip() for name in FIELDS if isinstance(value := form.get(name), str)}


def _body(values: dict[str, str]) -> dict[str, Any]:
    """The API's body: an empty field means its default (the phone's code, no tag, UTC)."""
    return {name: value for name, value in values.items() if value != ""}


def _conflict_errors(exc: ConflictError) -> dict[str, str]:
    # The only conflict a customer can meet is a phone that another customer has.
    return {"phone": str(exc)}


async def new_form(request: web.Request) -> web.Response:
    values = {"phone": "", "operator_code": "", "tag": "", "timezone": DEFAULT_TIMEZONE}
    return _form_page(request, None, values, {})


async def create(request: web.Request) -> web.Response:
    common.acting(request)
    values = await _values(request)
    try:
        row = await operations.create(common.db(request), validation.customer_fields(_body(values)))
    except InvalidError as exc:
        return _form_page(request, None, values, common.form_errors(exc), status=422)
    except ConflictError as exc:
        return _form_page(request, None, values, _conflict_errors(exc), status=409)
    raise common.redirect(request, "customer-edit", "created", id=row["id"])


def _values_of(row: Any) -> dict[str, str]:
    return {name: "" if row[name] is None else str(row[name]) for name in FIELDS}


async def edit_form(request: web.Request) -> web.Response:
    row = await store.get(common.read_db(request), _customer_id(request))
    return _form_page(request, row, _values_of(row), {})


async def edit(request: web.Request) -> web.Response:
    common.acting(request)
    customer_id = _customer_id(request)
    current = await store.get(common.read_db(request), customer_id)
    values = await _values(request)
    # A whole customer, as PUT: an emptied field goes back to its default (an emptied tag is no tag).
    try:
        fields = validation.customer_fields(_body(values))
        await operations.replace(common.db(request), customer_id, fields)
    except InvalidError as exc:
        return _form_page(request, current, values, common.form_errors(exc), status=422)
    except ConflictError as exc:
        return _form_page(request, current, values, _conflict_errors(exc), status=409)
    raise common.redirect(request, "customers", "saved")


async def confirm_delete(request: web.Request) -> web.Response:
    row = await store.get(common.read_db(request), _customer_id(request))
    return aiohttp_jinja2.render_template("customer_delete.html", request, {"customer": row})


async def delete(request: web.Request) -> web.Response:
    common.acting(request)
    await operations.delete(common.db(request), _customer_id(request))
    raise common.redirect(request, "customers", "deleted")


# --- import ------------------------------------------------------------------------------------------------


async def import_form(request: web.Request) -> web.Response:
    return aiohttp_jinja2.render_template("customers_import.html", request, {"outcome": None, "error": None})


def _format_of(filename: str, content_type: str | None) -> import_operations.BodyFormat | None:
    if content_type in ("text/csv", "application/vnd.ms-excel"):
        return "csv"
    if content_type in ("application/x-ndjson", "application/ndjson", "application/jsonl"):
        return "ndjson"
    suffix = filename[filename.rfind(".") :].lower() if "." in filename else ""
    return IMPORT_FORMATS.get(suffix)


async def _part_chunks(part: BodyPartReader) -> AsyncIterator[bytes]:
    while chunk := await part.read_chunk(UPLOAD_CHUNK_BYTES):
        yield chunk


async def _file_chunks(upload: web.FileField) -> AsyncIterator[bytes]:
    while chunk := upload.file.read(UPLOAD_CHUNK_BYTES):
        yield chunk


async def _upload(request: web.Request) -> tuple[str, str | None, AsyncIterator[bytes]] | None:
    """(file name, declared type, its bytes) of the form's `file`, or None when there is none."""
    if CSRF_HEADER not in request.headers:
        # A plain form post (no script): the sign-in check has read the form for its token already.
        upload = (await request.post()).get("file")
        if not isinstance(upload, web.FileField) or not upload.filename:
            return None
        return upload.filename, upload.content_type, _file_chunks(upload)
    # From the page's script: streamed part by part, the file never held whole.
    reader = await request.multipart()
    while (part := await reader.next()) is not None:
        if isinstance(part, BodyPartReader) and part.name == "file" and part.filename:
            return part.filename, part.headers.get("Content-Type"), _part_chunks(part)
    return None


async def import_file(request: web.Request) -> web.Response:
    """The upload: a multipart form with the file in `file` (CSV or NDJSON), run through the import."""
    common.acting(request)
    template = "_import_result.html" if "X-Requested-With" in request.headers else "customers_import.html"

    def answer(
        outcome: import_operations.ImportOutcome | None, error: str | None, status: int
    ) -> web.Response:
        context = {"outcome": outcome, "error": error}
        return aiohttp_jinja2.render_template(template, request, context, status=status)

    if not request.content_type.startswith("multipart/"):
        return answer(None, "send the file as a form upload (multipart/form-data)", 415)
    upload = await _upload(request)
    if upload is None:
        return answer(None, "choose a file to import", 422)
    filename, content_type, chunks = upload
    body_format = _format_of(filename, content_type)
    if body_format is None:
        return answer(None, "choose a .csv or .ndjson file", 415)
    max_bytes = request.config_dict[keys.SETTINGS].import_max_bytes
    try:
        outcome = await import_operations.run_import(common.db(request), chunks, body_format, max_bytes)
    except import_operations.ImportTooLargeError as exc:
        return answer(None, f"the file is larger than {exc.max_bytes:,} bytes", 413)
    except InvalidError as exc:
        return answer(None, "; ".join(e.msg for e in exc.errors) or str(exc), 422)
    return answer(outcome, None, 200)
