"""The import's fast paths agree with the full ones: line validation without a model, lines a run at a time,
and the batch upsert's JSON rows on both databases."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from mailer.domain.customers import CustomerFields
from mailer.operations.imports import (
    MAX_LINE_BYTES,
    _decode,
    _LineError,
    body_lines,
    good_ndjson_line,
    parse_ndjson_line,
)
from mailer.schemas.customers import CustomerIn, customer_fields
from mailer.store import customers as store
from mailer.store.tables import customers

# JSON text for each field, good and bad: what a client might send, and what trips up JSON parsers.
PHONES = [
    '"79001234567"',
    "79001234567",
    "79001234567.0",
    "7.9001234567e10",
    '"\\u00379001234567"',
    '"89001234567"',
    "89001234567",
    '"7900123456"',
    '"79001234567 "',
    '"\u0667\u0669\u0660\u0660\u0661\u0662\u0663\u0664\u0665\u0666\u0667"',
    "7" + "0" * 30,
    "-79001234567",
    "79001234567.5",
    "1e400",
    "NaN",
    "true",
    "null",
    "[]",
    "{}",
]
CODES = [None, '"900"', '"012"', '"90"', "null", "900", '"\uff19\uff10\uff10"']
TAGS = [
    None,
    "null",
    '"vip"',
    '"' + "x" * 64 + '"',
    '"' + "x" * 65 + '"',
    '"\\u0000"',
    '"\\ud800"',
    '"é \\"q\\""',
    "5",
]
ZONES = [None, '"UTC"', '"Europe/Moscow"', '"europe/moscow"', '"Mars/Base"', '""', "null", "0"]
EXTRA = [None, '"colour": "red"']


def _line(phone: str | None, code: str | None, tag: str | None, zone: str | None, extra: str | None) -> bytes:
    fields = [
        f'"{name}": {value}'
        for name, value in (("phone", phone), ("operator_code", code), ("tag", tag), ("timezone", zone))
        if value is not None
    ]
    if extra is not None:
        fields.append(extra)
    return ("{" + ", ".join(fields) + "}").encode()


def corpus() -> list[bytes]:
    lines = [
        _line(*combo)
        for combo in itertools.product([*PHONES, None], CODES, TAGS, ZONES, EXTRA)
        # Every phone with every other field would be 25,000 lines: pair the odd phones with the good rest.
        if combo[0] in PHONES[:3] or combo[1:] == (None, '"vip"', '"UTC"', None)
    ]
    return [
        *lines,
        b'{"phone": "79001234567", "phone": "1"}',
        b'{"phone": "1", "phone": "79001234567"}',
        b'\xef\xbb\xbf{"phone": "79001234567"}',
        b'{"phone": "79001234567"}\r',
        b'  {"phone": "79001234567"}  ',
        b'{"phone": "79001234567"} x',
        b'{"phone": "79001234567", "tag": "\xff"}',
        b'["79001234567"]',
        b'"79001234567"',
        b"",
        b"   ",
        b"{not json",
    ]


def full_path(raw: bytes, number: int) -> CustomerFields | str:
    """What the import's full path makes of a line: its fields, "blank", or "refused"."""
    try:
        text = _decode(raw, number)
        if not text.strip():
            return "blank"
        return parse_ndjson_line(text)
    except _LineError:
        return "refused"


@pytest.mark.parametrize("number", [1, 2])
def test_a_line_the_fast_path_takes_is_the_full_paths_result(number: int) -> None:
    taken = 0
    for raw in corpus():
        fields = good_ndjson_line(raw)
        if fields is not None:
            taken += 1
            assert full_path(raw, number) == fields, raw
    # Not vacuous: the good lines (the three good phone forms with the good rest, and more) take it.
    assert taken > 50


def test_every_good_line_takes_the_fast_path() -> None:
    """Anything the full path accepts on line 2 (no byte order mark to strip) is accepted fast, alike."""
    for raw in corpus():
        full = full_path(raw, 2)
        if isinstance(full, CustomerFields):
            assert good_ndjson_line(raw) == full, raw


def test_customer_fields_is_the_model_for_csv_records() -> None:
    """The CSV path validates a dict of strings; customer_fields answers as the model does, or None."""
    records: list[dict[str, object]] = [
        {"phone": "79001234567"},
        {"phone": "79001234567", "operator_code": "123", "tag": "a,b", "timezone": "Asia/Tokyo"},
        {"phone": "7900123456"},
        {"phone": "79001234567", "operator_code": "12"},
        {"phone": "79001234567", "timezone": "Mars/Base"},
        {"phone": "79001234567", "tag": "x" * 65},
        {"phone": "79001234567", "name": "x"},
        {"tag": "vip"},
        {},
    ]
    for record in records:
        try:
            expected: CustomerFields | None = CustomerIn.model_validate(record).to_fields()
        except ValueError:  # pydantic's ValidationError is one
            expected = None
        assert customer_fields(record) == expected, record


def _reference_lines(body: bytes) -> list[tuple[int, bytes | None]]:
    pieces = body.split(b"\n")
    if pieces[-1] == b"":
        pieces.pop()
    return [(n, None if len(p) > MAX_LINE_BYTES else p) for n, p in enumerate(pieces, 1)]


async def _numbered(body: bytes, size: int) -> list[tuple[int, bytes | None]]:
    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(body), size):
            yield body[start : start + size]
            yield b""  # an empty read ends no line

    out: list[tuple[int, bytes | None]] = []
    async for first, run in body_lines(chunks(), max_bytes=len(body)):
        assert run, "a run has at least one line"
        assert first == len(out) + 1, "runs follow each other without a gap"
        out.extend(enumerate(run, first))
    return out


@pytest.mark.parametrize("size", [1, 7, 1024, MAX_LINE_BYTES, MAX_LINE_BYTES + 3, 10**7])
@pytest.mark.parametrize("ending", [b"", b"\n"])
async def test_runs_of_lines_are_the_lines_of_the_body(size: int, ending: bytes) -> None:
    long = b"y" * MAX_LINE_BYTES
    body = (
        b"a\n\nbb\r\n"
        + long  # exactly the limit: kept
        + b"\n"
        + long
        + b"z\n"  # one byte over: refused, however the chunks cut it
        + b"x" * (3 * MAX_LINE_BYTES)
        + b"\nc\n"
        + long
        + b"\nlast"
        + ending
    )
    assert await _numbered(body, size) == _reference_lines(body)


async def test_a_body_that_ends_inside_an_overlong_line_ends_with_it() -> None:
    body = b"a\n" + b"x" * (MAX_LINE_BYTES + 1)
    assert await _numbered(body, 1000) == [(1, b"a"), (2, None)]


# Text that the JSON rows of a batch must carry unchanged to either database.
AWKWARD_TAGS = [
    None,
    "",
    'say "hi"',
    "back\\slash \\u0041",
    "tab\tnew\nline\x01\x1f\x7f",
    "é ё 中 😀",
    '{"not": "a row"}',
    "[1, 2]",
    "null",
    "x" * 64,
]


async def test_upsert_batch_carries_text_exactly_and_tells_created_from_updated(db: AsyncEngine) -> None:
    first = [
        CustomerFields(f"7900000000{i}", "900", tag, "Europe/Moscow") for i, tag in enumerate(AWKWARD_TAGS)
    ]
    outcome = await store.upsert_batch(db, first)
    assert (outcome.created, outcome.updated, outcome.updated_ids) == (len(first), 0, [])
    assert len(set(outcome.created_ids)) == len(first)

    # Known and new phones in one batch, one phone twice (the last wins, the first counts as an update).
    second = [
        CustomerFields("79000000001", "123", "changed", "UTC"),
        CustomerFields("79000000011", "901", None, "UTC"),
        CustomerFields("79000000001", "124", "twice", "Asia/Tokyo"),
    ]
    again = await store.upsert_batch(db, second)
    assert (again.created, again.updated) == (1, 2)
    assert len(again.created_ids) == 1
    assert len(again.updated_ids) == 1

    async with db.connect() as conn:
        rows = {r.phone: r for r in (await conn.execute(select(customers))).all()}
    assert again.created_ids == [rows["79000000011"].id]
    assert again.updated_ids == [rows["79000000001"].id]
    assert sorted(outcome.created_ids) == sorted(rows[f.phone].id for f in first)
    for fields in first[2:]:
        row = rows[fields.phone]
        assert (row.operator_code, row.tag, row.timezone) == ("900", fields.tag, "Europe/Moscow")
    changed = rows["79000000001"]
    assert (changed.operator_code, changed.tag, changed.timezone) == ("124", "twice", "Asia/Tokyo")
    assert rows["79000000000"].tag is None
    assert rows["79000000011"].tag is None


async def test_upsert_batch_of_nothing_writes_nothing(db: AsyncEngine) -> None:
    assert await store.upsert_batch(db, []) == store.UpsertOutcome(0, 0, [], [])
