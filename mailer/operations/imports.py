"""Bulk import of customers from an NDJSON or CSV stream: parse line by line, write in batches.

The body is read as a stream, one line at a time, so its size costs no memory; good lines are written in
batches, each in its own transaction, so a long import never keeps SQLite's one writer for long. The API
(`POST /api/customers/import`) and the admin UI's upload both run this.
"""

from __future__ import annotations

import asyncio
import csv
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterable
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Literal

import orjson
import structlog
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncEngine

from mailer.domain.customers import CustomerFields
from mailer.domain.errors import DomainError, FieldError, InvalidError
from mailer.observability.logging import info_per_id
from mailer.operations.pacing import paced
from mailer.schemas.customers import CustomerIn, customer_fields

# The line format is the API's create body, so an import line and a create obey one rule.
from mailer.schemas.errors import field_errors
from mailer.store import customers as store

log = structlog.get_logger(__name__)

type BodyFormat = Literal["ndjson", "csv"]


class ImportTooLargeError(DomainError):
    """More than the allowed bytes arrived; the faces answer 413."""

    def __init__(self, max_bytes: int, received: int) -> None:
        super().__init__(f"the import is larger than {max_bytes} bytes")
        self.max_bytes = max_bytes
        self.received = received


CSV_COLUMNS = ("phone", "operator_code", "tag", "timezone")
# Rows per upsert statement and transaction: large enough that the per-statement cost vanishes, small
# enough that one transaction holds SQLite's writer lock for a few tens of milliseconds.
BATCH_ROWS = 2_000
# Errors listed in the answer; more are counted in `failed` but not described.
MAX_LISTED_ERRORS = 1_000
# A customer line is under 200 bytes; anything past this is refused as a line, not buffered.
MAX_LINE_BYTES = 64 * 1024
_BOM = "\ufeff"


class _LineError(Exception):
    """One line is refused; carries what is wrong with it."""

    def __init__(self, errors: list[FieldError]) -> None:
        super().__init__("line refused")
        self.errors = errors


def _line_error(msg: str) -> _LineError:
    return _LineError([FieldError(loc=(), msg=msg)])


def _validate(record: dict[str, str]) -> CustomerFields:
    if (fields := customer_fields(record)) is not None:
        return fields
    try:
        return CustomerIn.model_validate(record).to_fields()
    except ValidationError as exc:
        raise _LineError(field_errors(exc)) from None


def good_ndjson_line(raw: bytes | None) -> CustomerFields | None:
    """A line's fields when it is a good customer, else None (then `parse_ndjson_line` says what is wrong).

    Most lines of an import are good: orjson reads the bytes (checking UTF-8 on the way) and plain checks
    validate them, without decoding, stripping or building a model, for about half the full path's cost.
    Anything unusual (a byte order mark, a blank line, bad JSON or a bad field) takes the full path.
    """
    if raw is None:
        return None
    try:
        record = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return customer_fields(record)


def parse_ndjson_line(text: str) -> CustomerFields:
    """One NDJSON line: a JSON object with the fields of create."""
    try:
        # pydantic parses and validates in one pass, several times faster than json.loads and then validate.
        return CustomerIn.model_validate_json(text).to_fields()
    except ValidationError as exc:
        raise _LineError(_line_errors(exc)) from None


def _line_errors(exc: ValidationError) -> list[FieldError]:
    whole = {e["type"]: e["msg"] for e in exc.errors(include_url=False, include_input=False) if not e["loc"]}
    if "json_invalid" in whole:
        reason = whole["json_invalid"].removeprefix("Invalid JSON: ")
        return [FieldError(loc=(), msg=f"not valid JSON: {reason}")]
    if "model_type" in whole:
        return [FieldError(loc=(), msg="must be a JSON object")]
    return field_errors(exc)


def _csv_cells(text: str) -> list[str]:
    try:
        # strict: a stray quote is an error to report, not something to guess around.
        return next(csv.reader([text], strict=True), [])
    except csv.Error as exc:
        raise _line_error(f"not valid CSV: {exc}") from None


def _header_refused(errors: list[FieldError]) -> InvalidError:
    return InvalidError([FieldError(("body", "header"), e.msg) for e in errors])


def csv_header(text: str) -> tuple[str, ...]:
    """The column names of a CSV header line; a bad header refuses the whole import (nothing is written)."""
    try:
        names = tuple(name.strip() for name in _csv_cells(text))
    except _LineError as exc:
        raise _header_refused(exc.errors) from None
    problems = []
    unknown = [n for n in names if n not in CSV_COLUMNS]
    if unknown:
        problems.append(f"unknown columns {unknown}; the columns are {', '.join(CSV_COLUMNS)}")
    if len(set(names)) != len(names):
        problems.append("a column is named twice")
    if "phone" not in names:
        problems.append("the phone column is required")
    if problems:
        raise InvalidError(
            [FieldError(("body", "header"), msg) for msg in problems], "the CSV header is not valid"
        )
    return names


def parse_csv_line(header: tuple[str, ...], text: str) -> CustomerFields:
    """One CSV row under `header`; an empty cell means the field's default (null for tag)."""
    cells = _csv_cells(text)
    if len(cells) != len(header):
        raise _line_error(f"expected {len(header)} cells, found {len(cells)}")
    return _validate({name: cell for name, cell in zip(header, cells, strict=True) if cell != ""})


async def body_lines(
    chunks: AsyncIterable[bytes], max_bytes: int
) -> AsyncGenerator[tuple[int, list[bytes | None]]]:
    """The lines without their ends, a run at a time: (the number of the run's first line, from 1, and its
    lines) for each chunk that ends a line; None stands for a line too long.

    A run per chunk rather than a line at a time: the chunk is cut by one `split`, and the consumer loops
    over a list, where stepping an async generator per line cost more than parsing a good line.
    Raises ImportTooLargeError as soon as more than `max_bytes` have arrived.
    """
    received = 0
    number = 1  # of the next line
    buffer = bytearray()  # the start of a line that a later chunk ends
    overlong = False  # inside a line that has passed MAX_LINE_BYTES: drop bytes until its end
    async for chunk in chunks:
        received += len(chunk)
        if received > max_bytes:
            raise ImportTooLargeError(max_bytes, received)
        *ended, rest = chunk.split(b"\n")
        if ended:
            run: list[bytes | None] = [None if len(line) > MAX_LINE_BYTES else line for line in ended]
            # The first line began in the buffer.
            if overlong or len(buffer) + len(ended[0]) > MAX_LINE_BYTES:
                run[0] = None
            elif buffer:
                run[0] = bytes(buffer + ended[0])
            yield number, run
            number += len(run)
            buffer.clear()
            overlong = False
        if not overlong:
            buffer += rest
            if len(buffer) > MAX_LINE_BYTES:
                overlong = True
                buffer.clear()
    if buffer or overlong:
        yield number, [None if overlong else bytes(buffer)]


def _decode(raw: bytes | None, number: int) -> str:
    if raw is None:
        raise _line_error(f"longer than {MAX_LINE_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _line_error("not valid UTF-8") from None
    if number == 1:
        text = text.removeprefix(_BOM)
    return text.removesuffix("\r")


@dataclass(frozen=True, slots=True)
class LineProblem:
    """A refused line: its number (from 1) and what is wrong with it."""

    line: int
    errors: list[FieldError]


@dataclass(frozen=True, slots=True)
class ImportOutcome:
    """What an import did; `errors` lists the first MAX_LISTED_ERRORS refused lines."""

    created: int
    updated: int
    failed: int
    lines: int
    errors: list[LineProblem]

    @property
    def errors_truncated(self) -> bool:
        return self.failed > len(self.errors)


@dataclass
class _Tally:
    """The running counts of an import and the errors worth listing."""

    created: int = 0
    updated: int = 0
    failed: int = 0
    lines: int = 0
    errors: list[LineProblem] = field(default_factory=list)

    def refuse(self, number: int, errors: list[FieldError]) -> None:
        self.failed += 1
        if len(self.errors) < MAX_LISTED_ERRORS:
            self.errors.append(LineProblem(line=number, errors=errors))

    def result(self) -> ImportOutcome:
        return ImportOutcome(self.created, self.updated, self.failed, self.lines, list(self.errors))


async def run_import(
    db: AsyncEngine, chunks: AsyncIterable[bytes], body_format: BodyFormat, max_bytes: int
) -> ImportOutcome:
    """Create or update customers by phone from an NDJSON or CSV byte stream, in batches.

    InvalidError (nothing written) for a CSV header that is not valid; ImportTooLargeError once more than
    `max_bytes` have arrived (the batches written until then stay).
    """
    tally = _Tally()
    header: tuple[str, ...] | None = None
    # Paced here, so that every face's import (the API's stream, the admin UI's upload) leaves the loop free.
    async with (
        _BatchWriter(db, tally) as writer,
        aclosing(paced(chunks)) as sliced,
        aclosing(body_lines(sliced, max_bytes)) as lines,
    ):
        async for first, run in lines:
            for number, raw in enumerate(run, first):
                # The usual line, a good customer, skips the full path below (which says what is wrong).
                if body_format == "ndjson" and (fields := good_ndjson_line(raw)) is not None:
                    tally.lines += 1
                    await writer.add(fields)
                    continue
                try:
                    text = _decode(raw, number)
                    if not text.strip():
                        continue
                    if body_format == "csv" and header is None:
                        header = csv_header(text)
                        continue
                    fields = parse_ndjson_line(text) if header is None else parse_csv_line(header, text)
                except _LineError as exc:
                    if body_format == "csv" and header is None:
                        # An unreadable first line cannot be a header: refuse the import, as for a bad one.
                        raise _header_refused(exc.errors) from None
                    tally.refuse(number, exc.errors)
                else:
                    await writer.add(fields)
                # Blank lines and the header skipped the count above; every other line is a data line.
                tally.lines += 1
    outcome = tally.result()
    log.info(
        "customers.imported",
        created=outcome.created,
        updated=outcome.updated,
        failed=outcome.failed,
        lines=outcome.lines,
    )
    return outcome


class _BatchWriter:
    """Writes full batches while the next ones are parsed, as many at once as the store finds worth it
    (`upserts_at_once`), each awaited.

    Parsing is CPU and writing is mostly waiting on the database, so overlapping them nearly hides the
    cheaper of the two; with two writes in flight PostgreSQL works on one batch while the other commits.
    A batch that shares a phone with a write in flight waits for it, so the last line for a phone still
    wins. On a clean exit the rest is written; when the import fails, the writes in flight are allowed to
    finish (a batch is all or nothing either way) and the failure goes on.
    """

    def __init__(self, db: AsyncEngine, tally: _Tally) -> None:
        self._db = db
        self._tally = tally
        self._batch: list[CustomerFields] = []
        self._at_once = store.upserts_at_once(db)
        # Oldest first, each with the phones it writes.
        self._in_flight: deque[tuple[asyncio.Task[None], frozenset[str]]] = deque()

    async def __aenter__(self) -> _BatchWriter:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        if exc_type is not None:
            await self._settle()
            return
        try:
            await self._flush()
            while self._in_flight:
                await self._wait_oldest()
        except BaseException:
            # A batch failed: the others in flight finish before the failure goes on.
            await self._settle()
            raise

    async def add(self, fields: CustomerFields) -> None:
        self._batch.append(fields)
        if len(self._batch) >= BATCH_ROWS:
            await self._flush()

    async def _flush(self) -> None:
        if not self._batch:
            return
        batch, self._batch = self._batch, []
        phones = frozenset(fields.phone for fields in batch)
        while len(self._in_flight) >= self._at_once or any(
            not phones.isdisjoint(written) for _, written in self._in_flight
        ):
            await self._wait_oldest()
        self._in_flight.append((asyncio.create_task(self._write(batch)), phones))

    async def _wait_oldest(self) -> None:
        task, _ = self._in_flight.popleft()
        await task

    async def _settle(self) -> None:
        tasks = [task for task, _ in self._in_flight]
        self._in_flight.clear()
        if not tasks:
            return
        try:
            await asyncio.wait(tasks)
        except asyncio.CancelledError:
            for task in tasks:
                task.cancel()
            raise
        for task in tasks:
            if not task.cancelled() and (error := task.exception()) is not None:
                # The import is failing for another reason, which is the one the client hears about.
                log.error("import batch failed while the import was failing", exc_info=error)

    async def _write(self, batch: list[CustomerFields]) -> None:
        outcome = await store.upsert_batch(self._db, batch)
        self._tally.created += outcome.created
        self._tally.updated += outcome.updated
        # One short line per customer, so that a search by customer_id finds its import too; built and
        # written a batch at a time (one line through the processors cost more than its customer's upsert).
        info_per_id(log, "customer.imported", "customer_id", outcome.created_ids, action="created")
        info_per_id(log, "customer.imported", "customer_id", outcome.updated_ids, action="updated")
