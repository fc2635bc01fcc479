"""`POST /api/customers/import`: create or update many customers from an NDJSON or CSV stream.

The view checks the request (type, charset, declared size) and answers; the parsing and batched writing
are `mailer.operations.imports`, which the admin UI's upload runs too.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp_pydantic.oas.typing import r200, r413, r415, r422

from mailer.api.views import ApiView, check_charset
from mailer.observability.truncate import clip
from mailer.operations import imports as operations
from mailer.operations.imports import BATCH_ROWS, CSV_COLUMNS, MAX_LINE_BYTES, MAX_LISTED_ERRORS, BodyFormat
from mailer.schemas.common import FieldProblem, Problem
from mailer.schemas.customers import ImportResult, LineErrors

# Named here too: the tests and the docs speak of the import's limits as the API's.
__all__ = ["BATCH_ROWS", "CSV_COLUMNS", "MAX_LINE_BYTES", "MAX_LISTED_ERRORS", "add_routes"]

IMPORT_PATH = "/api/customers/import"
NDJSON_TYPES = frozenset(
    {"application/x-ndjson", "application/ndjson", "application/jsonl", "application/json-lines"}
)
CSV_TYPES = frozenset({"text/csv"})


def _body_format(request: web.Request) -> BodyFormat:
    content_type = request.content_type.lower()
    check_charset(request)
    if content_type in NDJSON_TYPES:
        return "ndjson"
    if content_type in CSV_TYPES:
        return "csv"
    accepted = ", ".join(sorted(NDJSON_TYPES | CSV_TYPES))
    raise web.HTTPUnsupportedMediaType(
        text=f"Content-Type {clip(content_type, 64)} is not accepted; use one of {accepted}"
    )


class CustomerImportView(ApiView):
    """`/api/customers/import`: bulk create or update by phone."""

    json_body = False  # NDJSON or CSV, checked by _body_format

    async def post(self) -> r200[ImportResult] | r413[Problem] | r415[Problem] | r422[Problem]:
        """Create or update many customers from NDJSON or CSV.

        NDJSON (`application/x-ndjson`, `application/jsonl` or `application/json-lines`): one JSON object
        per line, with the fields of create. CSV (`text/csv`): a header naming some of the columns
        `phone,operator_code,tag,timezone` in any order (only `phone` is required), then one customer per
        row; an empty cell means the default (null for `tag`). The body must be UTF-8.

        A customer is found by phone: a new phone creates one, a known phone updates its operator code,
        tag and time zone; within the body the last line for a phone wins. Each line is checked by the rules
        of create; refused lines are counted and the first 1,000 are listed with their line numbers, while
        the good ones are written in batches of 2,000, each committed on its own. A body over the size limit
        is refused with 413 before anything is written when it declares its Content-Length; a chunked body
        that passes the limit is cut there, and the batches already written stay.

        Tags: customers
        Status Codes:
            200: counts of created, updated and failed lines, and the errors
            413: the body is larger than MAILER_IMPORT_MAX_BYTES
            415: the Content-Type is neither NDJSON nor CSV, or the charset is not UTF-8
            422: the CSV header is not valid (nothing was written)
        """
        request = self.request
        body_format = _body_format(request)
        max_bytes = self.settings.import_max_bytes
        if request.content_length is not None and request.content_length > max_bytes:
            raise web.HTTPRequestEntityTooLarge(max_size=max_bytes, actual_size=request.content_length)

        try:
            outcome = await operations.run_import(self.db, request.content.iter_any(), body_format, max_bytes)
        except operations.ImportTooLargeError as exc:
            raise web.HTTPRequestEntityTooLarge(max_size=max_bytes, actual_size=exc.received) from None
        return web.Response(text=import_result(outcome).model_dump_json(), content_type="application/json")


def import_result(outcome: operations.ImportOutcome) -> ImportResult:
    return ImportResult(
        created=outcome.created,
        updated=outcome.updated,
        failed=outcome.failed,
        lines=outcome.lines,
        errors=[
            LineErrors(line=p.line, errors=[FieldProblem(loc=list(e.loc), msg=e.msg) for e in p.errors])
            for p in outcome.errors
        ],
        errors_truncated=outcome.errors_truncated,
    )


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_view(IMPORT_PATH, CustomerImportView)
